"""The article's secmark scenario (seed 003) under an enforcing SELinux kernel, shared by the guest tiers.

Only one domain may reach the "proxy" 192.0.2.80:80 (host side of the guest's tap). nctest_a_t is granted
the new packet type myhttp_client_packet_t; nctest_b_t is not (both are small test domains,
selinux_guest/nctest.cil, since unconfined_t may send any packet type). ``run`` drives the role through
check → apply → check → apply (idempotence, semodule not called again) → probes and the real client in
both domains, with the AVC → (optionally a reboot of the guest, then the same verdicts and changed=0) →
drift repair → absent → absent again, and returns the measured times.

The guest (uml_selinux.Guest: ``ssh``, ``hosts``, ``booted_after``) is the User-Mode-Linux one for the
iptables form (test_secmark_guest.py, ``Mangle``) or the QEMU one with Debian's stock kernel for the
nftables form (test_secmark_qemu.py, ``NftTable``); the kernel's state is read from the kernel, through
the backend's own listing (``iptables-save -t mangle``, ``nft -j list table inet netconfine``).
"""

from __future__ import annotations

import hashlib
import json
import re
import time

import yaml

from nchelpers import ansible_playbook
from uml_selinux import HOST_SIDE

PROXY = HOST_SIDE[1]
MYHTTP = "system_u:object_r:myhttp_client_packet_t:s0"
ROLE_VARS = {
    "secmark_policy_name": "proxy",
    "secmark_policy_packet_types": [{"name": "myhttp_client_packet_t", "kind": "client", "domains": ["nctest_a_t"]}],
    "secmark_policy_allow_unlabeled": {"domains": ["domain"], "audit": True},
    "secmark_policy_labels": [{"direction": "output", "protocol": "tcp", "destination": [PROXY],
                               "destination_port": "80", "packet_type": "myhttp_client_packet_t"}],
}
# the role's probes, each run in a domain (probe's selinux_type: the child switches to it, as runcon -t does)
VERIFY = [{"name": "a", "selinux_type": "nctest_a_t", "host": PROXY, "port": 80, "receive": True, "expect": "allowed"},
          {"name": "b", "selinux_type": "nctest_b_t", "host": PROXY, "port": 80, "expect": "denied"}]
TASK = "paranoid.netconfine.secmark_policy : Install the packet types and label the packets"
PROBES = "paranoid.netconfine.secmark_policy : Probe what must still work once the packets are labelled"
PLAY = yaml.safe_dump([{"hosts": "all", "gather_facts": False,
                        "roles": [{"role": "paranoid.netconfine.secmark_policy"}]}])
# A short HTTP-ish exchange: connect, read the greeting. The test domains may not write to the ssh
# session's pipes (the kernel hands them /dev/null instead), so the outcome is the exit status:
# 0 greeting read, 2 timed out, 3 any other error.
CLIENT = ("python3 -c \"import socket,sys\n"
          "try:\n s=socket.create_connection(('%s',80),timeout=8)\n"
          " sys.exit(0 if s.recv(64)==b'proxy-hello\\n' else 3)\n"
          "except socket.timeout: sys.exit(2)\n"
          "except OSError: sys.exit(3)\"" % PROXY)
# the proxy, run on the host side of the tap (nchelpers.daemon(guest.ns, "python3", "-c", SERVER, ready="ready"))
SERVER = ("import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind(('%s', 80)); s.listen(16); print('ready', flush=True)\n"
          "while True:\n c,_=s.accept(); c.sendall(b'proxy-hello\\n'); c.close()\n" % PROXY)


class Mangle:
    """The iptables form, read with ``iptables-save -t mangle``."""

    backend_vars: dict = {}

    def __init__(self, guest):
        self.guest = guest

    def text(self):
        return self.guest.ssh("iptables-save -t mangle").stdout

    def labelled(self):
        return "-j SECMARK" in self.text()

    def assert_converged(self):
        rules = self.text()
        assert "-j SECMARK --selctx %s" % MYHTTP in rules, rules
        assert "-j CONNSECMARK --restore" in rules and "-j CONNSECMARK --save" in rules, rules

    def assert_gone(self):
        assert "NC-" not in self.text()

    def delete_label(self, result):
        chain = [c for c in result["chains"] if "output" in c][0]
        self.guest.ssh("iptables -t mangle -D %s -d %s/32 -p tcp -m tcp --dport 80 -j SECMARK --selctx %s"
                       % (chain, PROXY, MYHTTP))


