"""The real-systemd tier: netns_service's units and every module's persistence under a systemd PID 1,
across a reboot (systemd_container.py: a debootstrapped Debian 12 root booted with unshare + chroot).

One container for the whole scenario (boot ~2 s, build ~80 s once, cached): converge (check, apply,
check, apply) -> the units, the daemon's namespace, PrivateTmp, IPAddressDeny, following a restart of
the namespace unit, the no-network service (#24) -> reboot -> everything back through
netconfine-restore.service and the namespace unit, foreign persisted rules intact, second converge
changed=0 -> state: absent leaves no unit, namespace or file.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from nchelpers import ansible_playbook
from systemd_container import systemd_container

DAEMON = "/checkout/tests/integration/systemd_container/daemon.py"
FOREIGN = "/checkout/tests/integration/systemd_container/foreign.sh"

PLAY = """
- hosts: ctr
  gather_facts: false
  tasks:
    - name: web
      paranoid.netconfine.netns_service:
        name: ncweb
        state: "{{ state }}"
        subnet: 192.0.2.0/30
        port_forwards: [{host_port: 10105}]
        allow_localhost_forward: true
        service:
          exec: /usr/bin/python3
          args: ["%(daemon)s", "10105"]
          user: nctd
          working_directory: /var/lib/nctd
          environment: {NCT_TARGETS: "192.0.2.1:7001 203.0.113.1:7001"}
          ip_address_deny: [any]
          ip_address_allow: [192.0.2.0/30, localhost]
    - name: converter
      paranoid.netconfine.netns_service:
        name: ncconv
        state: "{{ state }}"
        network: none
        service:
          exec: /usr/bin/python3
          args: ["%(daemon)s", "10106"]
          user: nctd
          working_directory: /var/lib/nctd
          environment: {NCT_TARGETS: "192.0.2.1:7001"}
          restrict_address_families: [AF_INET, AF_UNIX]
    - name: guard iptables
      paranoid.netconfine.owner_rule:
        name: nct-guard-ipt
        state: "{{ state }}"
        backend: iptables
        rules:
          - {protocol: tcp, destination_port: "7002", uid_owner: nctx, jump: REJECT}
    - name: guard nftables
      paranoid.netconfine.owner_rule:
        name: nct-guard-nft
        state: "{{ state }}"
        backend: nftables
        rules:
          - {protocol: tcp, destination_port: "7003", uid_owner: nctx, jump: REJECT}
