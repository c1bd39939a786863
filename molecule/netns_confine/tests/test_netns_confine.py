"""netns_confine converged on the machine: the daemon's namespace, the host-side rules, and who reaches the daemon.

The lab (vars/lab.yml): the machine's uplink m0 to a client namespace (which also plays the daemon's database).
The daemon answers "uid=N tmp=True|False peer=ADDRESS" (files/daemon.py).
"""

import json
from pathlib import Path

import pytest
import testinfra
import yaml
from netns_listeners import CONNECT, listening_in

LAB = yaml.safe_load((Path(__file__).resolve().parents[1] / "vars" / "lab.yml").read_text())
NAME = LAB["netns_lab_service"]
UPLINK = LAB["netns_lab_uplink"]["address"]
CLIENT = LAB["netns_lab_client"]
INSIDE = LAB["netns_lab_inside"]
PORT, OTHER_PORT, DATABASE_PORT = LAB["netns_lab_port"], LAB["netns_lab_other_port"], LAB["netns_lab_database_port"]
# connects and prints the first line the server sends, or the exception's class name
ASK = ("import socket, sys\n"
       "try:\n"
       "    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)\n"
       "    print(c.makefile().readline().strip())\n"
       "except OSError as e:\n    print(type(e).__name__)")


@pytest.fixture(scope="module")
def client():
    return testinfra.get_host("netns://" + CLIENT["netns"])


@pytest.fixture(scope="module")
def daemon_ns():
    return testinfra.get_host("netns://" + NAME)


@pytest.fixture(scope="module")
def database():
    """The client listens on the database port, and on 80, which the daemon may not reach."""
    with listening_in(CLIENT["netns"], (CLIENT["address"], DATABASE_PORT), (CLIENT["address"], 80)):
        yield


def ask(host, address, port):
    cmd = host.run("python3 -c %s %s %s", ASK, address, str(port))
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


def addresses(host, dev):
    return [a["local"] + "/%d" % a["prefixlen"] for link in json.loads(host.check_output("ip -j addr show dev %s", dev))
            for a in link["addr_info"] if a["family"] == "inet"]


# --------------------------------------------------------------------------- the kernel

def test_the_daemons_namespace_veth_route_and_resolv_conf(host, daemon_ns):
    assert NAME in [ns["name"] for ns in json.loads(host.check_output("ip -j netns list"))]
    assert addresses(host, "vh-" + NAME) == ["192.0.2.1/30"]
    assert addresses(daemon_ns, "vn-" + NAME) == [INSIDE + "/30"]
    (default,) = json.loads(daemon_ns.check_output("ip -j route show default"))
    assert (default["gateway"], default["dev"]) == ("192.0.2.1", "vn-" + NAME)
    assert host.sysctl("net.ipv4.ip_forward") == 1
    assert "nameserver 192.0.2.53" in host.file("/etc/netns/%s/resolv.conf" % NAME).content_string


def rules_of(host):
    """{base chain: [[expression, ...] per rule of the chain it jumps to]} of table inet netconfine, from nft -j."""
    items = json.loads(host.check_output("nft -j list table inet netconfine"))["nftables"]
    rules = {}
    for item in items:
        if "rule" in item:
            rules.setdefault(item["rule"]["chain"], []).append(item["rule"])
    hooked = {}
    for item in items:
        chain = item.get("chain", {})
        if "hook" in chain:
            (jump,) = rules[chain["name"]]
            assert jump["comment"] == "netconfine:netns-" + NAME
            hooked[chain["name"]] = [r["expr"] for r in rules[jump["expr"][-1]["jump"]["target"]]]
    return hooked


def verdicts(rule):
    return [key for expr in rule for key in expr if key in ("accept", "drop", "dnat", "masquerade")]


def test_one_dnat_per_path_the_masquerade_and_a_forward_chain_that_drops_the_rest(host):
    hooked = rules_of(host)
    assert set(hooked) == {"nat_prerouting", "nat_output", "nat_postrouting", "filter_forward"}
    for chain in ("nat_prerouting", "nat_output"):   # remote clients and the host's own
        (dnat,) = hooked[chain]
        assert [e["dnat"] for e in dnat if "dnat" in e] == [{"family": "ip", "addr": INSIDE, "port": PORT}], dnat
    (masquerade,) = hooked["nat_postrouting"]
    assert verdicts(masquerade) == ["masquerade"] and INSIDE in json.dumps(masquerade)
    forward = hooked["filter_forward"]
    assert [verdicts(rule) for rule in forward] == [["accept"]] * 4 + [["drop"]] * 2, forward
    assert '"right": %d' % PORT in json.dumps(forward) and '"right": %d' % OTHER_PORT not in json.dumps(forward)


def test_the_daemons_egress_rules_inside_its_namespace(daemon_ns):
    text = daemon_ns.check_output("nft list table inet netconfine")
    assert "ip daddr %s tcp dport %d accept" % (CLIENT["address"], DATABASE_PORT) in text
    assert "reject with icmp port-unreachable" in text


def test_the_daemon_runs_as_its_user_without_new_privileges(host):
    uid = host.user(LAB["netns_lab_user"]).uid
    pids = host.check_output("ip netns pids %s", NAME).split()
    assert pids, "no process in the daemon's namespace"
    status = [host.file("/proc/%s/status" % pid).content_string for pid in pids]
    daemons = [s for s in status if "\nUid:\t%d\t" % uid in s]
    assert daemons and all("NoNewPrivs:\t1" in s for s in daemons), status


# --------------------------------------------------------------------------- behaviour

def test_the_client_reaches_the_daemon_through_the_forward(host, client):
    uid = host.user(LAB["netns_lab_user"]).uid
    # its own /tmp file is there, the peer is the client itself (DNAT only, no SNAT)
    assert ask(client, UPLINK, PORT) == "uid=%d tmp=True peer=%s" % (uid, CLIENT["address"])
    assert not host.file("/tmp/nctmol-netns-confine-daemon").exists    # the daemon's /tmp is private


def test_a_port_not_forwarded_is_refused_and_the_namespace_is_not_reachable_directly(client):
    assert ask(client, UPLINK, OTHER_PORT) == "ConnectionRefusedError"   # the daemon listens there, no forward
    assert ask(client, INSIDE, OTHER_PORT) == "TimeoutError"             # routed past the forward: dropped


def test_the_daemon_reaches_only_its_database(daemon_ns, database):
    user = LAB["netns_lab_user"]

    def connect(port):
        return daemon_ns.check_output("runuser -u %s -- python3 -c %s %s %s", user, CONNECT, CLIENT["address"],
                                      str(port))
    assert connect(DATABASE_PORT) == "connected"
    assert connect(80) == "ConnectionRefusedError"   # rejected inside the namespace: the client listens on 80
