"""An enforcing-SELinux Debian guest under User-Mode-Linux, reachable over SSH, for the secmark tier.

    with selinux_guest() as guest:          # build (cached) + boot; everything removed on exit
        guest.ssh("getenforce")
        guest.hosts                         # inventory host vars for nchelpers.ansible_playbook

Building and booting are scripts/selinux-guest's (the lab's selinuxhost is the same guest): the image
(selinux_guest/build.sh: debootstrap with selinux-policy-default, sshd, legacy iptables, files labelled,
the test domains of selinux_guest/nctest.cil) is cached under .build/selinux-guest/<hash of its inputs>/.
Each boot uses its own copy-on-write file, so the image never changes. The guest lives in a network
namespace of ours on a tap: 192.0.2.2 is the guest, 192.0.2.1 and 192.0.2.80 are the host side. Ansible reaches it with ssh through
``ip netns exec NS nc`` (ProxyCommand), so nothing of the host's own network changes.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import nchelpers

ROOT = Path(__file__).resolve().parents[2]
SELINUX_GUEST = ROOT / "scripts" / "selinux-guest"   # the builder and booter, shared with the lab's selinuxhost
GUEST = "192.0.2.2"
HOST_SIDE = ("192.0.2.1", "192.0.2.80")
BOOT_TIMEOUT = 300


def image() -> Path:
    """root.img and id_ed25519 of the guest, built by selinux_guest/build.sh on first use (scripts/selinux-guest)."""
    proc = subprocess.run(["bash", str(SELINUX_GUEST), "image"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip() or "scripts/selinux-guest image: rc %d" % proc.returncode)
    return Path(proc.stdout.strip())


class Guest:
    def __init__(self, ns: str, directory: Path):
        self.ns, self.dir = ns, directory
        self.key, self.log = directory / "id_ed25519", directory / "console.log"
        key = self.key       # written by scripts/selinux-guest start
        proxy = "ip netns exec %s nc %%h %%p" % ns
        self.ssh_options = ["-o", "ProxyCommand=%s" % proxy, "-o", "StrictHostKeyChecking=no",
                            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
                            "-o", "ConnectTimeout=20", "-i", str(key)]
        self.hosts = {"selinuxhost": {
            "ansible_connection": "ssh", "ansible_host": GUEST, "ansible_user": "root",
            "ansible_python_interpreter": "/usr/bin/python3", "ansible_pipelining": True,
            "ansible_ssh_private_key_file": str(key),
            "ansible_ssh_common_args": " ".join(
                ["-o 'ProxyCommand=%s'" % proxy, "-o StrictHostKeyChecking=no", "-o UserKnownHostsFile=/dev/null",
                 "-o LogLevel=ERROR", "-o ConnectTimeout=20"]),
        }}

    def ssh(self, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run(["ssh", *self.ssh_options, "root@%s" % GUEST, command], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        if check and proc.returncode != 0:
            raise AssertionError("guest: %s -> rc %d\n%s%s" % (command, proc.returncode, proc.stdout, proc.stderr))
        return proc

    def reboot(self) -> None:
        """Power the guest off and boot it again from the same disk (scripts/selinux-guest reboot); enforcing again."""
        boot = subprocess.run(["bash", str(SELINUX_GUEST), "reboot", str(self.dir), "--timeout", str(BOOT_TIMEOUT)],
                              capture_output=True, text=True, check=False)
        if boot.returncode != 0:
            raise AssertionError("the guest did not come back after a reboot: %s%s" % (boot.stdout, boot.stderr))

    def console(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@contextlib.contextmanager
def selinux_guest() -> Iterator[Guest]:
    image()     # built (or found) before the clock of the boot starts
    with nchelpers.netns() as ns, tempfile.TemporaryDirectory(prefix="nct-uml-") as tmp:
        started = time.monotonic()
        guest = Guest(ns, Path(tmp))
        try:
            boot = subprocess.run(["bash", str(SELINUX_GUEST), "start", ns, tmp, "--timeout", str(BOOT_TIMEOUT)],
                                  capture_output=True, text=True, check=False)
            if boot.returncode != 0:
                raise RuntimeError("the UML guest did not boot: %s%s" % (boot.stdout, boot.stderr))
            guest.booted_after = time.monotonic() - started
            yield guest
        finally:
            subprocess.run(["bash", str(SELINUX_GUEST), "stop", tmp], check=False)
