"""paranoid.netconfine.netns_service, for real: a machine, an outside client, a daemon in its own namespace.

Topology (all namespaces of this machine; addresses from TEST-NET):

    client ns  c0 198.51.100.2/24 ── m0 198.51.100.1/24  machine ns  vh-NAME 192.0.2.1/30 ── vn-NAME 192.0.2.2/30  NAME

The "machine" is a namespace host whose tasks enter only its network namespace (``files/ip-nsenter-net`` as the
connection's ``ip``): they keep the controller's mount namespace, as a task on a real machine keeps the host's,
so the namespace NAME that the module binds under /run/netns outlives the task. The daemon is a real listener
run by an unprivileged user inside NAME; the client is another namespace. Both backends, one set of tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

import nchelpers
from nchelpers import SYSTEM_PYTHON, ansible_playbook, run, try_connect

IP_NSENTER = Path(__file__).resolve().parent / "files" / "ip-nsenter-net"
BACKENDS = ("iptables", "nftables")
LAUNCHERS = "/usr/local/libexec/netconfine"
PORT = 10105
OTHER_PORT = 10106
UPLINK, CLIENT = "198.51.100.1", "198.51.100.2"
INSIDE = "192.0.2.2"

# Accepts TCP on every address, answers each connection with the peer's address, as the user it runs as.
ECHO_PEER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    c.sendall(("peer=%s\\n" % peer[0]).encode()); c.close()
"""
# Connects, prints what the server said (or the error).
ASK = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    print(c.makefile().readline().strip())
except OSError as e:
    print("error %s" % e.__class__.__name__)
"""


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def site(make_netns, cleanup):
    """(machine ns, client ns, service namespace name): machine and client joined by a veth, the service ns
    name fresh and removed (with its resolv.conf) after the test."""
    machine, client = make_netns(), make_netns()
    run("ip", "link", "add", "m0", "netns", machine, "type", "veth", "peer", "name", "c0", "netns", client)
    run("ip", "-n", machine, "addr", "add", UPLINK + "/24", "dev", "m0")
    run("ip", "-n", machine, "link", "set", "m0", "up")
    run("ip", "-n", client, "addr", "add", CLIENT + "/24", "dev", "c0")
    run("ip", "-n", client, "link", "set", "c0", "up")
    name = nchelpers.new_short_name()

    def remove():
        nchelpers._delete_netns(name)
        subprocess.run(["rm", "-rf", "--", "/etc/netns/" + name, LAUNCHERS + "/ns-" + name], check=False)
    cleanup.callback(remove)
    return machine, client, name


def hosts(machine):
    return {machine: {"ansible_netns_ip_executable": str(IP_NSENTER)}}


def service(machine, args, check=False, diff=False, expect_failure=False):
    play = yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "netns_service", "paranoid.netconfine.netns_service": args}]}], sort_keys=False)
    result = ansible_playbook(play, hosts(machine), check=check, diff=diff)
    task = result.task(machine, "netns_service")
    assert task.failed is expect_failure, result.output
    task.play = result
    return task


def seed_args(name, backend, **extra):
    args = {"name": name, "backend": backend, "subnet": "192.0.2.0/30", "outbound_interface": "m0",
            "dns": ["192.0.2.53"], "port_forwards": [{"protocol": "tcp", "host_port": PORT}]}
    args.update(extra)
    return args


@contextlib.contextmanager
def daemon_in(name, user, port):
    """The seed's daemon: a listener in namespace ``name`` as ``user``."""
    with nchelpers.daemon(name, "runuser", "-u", user, "--", SYSTEM_PYTHON, "-c", ECHO_PEER, str(port),
                          ready="ready"):
        yield


def ask(ns, host, port, user=None):
    drop = ["runuser", "-u", user, "--"] if user else []
    return run(*drop, SYSTEM_PYTHON, "-c", ASK, host, str(port), ns=ns, check=False).stdout.strip()


