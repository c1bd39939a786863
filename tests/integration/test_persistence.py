"""persist: true, for real, on both backends: what a task applied comes back after its namespace is
recreated empty (the way a reboot loses it) and ``netconfine-restore NAME`` runs, and nothing else.

A "reboot" here: the host namespace is deleted and created again under the same name (every rule,
chain and table gone, counters reset), a foreign rule is put in as another tool's boot would, then
the restore script the module wrote is run. Then: the policy behaves as before (a non-root
connection to the guarded port is refused, root's is accepted), the foreign rule is intact, and a
second converge reports ``changed=false``. Check mode writes nothing; ``state: absent`` removes the
task's files and leaves another task's; ``persist: false`` writes none.

The restore unit's ordering at a real boot under systemd is proven in the systemd tier.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

import nchelpers
from nchelpers import SYSTEM_PYTHON, ansible_playbook, boot_restore, connect_as, reboot, iptables_save, run
from test_netns_service import PORT as SERVICE_PORT, TMP_DAEMON, UPLINK, ask, host_rules, links_of, seed_args, service
# the site fixture, used by name
from test_netns_service import site  # noqa: F401 pylint: disable=unused-import

OWNER_RULE = "paranoid.netconfine.owner_rule"
PORT = 992
GUARD = {"protocol": "tcp", "destination": "localhost", "destination_port": str(PORT), "uid_owner": "!root",
         "jump": "REJECT"}


def converge(ns, persist_dir, backend, *, name="guard", state="present", check=False, diff=False, persist=True,
             **options):
    task = dict({"name": name, "backend": backend, "state": state, "persist": persist, "persist_dir": str(persist_dir),
                 "rules": [GUARD] if state == "present" else []}, **options)
    play = yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": [{OWNER_RULE: task}]}])
    result = ansible_playbook(play, [ns], check=check, diff=diff)
    (res,) = [r for r in result.results[ns] if r.action == OWNER_RULE]
    assert not res.failed, result.output
    return res


def foreign_rule(ns):
    run("iptables", "-A", "OUTPUT", "-p", "udp", "--dport", "5353", "-j", "DROP", ns=ns)


def kernel_text(ns, backend):
    if backend == "iptables":
        return iptables_save(ns, 4) + iptables_save(ns, 6)
    return run("nft", "list", "table", "inet", "netconfine", ns=ns, check=False).stdout


@pytest.fixture
def persist_dir(tmp_path):
    return tmp_path / "netconfine"


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_policy_comes_back_after_reboot(netns_host, listener, make_user, persist_dir, backend):
    ns = netns_host
    user = make_user()
    task_dir = persist_dir / "netns" / ns

    checked = converge(ns, persist_dir, backend, check=True)
    assert checked.changed and not persist_dir.exists()          # check mode writes nothing

    first = converge(ns, persist_dir, backend)
    assert first.changed and first.result["persisted"]["dir"] == str(task_dir)
    files = sorted(p.name for p in task_dir.iterdir())
    assert files == (["guard.iptables-4", "guard.iptables-6"] if backend == "iptables"
                     else ["guard.nftables-ruleset"])
    applied = kernel_text(ns, backend)
    assert not converge(ns, persist_dir, backend).changed

    reboot(ns)
    assert "netconfine" not in kernel_text(ns, backend)
    foreign_rule(ns)
    boot_restore(persist_dir, ns)

    assert "-A OUTPUT -p udp -m udp --dport 5353 -j DROP" in iptables_save(ns, 4)   # foreign rule intact
    listener(ns, PORT)
    for host in ("127.0.0.1", "::1"):
        assert not connect_as(ns, user, host, PORT), host
        assert connect_as(ns, "root", host, PORT), host
    again = converge(ns, persist_dir, backend)
    assert not again.changed, again.result.get("diff")
    assert _counters_zero(kernel_text(ns, backend)) == _counters_zero(applied)


def _counters_zero(text):
    """Our policy's lines (chains, jumps, table) with counters zeroed: a reboot resets counters.

    The record of a table our restore created (NC-made-this-table) is not policy: a table made by
    the boot restore carries none (docs/backends.md)."""
    return [re.sub(r"\[\d+:\d+\]", "[0:0]", line) for line in text.splitlines()
            if ("NC-" in line or "netconfine" in line) and "NC-made-this-table" not in line]


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_absent_removes_only_its_own_files(netns_host, persist_dir, backend):
    ns = netns_host
    converge(ns, persist_dir, backend, name="keep")
    converge(ns, persist_dir, backend, name="keep.more")
    task_dir = persist_dir / "netns" / ns
    before = dict((p.name, p.read_text()) for p in task_dir.iterdir())
    gone = converge(ns, persist_dir, backend, name="keep", state="absent")
    assert gone.changed
    after = dict((p.name, p.read_text()) for p in task_dir.iterdir())
    assert after == dict((k, v) for k, v in before.items() if k.startswith("keep.more."))
    assert after
    assert (persist_dir / "netconfine-restore").exists()          # serves the other task
    assert not converge(ns, persist_dir, backend, name="keep", state="absent").changed


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_the_diff_shows_the_files_that_change_and_no_other(netns_host, persist_dir, backend):
    """A second task's diff holds its own new file, not the shared restore script (unchanged) nor the first
    task's file as context; a hand-edited file shows as itself."""
    ns = netns_host
    converge(ns, persist_dir, backend, name="first")
    task_dir = persist_dir / "netns" / ns
    planned = converge(ns, persist_dir, backend, name="second", check=True, diff=True)
    before, after = planned.result["diff"]["before"], planned.result["diff"]["after"]
    assert [p for p in after.splitlines() if p.startswith("# %s/second." % task_dir)], after
    for text in (before, after):
        assert "netconfine-restore" not in text and "# %s/first." % task_dir not in text, text
    assert "# %s/second." % task_dir not in before
    assert not list(task_dir.glob("second.*"))                   # check mode wrote nothing
    edited = next(task_dir.glob("first.*"))
    edited.write_text(edited.read_text() + "# edited\n")
    repaired = converge(ns, persist_dir, backend, name="first", diff=True)
    assert "# edited" in repaired.result["diff"]["before"] and "# edited" not in repaired.result["diff"]["after"]
    assert "netconfine-restore" not in repaired.result["diff"]["before"], repaired.result["diff"]