class NftTable:
    """The nftables form, read with ``nft -j list table inet netconfine`` (the kernel's objects and rules)."""

    backend_vars = {"secmark_policy_backend": "nftables"}
    RESTORE = {"mangle": {"key": {"meta": {"key": "secmark"}}, "value": {"ct": {"key": "secmark"}}}}
    SAVE = {"mangle": {"key": {"ct": {"key": "secmark"}}, "value": {"meta": {"key": "secmark"}}}}

    def __init__(self, guest):
        self.guest = guest

    def listing(self):
        """{"secmark": [...], "chain": [...], "rule": [...]} of our table; None when it does not exist."""
        proc = self.guest.ssh("nft -j list table inet netconfine", check=False)
        if proc.returncode != 0:
            assert "No such file or directory" in proc.stderr, proc.stderr
            return None
        items = {}
        for entry in json.loads(proc.stdout)["nftables"]:
            for kind, body in entry.items():
                items.setdefault(kind, []).append(body)
        return items

    def label_rules(self, items):
        """The rules that label the proxy's packets with myhttp_client_packet_t's object."""
        objects = {o["name"] for o in items.get("secmark", []) if o["context"] == MYHTTP}
        return [r for r in items.get("rule", []) if any(e.get("secmark") in objects for e in r["expr"])
                and PROXY in json.dumps(r["expr"]) and '"right": 80' in json.dumps(r["expr"])]

    def labelled(self):
        items = self.listing()
        return bool(items and self.label_rules(items))

    def assert_converged(self):
        items = self.listing()
        assert items, "no table inet netconfine"
        assert [o["context"] for o in items.get("secmark", [])] == [MYHTTP], items.get("secmark")
        (label,) = self.label_rules(items)
        chain = label["chain"]
        exprs = [r["expr"] for r in items["rule"] if r["chain"] == chain]
        # restore for established/related first, the label, save for new last
        assert self.RESTORE in exprs[0] and label["expr"] in exprs[1:-1] and self.SAVE in exprs[-1], exprs
        hooks = [c for c in items["chain"] if c.get("hook") == "output"]
        assert hooks and any(chain in json.dumps(r["expr"]) for r in items["rule"] if r["chain"] == hooks[0]["name"])

    def assert_gone(self):
        items = self.listing()
        assert items is None or not (items.get("chain") or items.get("secmark")), items

    def delete_label(self, _result):
        (label,) = self.label_rules(self.listing())
        self.guest.ssh("nft delete rule inet netconfine %s handle %d" % (label["chain"], label["handle"]))


def role(guest, timings=None, key=None, check=False, **extra):
    """Run the role on the guest's one host; returns (the module's task result, the play)."""
    (host,) = guest.hosts
    started = time.monotonic()
    play = ansible_playbook(PLAY, guest.hosts, extra_vars=dict(ROLE_VARS, **extra), check=check, diff=True)
    if timings is not None:
        timings[key] = round(time.monotonic() - started)
    assert play.rc == 0, play
    return play.task(host, TASK), play


def reach(guest, domain):
    """Exit status of the client run in ``domain`` (0: reached the proxy and read its greeting)."""
    return guest.ssh("runcon -t %s -- %s" % (domain, CLIENT), check=False).returncode


def commit_num(guest):
    """libsemanage's transaction counter: it moves exactly when a semodule transaction commits."""
    return guest.ssh("od -An -tu4 /var/lib/selinux/default/active/commit_num").stdout.split()


def assert_module_installed(guest, result):
    """The store holds netconfine_proxy at priority 400 with the checksum of the CIL the module rendered."""
    listed = guest.ssh("semodule --list-modules=full --checksum").stdout
    cil = result["rendered"]["selinux policy"]
    line = [ln for ln in listed.splitlines() if " netconfine_proxy " in ln]
    assert len(line) == 1 and line[0].split()[0] == "400", listed
    cil_text = "".join(ln[2:] + "\n" for ln in cil.splitlines()[1:])
    assert line[0].split()[3] == "sha256:" + hashlib.sha256(cil_text.encode()).hexdigest()