def host_rules(machine, backend):
    """Everything netfilter holds in the machine (both families), counters dropped."""
    if backend == "iptables":
        return "\n".join(run(cmd, ns=machine).stdout for cmd in ("iptables-save", "ip6tables-save"))
    return run("nft", "list", "ruleset", ns=machine).stdout


def strip_volatile(text):
    return "\n".join(line for line in text.splitlines() if not line.startswith("#") and "[" not in line[:2])


def links_of(machine, name):
    return {"netns": name in run("ip", "netns", "list").stdout.split(),
            "vh": run("ip", "-n", machine, "link", "show", "dev", "vh-" + name, check=False).returncode == 0,
            "resolv": os.path.exists("/etc/netns/%s/resolv.conf" % name)}


# --------------------------------------------------------------------------- the seed's scenario

def test_seed004_daemon_reached_only_through_the_forward_idempotently(site, backend, make_user):
    machine, client, name = site
    user = make_user()
    args = seed_args(name, backend)

    predicted = service(machine, args, check=True, diff=True)
    assert predicted.changed
    assert links_of(machine, name) == {"netns": False, "vh": False, "resolv": False}, "check mode changed nothing"
    assert "ip netns add %s" % name in predicted.result["scripts"]["netns %s" % name]
    assert "vh-%s: address 192.0.2.1/30" % name in predicted.result["diff"]["after"]

    applied = service(machine, args)
    assert applied.changed
    assert applied.result["rendered"] == predicted.result["rendered"]
    assert not service(machine, args, check=True).changed
    again = service(machine, args)
    assert not again.changed, again.result.get("scripts")

    # the namespace: exact links, addresses, routes, resolv.conf
    inside = run("ip", "-n", name, "-j", "addr", "show", "dev", "vn-" + name).stdout
    assert '"local":"192.0.2.2"' in inside
    assert "default via 192.0.2.1 dev vn-%s" % name in run("ip", "-n", name, "route").stdout
    assert "nameserver 192.0.2.53" in Path("/etc/netns/%s/resolv.conf" % name).read_text()
    assert run("cat", "/proc/sys/net/ipv4/ip_forward", ns=machine).stdout.strip() == "1"

    with daemon_in(name, user, PORT), daemon_in(name, user, OTHER_PORT):
        # the outside client reaches the daemon through the forward; the daemon sees the client's address
        assert ask(client, UPLINK, PORT) == "peer=%s" % CLIENT
        # a port that is not forwarded is not reachable, nor is the namespace directly
        assert ask(client, UPLINK, OTHER_PORT) == "error ConnectionRefusedError"
        run("ip", "-n", client, "route", "add", "192.0.2.0/30", "via", UPLINK)
        assert ask(client, INSIDE, OTHER_PORT) == "error TimeoutError"
        assert ask(client, INSIDE, PORT) == "error TimeoutError"
        # a local client of the machine reaches it on the machine's own address, not on loopback
        assert ask(machine, UPLINK, PORT) == "peer=%s" % UPLINK
        assert ask(machine, "127.0.0.1", PORT) == "error ConnectionRefusedError"

    # outbound: the daemon's user reaches the client through NAT (the client sees the machine's address)
    with daemon_in(client, user, 8080):
        assert ask(name, CLIENT, 8080, user=user) == "peer=%s" % UPLINK


def test_localhost_forward_only_when_allowed(site, backend, make_user):
    machine, _client, name = site
    user = make_user()
    assert service(machine, seed_args(name, backend, allow_localhost_forward=True)).changed
    route_localnet = "/proc/sys/net/ipv4/conf/vh-%s/route_localnet" % name
    assert run("cat", route_localnet, ns=machine).stdout.strip() == "1"
    with daemon_in(name, user, PORT):
        assert ask(machine, "127.0.0.1", PORT) == "peer=192.0.2.1"
    refused = service(machine, seed_args(name, backend, port_forwards=[
        {"host_port": PORT, "host_address": "127.0.0.1"}]), expect_failure=True)
    assert refused.result["field"] == "port_forwards[0].host_address"