def test_persist_false_writes_nothing(netns_host, persist_dir):
    converge(netns_host, persist_dir, "iptables", persist=False)
    assert not persist_dir.exists()


def test_a_persisted_file_edited_by_hand_is_drift(netns_host, persist_dir):
    ns = netns_host
    converge(ns, persist_dir, "iptables")
    path = Path(persist_dir / "netns" / ns / "guard.iptables-4")
    path.write_text("*filter\nCOMMIT\n")
    repaired = converge(ns, persist_dir, "iptables")
    assert repaired.changed and "--uid-owner 0" in path.read_text()


def _output_jumps(ns):
    return [line for line in iptables_save(ns, 4).splitlines() if line.startswith("-A OUTPUT ")]


@pytest.mark.parametrize("other", ["inserts", "appends"])
def test_a_tool_starting_after_the_boot_restore(netns_host, persist_dir, other):
    """Issue 21's ordering hazard: netconfine-restore puts our jump (position: first) back before Docker
    and the like start; such a tool then adds its own jump to the same built-in chain. One that inserts
    it first (as dockerd does with ``-I FORWARD -j DOCKER-USER``; owner_rule lives in OUTPUT, so the
    test's tool uses OUTPUT) puts it above ours: the next converge reports that as drift (ours really
    moved) and puts ours first again, the other jump kept. One that appends leaves ours first: the next
    converge changes nothing."""
    ns = netns_host

    def converge_first():
        return converge(ns, persist_dir, "iptables", name="first", position="first", ip_version="ipv4")

    assert converge_first().changed
    ours = _output_jumps(ns)
    assert len(ours) == 1 and "NC-" in ours[0], ours

    reboot(ns)
    boot_restore(persist_dir, ns)
    assert _output_jumps(ns) == ours
    run("iptables", "-N", "TOOL-USER", ns=ns)                     # the other tool starts after the restore
    run("iptables", "-I" if other == "inserts" else "-A", "OUTPUT", "-j", "TOOL-USER", ns=ns)
    tool = "-A OUTPUT -j TOOL-USER"
    assert _output_jumps(ns) == ([tool] + ours if other == "inserts" else ours + [tool])

    again = converge_first()
    assert again.changed is (other == "inserts"), again.result.get("diff")
    assert _output_jumps(ns) == ours + [tool]                     # ours first, the other tool's kept
    assert not converge_first().changed


# --------------------------------------------------------------------------- a host without systemd: the boot hook

BOOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _lose_everything(machine, name):
    """What a reboot of the machine loses: the daemon, the namespace and its veth, our rules, forwarding."""
    for pid in run("ip", "netns", "pids", name).stdout.split():
        os.kill(int(pid), signal.SIGKILL)
    run("ip", "-n", machine, "link", "delete", "vh-" + name)
    run("ip", "netns", "delete", name)
    for cmd in ("iptables", "ip6tables"):
        for table in ("filter", "nat"):
            run(cmd, "-t", table, "-F", ns=machine)
            run(cmd, "-t", table, "-X", ns=machine)
    run("sysctl", "-qw", "net.ipv4.ip_forward=0", ns=machine)


