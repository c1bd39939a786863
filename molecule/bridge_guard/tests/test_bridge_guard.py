"""bridge_guard converged on the UML host: the kernel's tables, and real traffic between the bridged namespaces.

The lab (vars/lab.yml): br0 in the host's namespace, the guests dns and www and the uplink up in namespaces of their own.
A dropped TCP connection shows as TimeoutError (the SYN never arrives), an accepted one as 'connected'.
"""

import contextlib
import json
from pathlib import Path

import pytest
import testinfra
import yaml
from netns_listeners import CONNECT, listening_in

LAB = yaml.safe_load((Path(__file__).resolve().parents[1] / "vars" / "lab.yml").read_text())
MEMBERS = LAB["bridge_lab"]
FAMILIES = ["ip4", "ip6"]


def member(name):
    return testinfra.get_host("netns://" + MEMBERS[name]["netns"])


@pytest.fixture(scope="module")
def servers():
    """The DNS guest listens on 53, 80 and 22; the uplink on 53 and 80 (both families)."""
    with contextlib.ExitStack() as stack:
        for name, ports in (("dns", (53, 80, 22)), ("up", (53, 80))):
            stack.enter_context(listening_in(MEMBERS[name]["netns"], *[
                (MEMBERS[name][family], port) for family in FAMILIES for port in ports]))
        yield


def connect(host, address, port, source=None):
    cmd = host.run("python3 -c %s %s %s" + (" %s" if source else ""), CONNECT, address, str(port),
                   *([source] if source else []))
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


def bridge_table(host):
    return json.loads(host.check_output("nft -j list table bridge netconfine"))["nftables"]


def chains(table):
    return {item["chain"]["name"]: item["chain"] for item in table if "chain" in item}


def drop_count(host, family, chain_suffix):
    """Packets counted by the drop rule of the bridge table's chain ending in ``chain_suffix``."""
    (name,) = [name for name in chains(bridge_table(host)) if name.endswith(chain_suffix)]
    rules = json.loads(host.check_output("nft -j list chain %s netconfine %s", family, name))["nftables"]
    (drop,) = [rule["rule"] for rule in rules if "rule" in rule and {"drop": None} in rule["rule"]["expr"]]
    return next(expr["counter"]["packets"] for expr in drop["expr"] if "counter" in expr)


# --------------------------------------------------------------------------- the kernel

def test_the_ports_are_on_the_bridge_and_bridged_packets_reach_netfilter(host):
    ports = {link["ifname"] for link in json.loads(host.check_output("ip -j link show master %s",
                                                                     LAB["bridge_lab_bridge"]))}
    assert ports == {m["port"] for m in MEMBERS.values()}
    for family in ("iptables", "ip6tables"):   # the module's preflight: else the rules would be bypassed
        assert host.sysctl("net.bridge.bridge-nf-call-" + family) == 1


def test_one_bridge_table_hooked_first_with_a_log_then_drop_chain_per_guest(host):
    table = bridge_table(host)
    found = chains(table)
    hooks = {c["hook"]: c for c in found.values() if "hook" in c}
    assert set(hooks) == {"prerouting", "forward"}
    assert all(c["policy"] == "accept" and c["prio"] < 0 for c in hooks.values()), hooks   # before filter
    jumps = [item["rule"] for item in table if "rule" in item and item["rule"]["chain"] in
             {c["name"] for c in hooks.values()}]
    assert [rule.get("comment") for rule in jumps] == ["netconfine:bridge_guard"] * 2
    suffixes = {name.split(".", 1)[1] for name in found if "." in name}
    # l2-www too, without a mac: it takes what www may not send at all (VLAN-tagged frames, other ether types)
    assert suffixes >= {"l2-dns", "l2-www", "rogue-dns", "rogue-www", "spoof4-dns", "spoof4-www", "spoof6-dns",
                        "spoof6-www"}


def test_the_dns_guests_services_as_declared(host):
    text = host.check_output("nft list table inet netconfine")
    up4, up6 = MEMBERS["up"]["ip4"], MEMBERS["up"]["ip6"]
    for rule in ("ip daddr %s udp dport 53 return" % up4, "ip daddr %s tcp dport 53 return" % up4,
                 "ip daddr %s udp dport 514 return" % up4, "ip6 daddr %s tcp dport 53 return" % up6,
                 "meta nfproto ipv4 udp dport 53 accept", "meta nfproto ipv6 tcp dport 53 accept",
                 "meta nfproto ipv4 tcp dport 22 accept", 'log prefix "bridge drop dns: "'):
        assert rule in text
    assert "www" not in text   # www has no service policy: anti-spoofing only
    assert "ip6 daddr %s udp dport 514" % up6 not in text   # syslog was declared for IPv4 only


def test_the_rules_are_persisted_for_boot(host):
    persisted = host.file("/etc/netconfine/netns/%s" % host.backend.name)
    assert sorted(persisted.listdir()) == ["bridge_guard.nftables-bridge", "bridge_guard.nftables-ruleset",
                                           "bridge_guard.sysctl-kernel"]


# --------------------------------------------------------------------------- behaviour

@pytest.mark.parametrize(("family", "forged", "chain"), [("ip4", "bridge_lab_forged4", ".spoof4-www"),
                                                         ("ip6", "bridge_lab_forged6", ".spoof6-www")])
def test_a_forged_source_is_dropped_and_counted(host, servers, family, forged, chain):
    www, up = member("www"), MEMBERS["up"][family]
    assert connect(www, up, 80) == "connected"           # www itself is not restricted
    before = drop_count(host, "bridge", chain)
    assert connect(www, up, 80, source=LAB[forged]) == "TimeoutError"
    assert drop_count(host, "bridge", chain) > before


@pytest.mark.parametrize("family", FAMILIES)
def test_the_dns_guest_serves_only_dns(servers, family):
    www, dns = member("www"), MEMBERS["dns"][family]
    assert connect(www, dns, 53) == "connected"
    assert connect(www, dns, 80) == "TimeoutError"


@pytest.mark.parametrize("family", FAMILIES)
def test_the_dns_guest_reaches_only_the_upstream_dns(servers, family):
    dns, up = member("dns"), MEMBERS["up"][family]
    assert connect(dns, up, 53) == "connected"
    assert connect(dns, up, 80) == "TimeoutError"


@pytest.mark.parametrize("family", FAMILIES)
def test_the_host_reaches_the_dns_guest_only_on_ssh(host, servers, family):
    dns = MEMBERS["dns"][family]
    assert connect(host, dns, 22) == "connected"
    assert connect(host, dns, 80) == "TimeoutError"