# --------------------------------------------------------------------------- drift, foreign rules, absent

def test_drift_is_repaired_and_foreign_rules_survive(site, backend):
    machine, _client, name = site
    if backend == "iptables":
        run("iptables", "-A", "FORWARD", "-s", "203.0.113.7", "-j", "DROP", ns=machine)
        run("iptables", "-t", "nat", "-A", "PREROUTING", "-p", "udp", "--dport", "53", "-j", "REDIRECT", ns=machine)
    else:
        run("nft", "add table inet foreign; add chain inet foreign f { type filter hook forward priority 5; }; "
            "add rule inet foreign f ip saddr 203.0.113.7 drop", ns=machine)
    before = strip_volatile(host_rules(machine, backend))
    args = seed_args(name, backend)
    assert service(machine, args).changed

    # a veth address removed by hand
    run("ip", "-n", machine, "addr", "del", "192.0.2.1/30", "dev", "vh-" + name)
    drift = service(machine, args, check=True, diff=True)
    assert drift.changed and "ip addr add 192.0.2.1/30 dev vh-%s" % name in drift.result["scripts"]["netns " + name]
    assert service(machine, args).changed
    assert not service(machine, args).changed
    assert "192.0.2.1/30" in run("ip", "-n", machine, "addr", "show", "dev", "vh-" + name).stdout

    # a DNAT rule deleted by hand
    if backend == "iptables":
        nat = run("iptables-save", "-t", "nat", ns=machine).stdout
        chain = re.search(r"^-A PREROUTING .*-j (NC-\S+)$", nat, re.M).group(1)
        run("iptables", "-t", "nat", "-F", chain, ns=machine)
    else:
        base = run("nft", "list", "chain", "inet", "netconfine", "nat_prerouting", ns=machine).stdout
        chain = re.search(r"jump (NC-\S+)", base).group(1)
        run("nft", "flush", "chain", "inet", "netconfine", chain, ns=machine)
    assert service(machine, args).changed
    assert not service(machine, args).changed
    assert "10105" in host_rules(machine, backend)

    # absent leaves nothing of ours and everything foreign
    gone = service(machine, dict(args, state="absent"))
    assert gone.changed
    assert not service(machine, dict(args, state="absent")).changed
    assert links_of(machine, name) == {"netns": False, "vh": False, "resolv": False}
    assert strip_volatile(host_rules(machine, backend)) == before


# --------------------------------------------------------------------------- hostile input

HOSTILE = [
    ({"name": "../etc"}, "name"),
    ({"name": "a b"}, "name"),
    ({"name": "abcdefghijklm"}, "name"),
    ({"subnet": "192.0.2.1/30"}, "subnet"),
    ({"subnet": "192.0.2.0/31"}, "subnet"),
    ({"port_forwards": [{"host_port": 70000}]}, "port_forwards[0].host_port"),
    ({"port_forwards": [{"host_port": 80}, {"host_port": 80}]}, "port_forwards[1].host_port"),
    ({"dns": ["192.0.2.300"]}, "dns[0]"),
    ({"subnet": "198.51.100.0/30"}, "subnet"),          # collides with the machine's uplink route
]


def test_hostile_input_changes_nothing(site, backend):
    """Every bad input fails naming its field, and the machine is left exactly as it was (one play, one task each)."""
    machine, _client, name = site
    before = strip_volatile(host_rules(machine, backend))
    tasks = [{"name": "bad %d" % i, "paranoid.netconfine.netns_service": dict(seed_args(name, backend), **bad),
              "ignore_errors": True} for i, (bad, _field) in enumerate(HOSTILE)]
    play = ansible_playbook(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": tasks}]),
                            hosts(machine))
    for i, (_bad, field) in enumerate(HOSTILE):
        task = play.task(machine, "bad %d" % i)
        assert task.failed and task.result.get("field") == field, (i, task.result, play.output)
    assert links_of(machine, name) == {"netns": False, "vh": False, "resolv": False}
    assert strip_volatile(host_rules(machine, backend)) == before


