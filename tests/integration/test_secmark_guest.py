"""secmark_label / secmark_policy under an enforcing SELinux kernel (User-Mode-Linux guest, see uml_selinux).

The article's scenario for real: only one domain may reach the "proxy" 192.0.2.80:80 (host side of the
guest's tap). nctest_a_t is granted the new packet type myhttp_client_packet_t; nctest_b_t is not
(both are small test domains, selinux_guest/nctest.cil, since unconfined_t may send any packet type).
One guest serves the whole scenario (one test function, so that pytest-xdist cannot split it over two
guests); it is rebooted once from its own disk to prove that the labels come back at boot (issue 21).
Fails, never skips, when the guest cannot be built or booted.

Wall time on an idle 2-core machine: image build ~1-2 min once (cached), boot to SSH ~25 s, the
scenario's ansible-playbook runs ~2-3 min (two semodule transactions of ~15 s each), the reboot ~30 s.
"""

from __future__ import annotations

import hashlib
import re
import time

import yaml

from nchelpers import ansible_playbook, daemon
from uml_selinux import HOST_SIDE, selinux_guest

PROXY = HOST_SIDE[1]
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
SERVER = ("import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind(('%s', 80)); s.listen(16); print('ready', flush=True)\n"
          "while True:\n c,_=s.accept(); c.sendall(b'proxy-hello\\n'); c.close()\n" % PROXY)


def role(guest, check=False, **extra):
    play = ansible_playbook(PLAY, guest.hosts, extra_vars=dict(ROLE_VARS, **extra), check=check, diff=True)
    assert play.rc == 0, play
    result = play.task("selinuxhost", "paranoid.netconfine.secmark_policy : Install the packet types and label the packets")
    return result, play


def reach(guest, domain):
    """Exit status of the client run in ``domain`` (0: reached the proxy and read its greeting)."""
    return guest.ssh("runcon -t %s -- %s" % (domain, CLIENT), check=False).returncode


def commit_num(guest):
    """libsemanage's transaction counter: it moves exactly when a semodule transaction commits."""
    return guest.ssh("od -An -tu4 /var/lib/selinux/default/active/commit_num").stdout.split()


def mangle(guest):
    return guest.ssh("iptables-save -t mangle").stdout


