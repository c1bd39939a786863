"""A Debian 12 root booted with systemd as PID 1, for the real-systemd tier (units, PrivateTmp,
NetworkNamespacePath, IPAddressDeny, reboot persistence).

    with systemd_container() as ctr:        # build (cached) + boot; everything removed on exit
        ctr.sh("systemctl is-system-running")
        ansible_playbook(PLAY, {"ctr": ctr.hostvars})
        ctr.reboot()                         # poweroff, boot again from the same root

Build: systemd_container/build.sh (debootstrap minbase + systemd, systemd-sysv, dbus, iproute2,
iptables, nftables, python3, ...), cached under .build/systemd-container/<hash of build.sh>/root.
Boot (test-hosts.md, "A real systemd"): boot.sh puts itself in a cgroup of ours in the unified
hierarchy, then ``unshare --pid --fork --mount --uts --ipc --net --cgroup`` runs inside.sh, which
mounts an overlay (the cached root below, this container's own upper directory above: the cache never
changes, and the container's /etc survives its reboots), proc, sysfs, cgroup2, tmpfs /run, /tmp and
/dev, binds the checkout read-only on /checkout and execs /lib/systemd/systemd in a chroot.
Its network namespace is its own (only lo at first): a reboot (``systemctl poweroff``, then boot
again) really starts from an empty network state, like a host's reboot.

How Ansible reaches it: the controller is this checkout's ansible-playbook on the host, with the
``local`` connection and pipelining, and ``ansible_python_interpreter`` a wrapper that runs the
container's own /usr/bin/python3 through ``nsenter -t PID -a -r -w`` (all of systemd's namespaces,
its root and cwd). With pipelining the module arrives on stdin, so nothing is copied into the
container, and the module sees exactly what a process of that host sees (its systemd, its
/run/systemd/system, its kernel state). No sshd, no keys, no address plan needed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import nchelpers

HERE = Path(__file__).resolve().parent / "systemd_container"
ROOT = Path(__file__).resolve().parents[2]
CGROUP2 = Path("/sys/fs/cgroup/unified") if Path("/sys/fs/cgroup/unified/cgroup.procs").exists() \
    else Path("/sys/fs/cgroup")
BOOT_TIMEOUT = 60


def image() -> Path:
    """The cached root, built by systemd_container/build.sh on first use (~80 s)."""
    missing = [t for t in ("debootstrap", "unshare", "nsenter", "chroot") if not shutil.which(t)]
    if missing:
        raise RuntimeError("the real-systemd tier needs debootstrap and util-linux; missing: %s" % ", ".join(missing))
    if not (CGROUP2 / "cgroup.procs").exists():
        raise RuntimeError("the real-systemd tier needs a cgroup2 hierarchy (%s)" % CGROUP2)
    digest = hashlib.sha256((HERE / "build.sh").read_bytes()).hexdigest()[:16]
    out = ROOT / ".build" / "systemd-container" / digest
    if not (out / "etc" / "hostname").exists():
        proc = subprocess.run(["bash", str(HERE / "build.sh"), str(out)], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError("building the systemd root failed:\n%s%s" % (proc.stdout, proc.stderr))
    return out


class Container:
    def __init__(self, root: Path, state: Path, cgroup: Path):
        self.root, self.state, self.cgroup = root, state, cgroup
        self.proc: subprocess.Popen | None = None
        self.pid = 0
        self.python = state / "python3"
        self.boots = 0

    @property
    def hostvars(self) -> dict:
        return {"ansible_connection": "local", "ansible_python_interpreter": str(self.python),
                "ansible_pipelining": True}

    def sh(self, command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(["nsenter", "-t", str(self.pid), "-a", "-r", "-w", "/bin/sh", "-c", command],
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError("in the container: %s -> rc %d\n%s%s" % (command, proc.returncode, proc.stdout,
                                                                          proc.stderr))
        return proc

    def boot(self) -> None:
        self.cgroup.mkdir(exist_ok=True)
        log = open(self.state / ("console-%d.log" % self.boots), "w")  # noqa: SIM115 - closed by the child's exit
        self.boots += 1
        self.proc = subprocess.Popen(["bash", str(HERE / "boot.sh"), str(self.cgroup), str(self.root),
                                      str(self.state), str(ROOT)], stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + BOOT_TIMEOUT
        status = ""
        while time.monotonic() < deadline:
            self.pid = self._systemd_pid()
            if self.pid:
                self.python.write_text("#!/bin/sh\nexec nsenter -t %d -a -r -w /usr/bin/python3 \"$@\"\n" % self.pid)
                self.python.chmod(0o755)
                status = self.sh("systemctl is-system-running", check=False).stdout.strip()
                if status in ("running", "degraded"):
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.3)
        raise AssertionError("the systemd container did not boot within %ds (status %r):\n%s" % (
            BOOT_TIMEOUT, status, self.failed_units()))

    def failed_units(self) -> str:
        if not self.pid:
            return "(no systemd process)"
        return self.sh("systemctl --failed --no-legend; journalctl -b --no-pager | tail -40", check=False).stdout

    def _systemd_pid(self) -> int:
        """systemd is the child of unshare (the child of boot.sh, which exec'd unshare)."""
        try:
            children = Path("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)).read_text().split()
        except OSError:
            return 0
        for child in children:
            try:
                if Path("/proc/%s/comm" % child).read_text().strip() == "systemd":
                    return int(child)
            except OSError:
                continue
        return 0

    def poweroff(self, timeout: float = 30) -> None:
        """``systemctl poweroff`` (systemd in a container exits); SIGKILL of its PID 1 if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.sh("systemctl --no-block poweroff", check=False)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self.pid = 0

    def kill(self) -> None:
        if self.pid:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)       # PID 1 of the pid namespace: every process goes
        if self.proc is not None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self.pid = 0

    def reboot(self) -> None:
        self.poweroff()
        self.boot()


def _remove_cgroup(cgroup: Path) -> None:
    """Kill what is left in ``cgroup`` and remove it, deepest first."""
    if not cgroup.exists():
        return
    for _attempt in range(50):
        procs = [p for f in cgroup.rglob("cgroup.procs") for p in f.read_text().split()]
        if not procs:
            break
        for pid in procs:
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.1)
    for directory in sorted((d for d in cgroup.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)) + [cgroup]:
        with contextlib.suppress(OSError):
            directory.rmdir()


@contextlib.contextmanager
def systemd_container() -> Iterator[Container]:
    root = image()
    name = nchelpers.new_name() + "-sysd"           # nct-<session>-<hex>: swept with dead sessions
    state = ROOT / ".build" / "systemd-container" / "run" / name
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    ctr = Container(root, state, CGROUP2 / name)
    try:
        ctr.boot()
        yield ctr
    finally:
        ctr.poweroff(timeout=15)
        ctr.kill()
        _remove_cgroup(ctr.cgroup)
        # the overlay and every other mount lived in the container's mount namespace: gone with it
        subprocess.run(["rm", "-rf", "--one-file-system", str(state)], check=False)