def test_overlapping_namespaces_refused(site, backend):
    machine, _client, name = site
    assert service(machine, seed_args(name, backend)).changed
    other = nchelpers.new_short_name()
    try:
        failed = service(machine, seed_args(other, backend, subnet="192.0.2.0/29", port_forwards=[]),
                         expect_failure=True)
        assert failed.result["field"] == "subnet"
        assert "vh-%s" % name in failed.msg
        assert other not in run("ip", "netns", "list").stdout
    finally:
        nchelpers._delete_netns(other)
    assert service(machine, dict(seed_args(name, backend), state="absent")).changed


def test_a_host_port_forwarded_by_another_task_is_refused(site, backend):
    """Two namespaces on one machine: the second may not take the first's host port (on any backend of the
    machine), nothing of it is applied; the first task re-run is no conflict with itself."""
    machine, _client, name = site
    assert service(machine, seed_args(name, backend)).changed
    before = strip_volatile(host_rules(machine, backend))
    other = nchelpers.new_short_name()
    try:
        for other_backend in BACKENDS:     # iptables rules of the first task are seen from an nftables task too
            for check in (True, False):
                failed = service(machine, seed_args(other, other_backend, subnet="192.0.2.4/30", dns=[]),
                                 check=check, expect_failure=True)
                assert failed.result["field"] == "port_forwards[0].host_port", failed.result
                assert "tcp host port %d" % PORT in failed.msg and "netns-%s" % name in failed.msg
        assert other not in run("ip", "netns", "list").stdout
        assert run("ip", "-n", machine, "link", "show", "dev", "vh-" + other, check=False).returncode != 0
        assert strip_volatile(host_rules(machine, backend)) == before
        # another port, or the same port on another address of the host only, is no conflict ...
        args = seed_args(other, backend, subnet="192.0.2.4/30", dns=[],
                         port_forwards=[{"host_port": OTHER_PORT}, {"host_port": PORT, "protocol": "udp"}])
        assert service(machine, args).changed
        # ... and neither task conflicts with itself on a re-run
        assert not service(machine, args).changed
        assert not service(machine, seed_args(name, backend)).changed
        # the first may not take what the second now forwards
        taken = seed_args(name, backend, port_forwards=[{"host_port": PORT}, {"host_port": OTHER_PORT}])
        assert service(machine, taken, expect_failure=True).result["field"] == "port_forwards[1].host_port"
        assert service(machine, dict(args, state="absent")).changed
    finally:
        nchelpers._delete_netns(other)
        subprocess.run(["rm", "-rf", "--", "/etc/netns/" + other], check=False)
    assert service(machine, dict(seed_args(name, backend), state="absent")).changed


def test_refuses_to_bind_from_a_slave_mount_namespace(site, backend):
    """Under plain `ip netns exec` the bind would vanish with the task: the module says so and changes nothing."""
    machine, _client, name = site
    play = yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "netns_service", "paranoid.netconfine.netns_service": seed_args(name, backend)}]}])
    result = ansible_playbook(play, [machine])
    task = result.task(machine, "netns_service")
    assert task.failed and "slave" in task.msg, result.output
    assert links_of(machine, name) == {"netns": False, "vh": False, "resolv": False}


# --------------------------------------------------------------------------- egress inside the namespace