def _boot(machine, hook, hook_path):
    """Run the hook in the machine's network namespace as boot runs it: ifupdown's run-parts of if-pre-up.d for
    each interface it brings up (the loopback first), or rc.local as the rc.local service starts it."""
    enter = ["nsenter", "--net=/run/netns/" + machine, "env", "-i", "PATH=" + BOOT_PATH]
    if hook == "if-pre-up":
        for iface in ("lo", "m0"):
            subprocess.run(enter + ["IFACE=%s" % iface, "LOGICAL=%s" % iface, "ADDRFAM=inet", "MODE=start",
                                    "PHASE=pre-up", "run-parts", "--exit-on-error", str(hook_path.parent)],
                           check=True)
    else:
        subprocess.run(enter + [str(hook_path), "start"], check=True)


@pytest.mark.parametrize("hook", ["if-pre-up", "rc.local"])
def test_a_namespace_and_its_daemon_come_back_at_boot_without_systemd(site, make_user, tmp_path, hook):
    """Issue 21 for hosts without systemd: boot_hook installs what runs netconfine-boot at boot, which rebuilds
    netns_service's namespace (links, addresses, routes), the host-side rules and forwarding, and starts the
    launcher; a second converge is changed=false; absent of the last task removes the hook."""
    machine, client, name = site
    user = make_user()
    entry, script = nchelpers.user_file(user, TMP_DAEMON)
    persist_dir = tmp_path / "netconfine"
    hook_path = tmp_path / ("if-pre-up.d/netconfine" if hook == "if-pre-up" else "rc.local")
    if hook == "rc.local":       # an admin's rc.local: our line goes before its exit 0, and only ours goes again
        hook_path.write_text("#!/bin/sh -e\necho admin\nexit 0\n")
        hook_path.chmod(0o755)
    args = seed_args(name, "iptables", persist_dir=str(persist_dir), boot_hook=hook, boot_hook_path=str(hook_path),
                     service={"exec": SYSTEM_PYTHON, "args": [str(script), str(SERVICE_PORT), name], "user": user,
                              "working_directory": entry.pw_dir, "start": True})

    checked = service(machine, args, check=True, diff=True)
    assert checked.changed and str(hook_path) in checked.result["diff"]["after"]
    assert not persist_dir.exists() and (hook == "rc.local" or not hook_path.exists())
    first = service(machine, args)
    assert first.changed and first.result["persisted"]["boot"] == "%s hook %s" % (hook, hook_path)
    assert not service(machine, args).changed
    task_dir = persist_dir / "netns" / machine
    assert sorted(p.name for p in task_dir.iterdir()) == sorted(
        "netns-%s.%s" % (name, unit) for unit in ("iptables-4", "sysctl-kernel", "netns-" + name,
                                                  "launcher-" + name))
    if hook == "rc.local":
        lines = hook_path.read_text().splitlines()
        assert lines[:2] == ["#!/bin/sh -e", "echo admin"] and lines[-1] == "exit 0" and "netconfine-boot" in lines[2]
    applied = _counters_zero(host_rules(machine, "iptables"))
    assert ask(client, UPLINK, SERVICE_PORT) == "uid=%d tmp=True" % entry.pw_uid
    old = run("ip", "netns", "pids", name).stdout.split()

    _lose_everything(machine, name)
    assert ask(client, UPLINK, SERVICE_PORT).startswith("error")
    assert links_of(machine, name) == {"netns": False, "vh": False, "resolv": True}
    _boot(machine, hook, hook_path)

    assert links_of(machine, name) == {"netns": True, "vh": True, "resolv": True}
    assert _counters_zero(host_rules(machine, "iptables")) == applied
    assert run("sysctl", "-n", "net.ipv4.ip_forward", ns=machine).stdout.strip() == "1"
    deadline = time.monotonic() + 10
    while ask(client, UPLINK, SERVICE_PORT) != "uid=%d tmp=True" % entry.pw_uid and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ask(client, UPLINK, SERVICE_PORT) == "uid=%d tmp=True" % entry.pw_uid
    new = run("ip", "netns", "pids", name).stdout.split()
    assert len(new) == 1 and new != old
    again = service(machine, args, diff=True)
    assert not again.changed, again.result.get("diff")

    assert service(machine, dict(args, state="absent")).changed
    assert list(task_dir.iterdir()) == []
    if hook == "rc.local":
        assert hook_path.read_text() == "#!/bin/sh -e\necho admin\nexit 0\n"
    else:
        assert not hook_path.exists()
    assert not service(machine, dict(args, state="absent")).changed
