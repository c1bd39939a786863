"""An enforcing-SELinux Debian guest under User-Mode-Linux, reachable over SSH, for the secmark tier.

    with selinux_guest() as guest:          # build (cached) + boot; everything removed on exit
        guest.ssh("getenforce")
        guest.hosts                         # inventory host vars for nchelpers.ansible_playbook

The image (selinux_guest/build.sh: debootstrap with selinux-policy-default, sshd, legacy iptables,
files labelled, the test domains of selinux_guest/nctest.cil) is cached under
.build/selinux-guest/<hash of its inputs>/. Each boot uses its own copy-on-write file, so the image
never changes. The guest lives in a network namespace of ours on a tap: 192.0.2.2 is the guest,
192.0.2.1 and 192.0.2.80 are the host side. Ansible reaches it with ssh through
``ip netns exec NS nc`` (ProxyCommand), so nothing of the host's own network changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import nchelpers

HERE = Path(__file__).resolve().parent / "selinux_guest"
ROOT = Path(__file__).resolve().parents[2]
GUEST = "192.0.2.2"
HOST_SIDE = ("192.0.2.1", "192.0.2.80")
BOOT_TIMEOUT = 300


def image() -> Path:
    """root.img and id_ed25519 of the guest, built by selinux_guest/build.sh on first use."""
    missing = [t for t in ("debootstrap", "mkfs.ext4", "ssh", "nc") if not _which(t)]
    if missing:
        raise RuntimeError("the enforcing SELinux tier needs debootstrap, e2fsprogs, openssh-client and "
                           "netcat-openbsd; missing: %s" % ", ".join(missing))
    uml = nchelpers.uml_kernel()
    digest = hashlib.sha256()
    for name in ("build.sh", "nctest.cil"):
        digest.update((HERE / name).read_bytes())
    digest.update(uml["UML_VERSION"].encode())
    out = ROOT / ".build" / "selinux-guest" / digest.hexdigest()[:16]
    if not (out / "root.img").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["bash", str(HERE / "build.sh"), str(out), uml["UML_MODULES"]],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError("building the SELinux guest failed:\n%s%s" % (proc.stdout, proc.stderr))
    return out


def _which(tool: str) -> bool:
    return any(os.access(os.path.join(d, tool), os.X_OK) for d in os.environ.get("PATH", "").split(":"))


class Guest:
    def __init__(self, ns: str, key: Path, log: Path):
        self.ns, self.key, self.log = ns, key, log
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

    def console(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@contextlib.contextmanager
def selinux_guest() -> Iterator[Guest]:
    built = image()
    with nchelpers.netns() as ns, tempfile.TemporaryDirectory(prefix="nct-uml-") as tmp:
        tap = "nctap0"
        nchelpers.run("ip", "-n", ns, "tuntap", "add", tap, "mode", "tap")
        for addr in HOST_SIDE:
            nchelpers.run("ip", "-n", ns, "addr", "add", addr + "/24", "dev", tap)
        nchelpers.run("ip", "-n", ns, "link", "set", tap, "up")
        key = Path(tmp) / "id_ed25519"
        key.write_bytes((built / "id_ed25519").read_bytes())
        key.chmod(0o600)
        log = Path(tmp) / "console.log"
        cow = Path(tmp) / "root.cow"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, nchelpers.uml_kernel()["LINUX_UML"], "mem=768M",
                 "ubd0=%s,%s" % (cow, built / "root.img"),
                 "root=/dev/ubda", "rw", "vec0:transport=tap,ifname=%s" % tap, "con=null", "con0=null,fd:1",
                 "umid=%s" % ns, "uml_dir=%s" % tmp],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        guest = Guest(ns, key, log)
        try:
            deadline = time.monotonic() + BOOT_TIMEOUT
            while True:
                if proc.poll() is not None:
                    raise RuntimeError("the UML guest exited (rc %s) before SSH answered:\n%s"
                                       % (proc.returncode, guest.console()))
                if guest.ssh("true", check=False, timeout=30).returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("SSH to the UML guest did not answer within %ds:\n%s"
                                       % (BOOT_TIMEOUT, guest.console()))
                time.sleep(2)
            guest.booted_after = BOOT_TIMEOUT - (deadline - time.monotonic())
            yield guest
        finally:
            with contextlib.suppress(Exception):
                guest.ssh("poweroff", check=False, timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait()
