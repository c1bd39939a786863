"""The lab's record of what it made (scripts/lab-state) and playbooks/lab/down.yml, which removes exactly that.

The lab's own names are fixed (nclab-*) and shared with whoever runs the lab, so these tests never run
the lab: they claim and create objects of their own the way up.yml and services.yml do, with the record
in a temporary file ($NCLAB_STATE), then run the real down.yml against it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import yaml

import nchelpers

LAB_STATE = nchelpers.ROOT / "scripts" / "lab-state"
DOWN = nchelpers.ROOT / "playbooks" / "lab" / "down.yml"
SELINUX_GUESTS = nchelpers.ROOT / "playbooks" / "lab" / "selinux_guests.yml"
SELINUX_GUEST = nchelpers.ROOT / "scripts" / "selinux-guest"
INVENTORY = nchelpers.ROOT / "playbooks" / "lab" / "inventory.yml"


def lab_state(state, *args, ns=None):
    env = dict(os.environ, NCLAB_STATE=str(state))
    argv = ["bash", str(LAB_STATE), *args]
    if ns:
        argv = ["ip", "netns", "exec", ns, *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def play(state, playbook=DOWN, inventory=INVENTORY):
    env = dict(os.environ, NCLAB_STATE=str(state), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(nchelpers.ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook)],
                          capture_output=True, text=True, env=env, timeout=900, check=False, cwd=nchelpers.ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def down(state):
    return play(state)


def group_exists(name):
    return nchelpers.run("getent", "group", name, check=False).returncode == 0


def user_exists(name):
    return nchelpers.run("getent", "passwd", name, check=False).returncode == 0


def alive(proc):
    return proc.poll() is None


def group_alive(pgid):
    """Does any process of group ``pgid`` still run (zombies waiting for their reaper do not count)?"""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def test_down_removes_exactly_what_was_claimed(tmp_path, cleanup, make_netns):
    run_dir = tmp_path / "run"                       # stands for /run/nclab: made by the first claim
    state = run_dir / "made"
    sid = nchelpers.session_id()
    # someone else's group, named like the lab's: it existed before, so claiming it records nothing
    foreign = make_group_named(cleanup, f"nclab_foo{sid}")
    made_group = f"nclab_g{sid}"
    made_user = f"nclab_u{sid}"
    made_ns = f"nclab-t{sid}"
    cleanup.callback(nchelpers.account, "groupdel", made_group, check=False)
    cleanup.callback(nchelpers.account, "userdel", made_user, check=False)
    cleanup.callback(nchelpers._delete_netns, made_ns)
    other_ns = make_netns()                          # a namespace of the test's own: its sysctl is restored

    assert lab_state(state, "claim", "group", foreign) == ""
    assert lab_state(state, "claim", "group", made_group) == f"claimed group {made_group}\n"
    nchelpers.account("groupadd", made_group)
    assert lab_state(state, "claim", "group", made_group) == ""  # once
    assert lab_state(state, "claim", "user", made_user) == f"claimed user {made_user}\n"
    nchelpers.account("useradd", "--no-create-home", "--groups", f"{made_group},{foreign}", made_user)
    assert lab_state(state, "claim", "netns", made_ns) == f"claimed netns {made_ns}\n"
    nchelpers.run("ip", "netns", "add", made_ns)
    in_ns = subprocess.Popen(["ip", "netns", "exec", made_ns, "sleep", "300"])  # noqa: S603
    lab_file = tmp_path / "lab-file"
    assert lab_state(state, "claim", "path", str(lab_file)) == f"claimed path {lab_file}\n"
    lab_file.write_text("made by the lab\n")
    shared_dir = tmp_path / "shared"                 # claimed as dir: removed only when empty
    lab_state(state, "claim", "dir", str(shared_dir))
    shared_dir.mkdir()
    (shared_dir / "someone-elses").write_text("x\n")
    daemon = subprocess.Popen(["sleep", "300"])  # noqa: S603
    cleanup.callback(daemon.kill)
    assert lab_state(state, "claim", "process", str(daemon.pid)) == f"claimed process {daemon.pid}\n"
    # a process group (a UML guest: linux.uml and its helpers): down kills every member, not only the leader
    group = subprocess.Popen(["setsid", "sh", "-c", "sleep 300 & exec sleep 300"])  # noqa: S603, S607
    cleanup.callback(lambda: os.killpg(group.pid, signal.SIGKILL) if group_alive(group.pid) else None)
    time.sleep(0.2)
    assert lab_state(state, "claim", "pgroup", str(group.pid)) == f"claimed pgroup {group.pid}\n"
    bystander = subprocess.Popen(["sleep", "300"])  # noqa: S603 - recorded, then its PID "reused": survives
    cleanup.callback(bystander.kill)
    lab_state(state, "claim", "process", str(bystander.pid))
    record = state.read_text()
    state.write_text(record.replace(f"process\t{bystander.pid}\t", f"process\t{bystander.pid}\t1"))
    old = nchelpers.run("sysctl", "-n", "net.ipv4.ip_forward", ns=other_ns).stdout.strip()
    lab_state(state, "claim", "sysctl", "net.ipv4.ip_forward", other_ns)
    lab_state(state, "claim", "sysctl", "net.ipv4.ip_forward", other_ns)  # the second claim keeps the first value
    nchelpers.run("sysctl", "-w", f"net.ipv4.ip_forward={1 - int(old)}", ns=other_ns)
    assert len(state.read_text().splitlines()) == 10, state.read_text()

    out = down(state)

    assert not group_exists(made_group) and not user_exists(made_user), out
    assert group_exists(foreign), f"{foreign} existed before the lab claimed it: down.yml removed it\n{out}"
    assert not (nchelpers.NETNS_DIR / made_ns).exists()
    in_ns.wait(timeout=10)
    daemon.wait(timeout=10)
    group.wait(timeout=10)
    deadline = time.monotonic() + 5              # the group's last member may take a moment to go
    while group_alive(group.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(group.pid), "a member of a recorded process group survived down"
    time.sleep(0.2)
    assert alive(bystander), "a process whose start time differs from the record was killed"
    assert not lab_file.exists()
    assert (shared_dir / "someone-elses").exists()
    assert nchelpers.run("sysctl", "-n", "net.ipv4.ip_forward", ns=other_ns).stdout.strip() == old
    assert not run_dir.exists(), "the run directory the first claim made (and the record in it) is left"
    # idempotent: a second down finds no record and changes nothing
    assert "changed=0" in down(state)
    bystander.send_signal(signal.SIGKILL)


def make_group_named(cleanup, name):
    nchelpers.account("groupadd", name)
    cleanup.callback(nchelpers.account, "groupdel", name, check=False)
    return name


def test_the_lab_boots_its_selinux_guest_once_with_the_proxy_and_down_removes_them(tmp_path, make_netns):
    """playbooks/lab/selinux_guests.yml (selinuxhost) for a guest of the test's own: booted enforcing, the proxy
    answering on 192.0.2.80:80 in its namespace, a second run changes nothing, down stops both, removes its files."""
    ns = make_netns()
    guest_dir = tmp_path / "guest"
    state = tmp_path / "run" / "made"
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"vars": {"lab_state": str(LAB_STATE)}, "children": {
        "lab_selinux_guests": {"hosts": {"guest": {"ansible_netns": ns, "lab_guest_dir": str(guest_dir)}}}}}}))

    first = play(state, SELINUX_GUESTS, inventory)
    assert re.search(r"localhost\s+: ok=3\s+changed=3 ", first), first
    pid = int((guest_dir / "pid").read_text())
    proxy = int((guest_dir / "proxy.pid").read_text())
    assert group_alive(pid) and nchelpers.run("ip", "netns", "identify", str(proxy)).stdout.strip() == ns
    getenforce = subprocess.run(["bash", str(SELINUX_GUEST), "ssh", str(guest_dir), "getenforce"],
                                capture_output=True, text=True, timeout=120, check=False)
    assert getenforce.stdout.strip() == "Enforcing", getenforce.stdout + getenforce.stderr
    greeting = nchelpers.run("socat", "-T3", "-", "TCP:192.0.2.80:80", ns=ns)
    assert greeting.stdout == "proxy-hello\n", greeting

    assert re.search(r"localhost\s+: ok=3\s+changed=0 ", play(state, SELINUX_GUESTS, inventory))
    assert int((guest_dir / "pid").read_text()) == pid

    out = down(state)
    deadline = time.monotonic() + 10
    while (group_alive(pid) or Path(f"/proc/{proxy}").exists()) and time.monotonic() < deadline:
        time.sleep(0.1)     # killed by down; its /proc entry goes when it is reaped
    assert not group_alive(pid), "the guest's process group survived down\n" + out
    assert not Path(f"/proc/{proxy}").exists() and not guest_dir.exists(), out


def test_the_selinux_guest_says_why_it_cannot_run_on_a_machine_without_its_tools(tmp_path):
    """scripts/selinux-guest image: exit 3 and the missing tools (what scripts/lab puts in its report)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "find", "sort", "tail", "cut", "sha256sum", "cat", "mkdir", "dirname"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    proc = subprocess.run(["bash", str(SELINUX_GUEST), "image"], env=dict(os.environ, PATH=str(bin_dir)),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 3 and proc.stdout == "", proc.stdout + proc.stderr
    assert "missing: debootstrap mkfs.ext4 ssh nc" in proc.stderr, proc.stderr