def test_egress_only_where_declared(site, backend, make_user):
    machine, client, name = site
    user = make_user()
    args = seed_args(name, backend, egress=[{"destination": [CLIENT], "protocol": "tcp", "port": "8080"}])
    assert service(machine, args, check=True).changed
    assert service(machine, args).changed
    assert not service(machine, args, check=True).changed
    assert not service(machine, args).changed
    inside = host_rules(name, backend)
    assert "8080" in inside and ("REJECT" in inside or "reject" in inside), inside
    with daemon_in(client, user, 8080), daemon_in(client, user, 8081), daemon_in(name, user, PORT):
        assert ask(name, CLIENT, 8080, user=user) == "peer=%s" % UPLINK       # allowed, through NAT
        assert ask(name, CLIENT, 8081, user=user) == "error ConnectionRefusedError"   # rejected inside
        assert ask(client, UPLINK, PORT) == "peer=%s" % CLIENT                # replies of the forward still flow
    # egress dropped from the task: the namespace's rules go, the rest stays
    without = seed_args(name, backend)
    assert service(machine, without).changed
    assert "8080" not in host_rules(name, backend)
    with daemon_in(client, user, 8081):
        assert ask(name, CLIENT, 8081, user=user) == "peer=%s" % UPLINK
    assert service(machine, dict(args, state="absent")).changed
    assert links_of(machine, name) == {"netns": False, "vh": False, "resolv": False}


# --------------------------------------------------------------------------- the daemon, without systemd

# The daemon of the launcher test: writes a file in its /tmp, then answers each connection with its uid and
# whether it sees that file (its /tmp is private: the host's /tmp must not have it).
TMP_DAEMON = """
import os, socket, sys
path = "/tmp/netconfine-daemon-" + sys.argv[2]
open(path, "w").write("mine")
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
while True:
    c, peer = s.accept()
    c.sendall(("uid=%d tmp=%s\\n" % (os.getuid(), os.path.exists(path))).encode()); c.close()
"""


def test_launcher_runs_the_daemon_in_the_namespace_as_the_user_with_a_private_tmp(site, make_user):
    machine, client, name = site
    user = make_user()
    entry, script = nchelpers.user_file(user, TMP_DAEMON)
    args = seed_args(name, "iptables", service={
        "exec": SYSTEM_PYTHON, "args": [str(script), str(PORT), name], "user": user,
        "working_directory": entry.pw_dir, "start": True})
    assert service(machine, args, check=True).changed
    assert not os.path.exists(LAUNCHERS + "/ns-" + name), "check mode installed nothing"
    first = service(machine, args)
    assert first.changed and "start %s/ns-%s" % (LAUNCHERS, name) in first.result["scripts"]["launcher " + name]
    assert not service(machine, args, check=True).changed
    assert not service(machine, args).changed

    # the outside client reaches the daemon, which runs as the user and sees its own /tmp file
    assert ask(client, UPLINK, PORT) == "uid=%d tmp=True" % entry.pw_uid
    assert not os.path.exists("/tmp/netconfine-daemon-" + name), "the daemon's /tmp is private"
    pids = run("ip", "netns", "pids", name).stdout.split()
    assert len(pids) == 1
    assert os.stat("/proc/%s/ns/net" % pids[0]).st_ino == os.stat("/run/netns/" + name).st_ino
    status = Path("/proc/%s/status" % pids[0]).read_text()
    assert "\nUid:\t%d\t%d\t%d\t%d\n" % ((entry.pw_uid,) * 4) in status
    assert "\nNoNewPrivs:\t1\n" in status

    # restart (the role's handler): a new process though nothing changed; check mode predicts it and changes
    # nothing, a run without restart leaves the process alone
    launcher = "%s/ns-%s" % (LAUNCHERS, name)
    assert service(machine, dict(args, restart=True), check=True).changed
    assert run("ip", "netns", "pids", name).stdout.split() == pids
    again = service(machine, dict(args, restart=True))
    assert again.changed and again.result["scripts"]["launcher " + name].splitlines() == [
        "stop " + launcher, "start " + launcher], again.result
    fresh = run("ip", "netns", "pids", name).stdout.split()
    assert len(fresh) == 1 and fresh != pids
    assert ask(client, UPLINK, PORT) == "uid=%d tmp=True" % entry.pw_uid
    assert not service(machine, args).changed
    assert run("ip", "netns", "pids", name).stdout.split() == fresh
    pids = fresh

    # a changed launcher restarts the daemon; absent stops it and removes everything
    changed = dict(args, service=dict(args["service"], environment={"DAEMON_MODE": "strict"}))
    restarted = service(machine, changed)
    assert restarted.result["scripts"]["launcher " + name].splitlines()[0].startswith("stop ")
    assert run("ip", "netns", "pids", name).stdout.split() != pids
    assert service(machine, dict(changed, state="absent")).changed
    assert not os.path.exists(LAUNCHERS + "/ns-" + name)
    assert links_of(machine, name) == {"netns": False, "vh": False, "resolv": False}
    assert ask(client, UPLINK, PORT).startswith("error")