""" % {"daemon": DAEMON}

TASKS = ("web", "converter", "guard iptables", "guard nftables")

# The role with the web task's item, and a task that notifies its handler (the daemon's configuration changed).
WEB = dict(yaml.safe_load(PLAY)[0]["tasks"][0]["paranoid.netconfine.netns_service"], state="present")
ROLE_PLAY = yaml.safe_dump([{"hosts": "ctr", "gather_facts": False, "tasks": [
    {"name": "netns_confine", "ansible.builtin.include_role": {"name": "paranoid.netconfine.netns_confine"},
     "vars": {"netns_confine_services": [WEB]}},
    {"name": "configuration", "ansible.builtin.command": "true", "changed_when": True,
     "notify": "netns_confine restart"}]}], sort_keys=False)


def converge(ctr, state="present", check=False):
    run = ansible_playbook(PLAY, {"ctr": ctr.hostvars}, extra_vars={"state": state}, check=check, diff=True)
    assert run.rc == 0, run.output
    return run


def changed(run):
    return dict((t, run.task("ctr", t).changed) for t in TASKS)


def listeners(ctr):
    ctr.sh("ip addr add 203.0.113.1/32 dev lo 2>/dev/null || true")
    for port in (7001, 7002, 7003):
        ctr.sh("systemctl is-active -q nct-l%d || systemd-run -q --unit=nct-l%d nc -lk 0.0.0.0 %d" % (port, port, port))
    for port in (7001, 7002, 7003):
        wait_for(lambda p=port: ctr.sh("nc -z -w1 127.0.0.1 %d" % p, check=False).returncode == 0, "listener %d" % port)


def wait_for(predicate, what, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting for %s" % what)


def daemon_pid(ctr, unit):
    pid = ctr.sh("systemctl show -p MainPID --value %s" % unit).stdout.strip()
    status = "systemctl status %s --no-pager; journalctl -u %s --no-pager | tail -20" % (unit, unit)
    assert pid not in ("", "0"), ctr.sh(status, check=False).stdout
    return pid


def result(ctr, port):
    path = "/var/lib/nctd/result-%d.json" % port
    wait_for(lambda: ctr.sh("test -s %s" % path, check=False).returncode == 0, path)
    return json.loads(ctr.sh("cat %s" % path).stdout)


def as_nctx(ctr, port):
    """rc of a TCP connect to 127.0.0.1:port as user nctx (0 = connected)."""
    return ctr.sh("setpriv --reuid nctx --regid nctx --clear-groups nc -z -w2 127.0.0.1 %d" % port,
                  check=False).returncode


def check_everything(ctr):
    """What the converge (or the boot) must have made, checked on the kernel and by behaviour."""
    for unit in ("netconfine-ns-ncweb", "netconfine-ncweb", "netconfine-ns-ncconv", "netconfine-ncconv"):
        assert ctr.sh("systemctl is-active %s.service" % unit, check=False).stdout.strip() == "active", \
            ctr.failed_units()
    # the daemon's network namespace is the named one
    for name in ("ncweb", "ncconv"):
        pid = daemon_pid(ctr, "netconfine-%s.service" % name)
        assert ctr.sh("stat -L -c %%i /proc/%s/ns/net" % pid).stdout == ctr.sh("stat -c %%i /run/netns/%s" % name).stdout
        # runs as nctd with no_new_privs
        status = ctr.sh("cat /proc/%s/status" % pid).stdout
        uid = ctr.sh("id -u nctd").stdout.strip()
        assert "\nUid:\t%s\t%s" % (uid, uid) in status and "NoNewPrivs:\t1" in status
        # PrivateTmp: what the daemon wrote in its /tmp is not in the container's /tmp (a unit of Type=simple is
        # active before the daemon has written it: right after a restart, wait for the file)
        wait_for(lambda: ctr.sh("test -e /proc/%s/root/tmp/nct-private-tmp" % pid, check=False).returncode == 0,
                 "the daemon's file in its private /tmp")
        assert ctr.sh("test -e /tmp/nct-private-tmp", check=False).returncode != 0
    web = result(ctr, 10105)
    assert web["192.0.2.1:7001"] == "connected", web              # in the allow-list
    # IPAddressDeny=any (cgroup BPF drops the packets): the connection is never made ...
    assert web["203.0.113.1:7001"] in ("Operation not permitted", "timed out"), web
    # ... while the same connection from the same namespace, outside the daemon's cgroup, is made
    assert ctr.sh("ip netns exec ncweb nc -z -w2 203.0.113.1 7001", check=False).returncode == 0
    assert web["127.0.0.1:10105"] == "connected", web
    # allow_localhost_forward: a local client on 127.0.0.1 reaches the daemon through the OUTPUT DNAT
    assert ctr.sh("cat /proc/sys/net/ipv4/conf/vh-ncweb/route_localnet").stdout.strip() == "1"
    assert ctr.sh("nc -w2 127.0.0.1 10105 </dev/null").stdout.startswith("ok ")
    conv = result(ctr, 10106)
    assert conv["192.0.2.1:7001"] == "Network is unreachable", conv   # #24: lo only
    assert conv["127.0.0.1:10106"] == "connected", conv
    links = json.loads(ctr.sh("ip -n ncconv -j link").stdout)
    assert [link["ifname"] for link in links] == ["lo"]
    # the forward reaches the daemon from the container's own side
    # the forward reaches the daemon from a client the allow-list admits; one it does not is dropped
    assert ctr.sh("nc -w2 -s 192.0.2.1 192.0.2.1 10105 </dev/null").stdout.startswith("ok ")
    assert ctr.sh("nc -w2 -s 203.0.113.1 192.0.2.1 10105 </dev/null", check=False).returncode != 0
    # owner_rule on both backends: nctx refused, root not
    for port in (7002, 7003):
        assert as_nctx(ctr, port) != 0
        assert ctr.sh("nc -z -w2 127.0.0.1 %d" % port, check=False).returncode == 0
    assert as_nctx(ctr, 7001) == 0


def test_units_reboot_and_persistence_under_real_systemd():
    start = time.monotonic()
    with systemd_container() as ctr:
        assert int(ctr.sh("systemctl --version").stdout.split()[1]) >= 250
        ctr.sh("sh %s" % FOREIGN)
        listeners(ctr)
        first = converge(ctr, check=True)
        assert all(changed(first).values()), first.output
        assert ctr.sh("ls /etc/systemd/system/").stdout.count("netconfine-") == 0     # check mode wrote nothing
        assert "NetworkNamespacePath=/run/netns/ncweb" in str(first.task("ctr", "web").result.get("diff"))
        applied = converge(ctr)
        assert all(changed(applied).values()), applied.output
        for check in (True, False):
            again = converge(ctr, check=check)
            assert not any(changed(again).values()), again.output
        check_everything(ctr)

        # the role's handler restarts the daemon when notified; the role's own task changes nothing here
        old_pid = daemon_pid(ctr, "netconfine-ncweb.service")
        role = ansible_playbook(ROLE_PLAY, {"ctr": ctr.hostvars})
        assert role.rc == 0, role.output
        runs = [r for r in role.results["ctr"] if r.action.endswith("netns_service")]
        # the role's task, then the handler's (restart: true), for ncweb
        assert [r.changed for r in runs] == [False, True], role.output
        assert daemon_pid(ctr, "netconfine-ncweb.service") != old_pid, role.output
        wait_for(lambda: ctr.sh("nc -w2 127.0.0.1 10105 </dev/null", check=False).stdout.startswith("ok "),
                 "the restarted daemon")

        # restarting the namespace unit: a fresh namespace, and the daemon follows into it
        # (a namespace's inode number can be reused: mark the old one by a sysctl a fresh one has at 64)
        old_pid = daemon_pid(ctr, "netconfine-ncweb.service")
        ctr.sh("ip netns exec ncweb sh -c 'echo 33 > /proc/sys/net/ipv4/ip_default_ttl'")
        ctr.sh("rm -f /var/lib/nctd/result-10105.json; systemctl restart netconfine-ns-ncweb.service")
        assert ctr.sh("ip netns exec ncweb cat /proc/sys/net/ipv4/ip_default_ttl").stdout.strip() == "64"
        after = ctr.sh("stat -c %i /run/netns/ncweb").stdout
        pid = daemon_pid(ctr, "netconfine-ncweb.service")
        assert pid != old_pid
        assert ctr.sh("stat -L -c %%i /proc/%s/ns/net" % pid).stdout == after
        assert result(ctr, 10105)["192.0.2.1:7001"] == "connected"

        # reboot: the container's network namespace goes, so do every namespace, link and rule
        assert ctr.sh("systemctl show -p After --value netconfine-restore.service").stdout.count("nftables.service")
        ctr.sh("rm -f /var/lib/nctd/result-*.json")
        ctr.reboot()
        listeners(ctr)
        # the daemons started at boot, before this test's listeners: let them try again
        ctr.sh("rm -f /var/lib/nctd/result-*.json; systemctl restart netconfine-ncweb.service netconfine-ncconv.service")
        check_everything(ctr)
        # netconfine-restore ran after nftables.service's "flush ruleset"; the foreign rules are intact
        order = [int(ctr.sh("systemctl show -p ExecMainExitTimestampMonotonic --value %s" % u).stdout)
                 for u in ("nftables.service", "netconfine-restore.service")]
        assert 0 < order[0] < order[1], order
        assert "ip saddr 198.51.100.8 drop" in ctr.sh("nft list table inet nctforeign").stdout
        assert "-A NCT-FOREIGN -s 198.51.100.7/32 -j DROP" in ctr.sh("iptables-save -t filter").stdout
        # the boot restore left the veth's route_localnet to the namespace unit (it did not fail on it)
        assert ctr.sh("systemctl is-active netconfine-restore.service").stdout.strip() == "active", \
            ctr.sh("journalctl -u netconfine-restore.service --no-pager | tail -20", check=False).stdout
        # counters reset: the rules came back by restore, not by our run
        after_boot = converge(ctr)
        assert not any(changed(after_boot).values()), after_boot.output

        gone = converge(ctr, state="absent")
        assert all(changed(gone).values()), gone.output
        left = ctr.sh("ls /etc/systemd/system /run/netns 2>/dev/null; ip -j link; ls -R /etc/netconfine 2>/dev/null",
                      check=False).stdout
        assert "netconfine-ns-" not in left and "netconfine-nc" not in left and "ncweb" not in left, left
        assert "ncconv" not in left and "vh-" not in left, left
        assert not any(changed(converge(ctr, state="absent")).values())
        assert "ip saddr 198.51.100.8 drop" in ctr.sh("nft list table inet nctforeign").stdout
    print("real-systemd tier: %.1f s" % (time.monotonic() - start))


if __name__ == "__main__":
    pytest.main([__file__, "-q", "-s"])
