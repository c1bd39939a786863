"""Another tool at work: add and remove Docker-, kube-proxy-, firewalld- and fail2ban-style chains and rules.

Run inside a namespace (``ip netns exec NS python foreign_churn.py REPORT.json SEED``) while netconfine
converges in the same tables. Before each step it reads what is not netconfine's (kernel.foreign_view)
and compares it with what it recorded after its previous step: any difference is something netconfine
(the only other writer) touched. Stops cleanly on SIGTERM, checks once more, and writes REPORT.json:

    {"steps": N, "errors": [...], "violations": [...], "last_view": {...}, "ops": {...}}
"""

import json
import random
import signal
import subprocess
import sys
import time

from reliability import kernel

STOP = []
signal.signal(signal.SIGTERM, lambda *_: STOP.append(1))


def sh(argv, data=None):
    proc = subprocess.run(argv, input=data, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError("%s -> rc %d: %s" % (" ".join(argv), proc.returncode, (proc.stderr or proc.stdout).strip()))


def both(*args):
    sh(["iptables", "-w"] + list(args))
    sh(["ip6tables", "-w"] + list(args))


class Tools:
    """Each op adds something and remembers how to take it away again."""

    def __init__(self, rng):
        self.rng = rng
        self.undo = []       # (label, callable)
        self.serial = 0

    def _next(self):
        self.serial += 1
        return self.serial

    def docker_container(self):
        n = self._next() % 250 + 2
        port = 30000 + self.serial
        sh(["iptables", "-w", "-A", "DOCKER", "-d", "172.17.0.%d/32" % n, "!", "-i", "docker0", "-o", "docker0",
            "-p", "tcp", "-m", "tcp", "--dport", str(port), "-j", "ACCEPT"])
        sh(["iptables", "-w", "-t", "nat", "-A", "DOCKER", "!", "-i", "docker0", "-p", "tcp", "-m", "tcp",
            "--dport", str(port), "-j", "DNAT", "--to-destination", "172.17.0.%d:%d" % (n, port)])

        def undo():
            sh(["iptables", "-w", "-D", "DOCKER", "-d", "172.17.0.%d/32" % n, "!", "-i", "docker0", "-o", "docker0",
                "-p", "tcp", "-m", "tcp", "--dport", str(port), "-j", "ACCEPT"])
            sh(["iptables", "-w", "-t", "nat", "-D", "DOCKER", "!", "-i", "docker0", "-p", "tcp", "-m", "tcp",
                "--dport", str(port), "-j", "DNAT", "--to-destination", "172.17.0.%d:%d" % (n, port)])
        self.undo.append(("docker", undo))

    def kube_service(self):
        n = self._next()
        chain = "KUBE-SVC-RLY%012d" % n
        for family, restore, vip in ((4, "iptables-restore", "10.96.%d.%d/32" % (n // 250, n % 250 + 1)),
                                     (6, "ip6tables-restore", "fd00:96::%x/128" % n)):
            sh([restore, "--noflush", "-w"], "*nat\n:%s - [0:0]\n-A %s -m comment --comment \"rly/svc%d\" -j KUBE-MARK-MASQ\n"
               "-A KUBE-SERVICES -d %s -p tcp -m comment --comment \"rly/svc%d cluster IP\" -m tcp --dport 443 -j %s\n"
               "COMMIT\n" % (chain, chain, n, vip, n, chain))

        def undo():
            for restore, vip in (("iptables-restore", "10.96.%d.%d/32" % (n // 250, n % 250 + 1)),
                                 ("ip6tables-restore", "fd00:96::%x/128" % n)):
                sh([restore, "--noflush", "-w"],
                   "*nat\n-D KUBE-SERVICES -d %s -p tcp -m comment --comment \"rly/svc%d cluster IP\" -m tcp "
                   "--dport 443 -j %s\n:%s - [0:0]\n-X %s\nCOMMIT\n" % (vip, n, chain, chain, chain))
        self.undo.append(("kube", undo))

    def output_top(self):
        # a tool that puts its rule first in OUTPUT: netconfine's "first" jump must move back above it
        n = self._next()
        spec = ["-p", "udp", "-m", "udp", "--dport", str(5300 + n % 100), "-m", "comment", "--comment",
                "fw-top-%d" % n, "-j", "ACCEPT"]
        both("-I", "OUTPUT", "1", *spec)
        self.undo.append(("output-top", lambda: both("-D", "OUTPUT", *spec)))

    def output_bottom(self):
        n = self._next()
        spec = ["-p", "tcp", "-m", "tcp", "--dport", str(6000 + n % 100), "-j", "REJECT"]
        both("-A", "OUTPUT", *spec)
        self.undo.append(("output-bottom", lambda: both("-D", "OUTPUT", *spec)))

    def firewalld_direct(self):
        n = self._next()
        spec = ["-p", "tcp", "-m", "tcp", "--dport", str(8000 + n), "-j", "ACCEPT"]
        both("-A", "OUTPUT_direct", *spec)
        self.undo.append(("fw-direct", lambda: both("-D", "OUTPUT_direct", *spec)))

    def fail2ban(self):
        n = self._next()
        spec = ["-s", "203.0.113.%d/32" % (n % 250 + 1), "-j", "REJECT", "--reject-with", "icmp-port-unreachable"]
        sh(["iptables", "-w", "-I", "f2b-sshd", "1"] + spec)
        self.undo.append(("f2b", lambda: sh(["iptables", "-w", "-D", "f2b-sshd"] + spec)))

    def mangle_chain(self):
        n = self._next()
        chain = "KUBE-RLY-%d" % n
        both("-t", "mangle", "-N", chain)
        both("-t", "mangle", "-A", chain, "-j", "MARK", "--set-xmark", "0x%x/0xffff" % n)
        both("-t", "mangle", "-A", "POSTROUTING", "-p", "udp", "--dport", str(7000 + n % 500), "-j", chain)

        def undo():
            both("-t", "mangle", "-D", "POSTROUTING", "-p", "udp", "--dport", str(7000 + n % 500), "-j", chain)
            both("-t", "mangle", "-F", chain)
            both("-t", "mangle", "-X", chain)
        self.undo.append(("mangle", undo))

    def nft_table(self):
        n = self._next()
        sh(["nft", "-f", "-"], "table inet nct_dyn_%d {\n chain out {\n  type filter hook output priority 20; "
                               "policy accept;\n  tcp dport %d accept\n }\n}\n" % (n, 9000 + n))
        self.undo.append(("nft-table", lambda: sh(["nft", "delete", "table", "inet", "nct_dyn_%d" % n])))

    def nft_chain(self):
        n = self._next()
        sh(["nft", "add", "chain", "inet", "nct_firewalld", "zone_%d" % n])
        sh(["nft", "add", "rule", "inet", "nct_firewalld", "zone_%d" % n, "udp", "dport", str(4000 + n), "drop"])
        self.undo.append(("nft-chain", lambda: sh(["nft", "delete", "chain", "inet", "nct_firewalld", "zone_%d" % n])))

    ADDS = ("docker_container", "kube_service", "output_top", "output_bottom", "firewalld_direct", "fail2ban",
            "mangle_chain", "nft_table", "nft_chain")

    def step(self):
        if self.undo and (len(self.undo) > 12 or self.rng.random() < 0.45):
            label, undo = self.undo.pop(self.rng.randrange(len(self.undo)))
            undo()
            return "del-" + label
        name = self.rng.choice(self.ADDS)
        getattr(self, name)()
        return name


def main():
    report_path, seed = sys.argv[1], int(sys.argv[2])
    tools = Tools(random.Random(seed))
    report = {"steps": 0, "errors": [], "violations": [], "ops": {}}
    last = kernel.foreign_view(kernel.snapshot(None))
    print("ready", flush=True)
    while not STOP:
        now = kernel.foreign_view(kernel.snapshot(None))
        if now != last:
            report["violations"].append(kernel.diff_text(last, now))
            last = now
        try:
            op = tools.step()
            report["ops"][op] = report["ops"].get(op, 0) + 1
        except Exception as exc:  # a step of ours failed: something removed what we rely on
            report["errors"].append(str(exc))
        report["steps"] += 1
        last = kernel.foreign_view(kernel.snapshot(None))
        time.sleep(0.01)
    now = kernel.foreign_view(kernel.snapshot(None))
    if now != last:
        report["violations"].append(kernel.diff_text(last, now))
    report["last_view"] = last
    with open(report_path, "w") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main()
