"""Other tools' state in a namespace: Docker-, kube-proxy-, firewalld- and fail2ban-style chains and rules.

``seed`` puts a realistic mix in place before a test; ``churn`` (foreign_churn.py, started by
:func:`start_churn`) keeps adding and removing such chains and rules while netconfine runs, and checks
before each of its own steps that nothing it made has been touched since its last step.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path

import nchelpers
from reliability import kernel

HERE = Path(__file__).resolve().parent

_SEED_COMMON = """\
*filter
:DOCKER-USER - [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-SERVICES - [0:0]
:f2b-sshd - [0:0]
:OUTPUT_direct - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A DOCKER-USER -j RETURN
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd
-A f2b-sshd -j RETURN
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -j KUBE-FIREWALL
-A OUTPUT -j OUTPUT_direct
-A OUTPUT -p tcp -m tcp --dport 7 -j ACCEPT
COMMIT
*nat
:DOCKER - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
COMMIT
*mangle
:KUBE-KUBELET-CANARY - [0:0]
-A POSTROUTING -p udp -m udp --dport 4789 -j MARK --set-xmark 0x1/0xffffffff
COMMIT
"""

_SEED_V4 = """\
*nat
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
COMMIT
*filter
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" \
-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
COMMIT
"""

_SEED_V6 = """\
*nat
-A POSTROUTING -s fd00:17::/64 ! -o docker0 -j MASQUERADE
COMMIT
"""

_SEED_NFT = """\
table inet nct_firewalld {
    chain filter_OUTPUT {
        type filter hook output priority filter + 10; policy accept;
        tcp dport 9999 accept
    }
    chain filter_INPUT {
        type filter hook input priority filter + 10; policy accept;
        ct state established,related accept
        iifname "lo" accept
    }
}
"""


def seed(ns: str) -> None:
    """Put other tools' chains and rules (both families, filter/nat/mangle, and an nft table) into ``ns``."""
    nchelpers.run("iptables-restore", "--noflush", ns=ns, input=_SEED_COMMON + _SEED_V4)
    nchelpers.run("ip6tables-restore", "--noflush", ns=ns, input=_SEED_COMMON + _SEED_V6)
    nchelpers.run("nft", "-f", "-", ns=ns, input=_SEED_NFT)


# What another tool does to a whole table: (label, argv run inside the namespace, backends whose state it
# destroys). A flush that does not reach a backend's state must leave that backend's runs unchanged.
FLUSHES = (
    ("iptables -F", ["iptables", "-F"], ("iptables",)),
    ("iptables -F; iptables -X", ["sh", "-c", "iptables -F && iptables -X"], ("iptables",)),
    ("ip6tables -F; ip6tables -X", ["sh", "-c", "ip6tables -F && ip6tables -X"], ("iptables",)),
    ("iptables -F OUTPUT", ["iptables", "-F", "OUTPUT"], ("iptables",)),
    ("iptables -t mangle -F; -X", ["sh", "-c", "iptables -t mangle -F && iptables -t mangle -X"], ("iptables",)),
    ("nft flush ruleset", ["nft", "flush", "ruleset"], ("iptables", "nftables")),
    ("nft delete table inet netconfine", ["sh", "-c", "nft list table inet netconfine >/dev/null 2>&1 && "
                                          "nft delete table inet netconfine || true"], ("nftables",)),
)


# --------------------------------------------------------------------------- the churn loop

class Churn:
    """A foreign_churn.py process inside a namespace; ``stop()`` returns its report."""

    def __init__(self, ns: str, seed_value: int):
        self.dir = Path(tempfile.mkdtemp(prefix="nct-churn-"))
        self.report = self.dir / "report.json"
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, str(kernel.PYTHON), str(HERE / "foreign_churn.py"), str(self.report),
             str(seed_value)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
            env=dict(os.environ, PYTHONPATH=str(HERE.parent)))
        self._ready()

    def _ready(self):
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.kill()
            raise RuntimeError("churn loop did not start: %s%s" % (line, self.proc.stderr.read()))

    def stop(self) -> dict:
        """Let the loop finish its current step, check once more, and report."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=60)
            if not self.report.exists():
                raise RuntimeError("churn loop wrote no report (rc=%s)\n%s%s" % (self.proc.returncode, out, err))
            report = json.loads(self.report.read_text())
        finally:
            self.kill()
        report["stderr"] = err
        return report

    def kill(self):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        if self.dir.exists():
            for leftover in self.dir.iterdir():
                leftover.unlink()
            self.dir.rmdir()


@contextlib.contextmanager
def churn(ns: str, seed_value: int = 0):
    loop = Churn(ns, seed_value)
    try:
        yield loop
    finally:
        loop.kill()