def test_enforcing_guest_scenario():
    started = time.monotonic()
    with selinux_guest() as guest, daemon(guest.ns, "python3", "-c", SERVER, ready="ready"):
        timings = {"boot": round(guest.booted_after)}
        # safety net: whatever happens below, the guest goes permissive again after 15 minutes
        guest.ssh("systemd-run --on-active=900 /usr/sbin/setenforce 0")
        guest.ssh("setenforce 1")
        assert guest.ssh("getenforce").stdout.strip() == "Enforcing"

        # before: no SECMARK rule, so neither domain is checked for packets
        assert reach(guest, "nctest_b_t") == 0

        # check mode predicts, changes nothing
        store0 = commit_num(guest)
        res, _output = role(guest, check=True)
        assert res.changed
        assert commit_num(guest) == store0 and "-j SECMARK" not in mangle(guest)

        # converge: module installed, labels in place
        t = time.monotonic()
        res, _output = role(guest)
        timings["apply"] = round(time.monotonic() - t)
        assert res.changed
        listed = guest.ssh("semodule --list-modules=full --checksum").stdout
        cil = res.result["rendered"]["selinux policy"]
        line = [ln for ln in listed.splitlines() if " netconfine_proxy " in ln]
        assert len(line) == 1 and line[0].split()[0] == "400", listed
        installed_sum = line[0].split()[3]
        cil_text = "".join(ln[2:] + "\n" for ln in cil.splitlines()[1:])
        assert installed_sum == "sha256:" + hashlib.sha256(cil_text.encode()).hexdigest()
        rules = mangle(guest)
        assert "-j SECMARK --selctx system_u:object_r:myhttp_client_packet_t:s0" in rules, rules
        assert "-j CONNSECMARK --restore" in rules and "-j CONNSECMARK --save" in rules
        store1 = commit_num(guest)
        assert store1 != store0

        # idempotence: check mode and a second run change nothing, semodule commits nothing
        res, _output = role(guest, check=True)
        assert not res.changed, res.result
        res, play = role(guest)
        assert not res.changed and play.stats["selinuxhost"]["changed"] == 0, play
        assert commit_num(guest) == store1

        # behaviour under enforcing: the granted domain reaches the proxy, the other is denied with an AVC
        _res, play = role(guest, netconfine_verify=True, netconfine_verify_fail=False, secmark_policy_verify=VERIFY)
        probes = {p["name"]: p for p in play.task("selinuxhost", PROBES).result["probes"]}
        assert probes["a"]["outcome"] == "connected" and probes["a"]["received"] == "proxy-hello\n", probes
        assert probes["b"]["outcome"] != "connected" and not probes["b"]["failed"], probes
        assert probes["b"]["as_expected"] and probes["b"]["selinux_type"] == "nctest_b_t", probes
        assert reach(guest, "nctest_a_t") == 0
        assert reach(guest, "nctest_b_t") in (2, 3)     # the send check drops the SYN (connect fails)
        avc = guest.ssh("grep 'avc:.*denied.*nctest_b_t.*myhttp_client_packet_t.*tclass=packet' "
                        "/var/log/audit/audit.log", check=False).stdout
        assert re.search(r"denied\s+\{ send \}", avc), avc
        # management traffic kept working: new SSH connections (each ssh() above) and the Ansible runs

        # reboot (issue 21): the store kept the module, netconfine-restore.service put the labels back at
        # boot (counters reset: restored, not left over), the same verdicts, and a converge changes nothing
        t = time.monotonic()
        guest.reboot()
        timings["reboot"] = round(time.monotonic() - t)
        assert guest.ssh("getenforce").stdout.strip() == "Enforcing"
        assert guest.ssh("systemctl is-active netconfine-restore.service", check=False).stdout.strip() == "active", \
            guest.ssh("journalctl -b -u netconfine-restore.service --no-pager", check=False).stdout
        assert " netconfine_proxy " in guest.ssh("semodule --list-modules=full").stdout
        counted = guest.ssh("iptables -t mangle -L -v -n -x").stdout
        assert "SECMARK" in counted and "myhttp_client_packet_t" in counted, counted
        assert reach(guest, "nctest_a_t") == 0
        assert reach(guest, "nctest_b_t") in (2, 3)
        res, play = role(guest)
        assert not res.changed and play.stats["selinuxhost"]["changed"] == 0, play
        assert commit_num(guest) == store1

        # drift: the SECMARK rule deleted by hand is put back
        chain = [c for c in res.result["chains"] if "output" in c][0]
        guest.ssh("iptables -t mangle -D %s -d %s/32 -p tcp -m tcp --dport 80 -j SECMARK "
                  "--selctx system_u:object_r:myhttp_client_packet_t:s0" % (chain, PROXY))
        assert "-j SECMARK" not in mangle(guest)
        assert reach(guest, "nctest_b_t") == 0
        res, _output = role(guest)
        assert res.changed and "-j SECMARK" in mangle(guest)
        assert commit_num(guest) == store1          # only the rule was repaired, not the module
        assert reach(guest, "nctest_b_t") in (2, 3)

        # absent: rules, then the module, go; a second run changes nothing
        t = time.monotonic()
        res, _output = role(guest, secmark_policy_state="absent")
        timings["absent"] = round(time.monotonic() - t)
        assert res.changed
        assert "NC-" not in mangle(guest)
        assert "netconfine_proxy" not in guest.ssh("semodule -l").stdout
        res, _output = role(guest, secmark_policy_state="absent")
        assert not res.changed
        assert guest.ssh("getenforce").stdout.strip() == "Enforcing"
        assert reach(guest, "nctest_b_t") == 0
        timings["total"] = round(time.monotonic() - started)
        print("secmark guest timings (s):", timings)