def test_bad_service_input_names_the_field(site):
    machine, _client, name = site
    cases = [({"exec": "bin/daemon", "user": "nobody"}, "service.exec"),
             ({"exec": "/usr/bin/../bin/x", "user": "nobody"}, "service.exec"),
             ({"exec": "/usr/bin/true", "user": "nct_no_such_user"}, "service.user"),
             ({"exec": "/usr/bin/true", "user": "root"}, "service.user"),
             ({"exec": "/usr/bin/true", "user": "nobody", "environment": {"PATH": "/tmp"}}, "service.environment")]
    tasks = [{"name": "bad %d" % i, "ignore_errors": True,
              "paranoid.netconfine.netns_service": seed_args(name, "iptables", service=svc)}
             for i, (svc, _f) in enumerate(cases)]
    play = ansible_playbook(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": tasks}]),
                            hosts(machine))
    for i, (_svc, field) in enumerate(cases):
        task = play.task(machine, "bad %d" % i)
        assert task.failed and task.result.get("field") == field, (i, task.result)
    assert links_of(machine, name) == {"netns": False, "vh": False, "resolv": False}
    assert not os.path.exists(LAUNCHERS + "/ns-" + name)


# --------------------------------------------------------------------------- issue 24: no network at all

def test_service_without_network_has_loopback_only(site, make_user):
    """Seed 002's `unshare -n`, declared: no subnet -> a namespace with lo only, no host-side rules."""
    machine, client, name = site
    user = make_user()
    entry, script = nchelpers.user_file(user, TMP_DAEMON)
    before = strip_volatile(host_rules(machine, "iptables"))
    args = {"name": name, "backend": "iptables", "service": {
        "exec": SYSTEM_PYTHON, "args": [str(script), str(PORT), name], "user": user, "start": True}}
    first = service(machine, args)
    assert first.changed
    owned = sorted(unit for unit, text in first.result["rendered"].items() if text)
    assert owned == ["launcher " + name, "netns " + name], first.result["rendered"]     # no rules anywhere
    assert not service(machine, args).changed
    assert [link["ifname"] for link in json.loads(run("ip", "-n", name, "-j", "link").stdout)] == ["lo"]
    pid = run("ip", "netns", "pids", name).stdout.split()[0]
    assert os.stat("/proc/%s/ns/net" % pid).st_ino == os.stat("/run/netns/" + name).st_ino
    # loopback works inside; nothing else is reachable, and the host's rules are untouched
    assert ask(name, "127.0.0.1", PORT, user=user) == "uid=%d tmp=True" % entry.pw_uid
    assert try_connect(name, user, CLIENT, PORT) == "unreachable"
    assert try_connect(name, user, UPLINK, PORT) == "unreachable"
    # ... and the probe module, run in that namespace through the netns connection, shows it the same way
    probes = [{"user": user, "host": "127.0.0.1", "port": PORT}, {"user": user, "host": CLIENT, "port": PORT}]
    play = yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "probes", "paranoid.netconfine.probe": {"probes": probes}}]}], sort_keys=False)
    probed = ansible_playbook(play, [name]).task(name, "probes")
    assert [p["outcome"] for p in probed.result["probes"]] == ["connected", "unreachable"], probed.result
    assert "unreachable" in probed.result["probes"][1]["error"].lower(), probed.result
    assert strip_volatile(host_rules(machine, "iptables")) == before
    assert service(machine, dict(args, state="absent")).changed
    assert links_of(machine, name)["netns"] is False
    assert not os.path.exists(LAUNCHERS + "/ns-" + name)