def run(guest, kernel, reboot=False):
    """The whole scenario on a booted guest whose host side serves SERVER; returns the times of each run (s).
    ``reboot``: after the probes, power the guest off and boot it from its own disk (``guest.reboot()``), and
    prove that the module and the labels came back and a converge changes nothing (issue 21)."""
    timings = {"boot": round(guest.booted_after)}
    extra = kernel.backend_vars
    (host,) = guest.hosts
    # safety net: whatever happens below, the guest goes permissive again after 15 minutes
    guest.ssh("systemd-run --on-active=900 /usr/sbin/setenforce 0")
    guest.ssh("setenforce 1")
    assert guest.ssh("getenforce").stdout.strip() == "Enforcing"

    # before: no label rule, so neither domain is checked for packets
    assert reach(guest, "nctest_b_t") == 0

    # check mode predicts, changes nothing
    store0 = commit_num(guest)
    res, _play = role(guest, timings, "check", check=True, **extra)
    assert res.changed
    assert commit_num(guest) == store0 and not kernel.labelled()

    # converge: module installed, labels in place
    res, _play = role(guest, timings, "apply", **extra)
    assert res.changed
    assert_module_installed(guest, res.result)
    kernel.assert_converged()
    store1 = commit_num(guest)
    assert store1 != store0

    # idempotence: check mode and a second run change nothing, semodule commits nothing
    res, _play = role(guest, timings, "check again", check=True, **extra)
    assert not res.changed, res.result
    res, play = role(guest, timings, "apply again", **extra)
    assert not res.changed and play.stats[host]["changed"] == 0, play
    assert commit_num(guest) == store1

    # behaviour under enforcing: the granted domain reaches the proxy, the other is denied with an AVC
    _res, play = role(guest, timings, "probes", netconfine_verify=True, netconfine_verify_fail=False,
                      secmark_policy_verify=VERIFY, **extra)
    probes = {p["name"]: p for p in play.task(host, PROBES).result["probes"]}
    assert probes["a"]["outcome"] == "connected" and probes["a"]["received"] == "proxy-hello\n", probes
    assert probes["b"]["outcome"] != "connected" and not probes["b"]["failed"], probes
    assert probes["b"]["as_expected"] and probes["b"]["selinux_type"] == "nctest_b_t", probes
    assert reach(guest, "nctest_a_t") == 0
    assert reach(guest, "nctest_b_t") in (2, 3)     # the send check drops the SYN (connect fails)
    avc = guest.ssh("grep 'avc:.*denied.*nctest_b_t.*myhttp_client_packet_t.*tclass=packet' "
                    "/var/log/audit/audit.log", check=False).stdout
    assert re.search(r"denied\s+\{ send \}", avc), avc
    # management traffic kept working: new SSH connections (each ssh() above) and the Ansible runs

    if reboot:
        # the store kept the module; netconfine-restore.service put the labels back at boot (the counters
        # start again: restored, not left over); the same verdicts; a converge changes nothing
        started = time.monotonic()
        guest.reboot()
        timings["reboot"] = round(time.monotonic() - started)
        assert guest.ssh("getenforce").stdout.strip() == "Enforcing"
        assert guest.ssh("systemctl is-active netconfine-restore.service", check=False).stdout.strip() == "active", \
            guest.ssh("journalctl -b -u netconfine-restore.service --no-pager", check=False).stdout
        assert " netconfine_proxy " in guest.ssh("semodule --list-modules=full").stdout
        kernel.assert_converged()
        assert reach(guest, "nctest_a_t") == 0
        assert reach(guest, "nctest_b_t") in (2, 3)
        res, play = role(guest, timings, "apply after the reboot", **extra)
        assert not res.changed and play.stats[host]["changed"] == 0, play
        assert commit_num(guest) == store1

    # drift: the label rule deleted by hand is put back
    kernel.delete_label(res.result)
    assert not kernel.labelled()
    assert reach(guest, "nctest_b_t") == 0
    res, _play = role(guest, timings, "drift repair", **extra)
    assert res.changed and kernel.labelled()
    kernel.assert_converged()
    assert commit_num(guest) == store1          # only the rule was repaired, not the module
    assert reach(guest, "nctest_b_t") in (2, 3)

    # absent: rules, then the module, go; a second run changes nothing
    res, _play = role(guest, timings, "absent", secmark_policy_state="absent", **extra)
    assert res.changed
    kernel.assert_gone()
    assert "netconfine_proxy" not in guest.ssh("semodule -l").stdout
    res, _play = role(guest, timings, "absent again", secmark_policy_state="absent", **extra)
    assert not res.changed
    assert guest.ssh("getenforce").stdout.strip() == "Enforcing"
    assert reach(guest, "nctest_b_t") == 0
    return timings
