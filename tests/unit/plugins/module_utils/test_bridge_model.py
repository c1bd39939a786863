"""bridge_model.py: uml_bridge_filter parameters -> Policy (golden iptables lines), or an error naming the field."""

from __future__ import annotations

import copy
import os

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils import bridge_model, sysctl_state
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError
from ansible_collections.paranoid.netconfine.plugins.module_utils.iptables_backend import IptablesBackend
from ansible_collections.paranoid.netconfine.plugins.module_utils.netfilter_task import COMMON_ARGS
from ansible_collections.paranoid.netconfine.plugins.modules.uml_bridge_filter import (
    ARGUMENT_SPEC, GUEST_OPTIONS, SERVICE_OPTIONS)


def defaults(spec):
    return {k: v.get("default") for k, v in spec.items()}


def params(guests, **top):
    """Module params the way AnsibleModule hands them over: every option present, defaults filled."""
    spec = dict(COMMON_ARGS)
    spec.update(ARGUMENT_SPEC)
    out = defaults(spec)
    out.update(name="umlhost", bridge="br0", state="rendered")
    out.update(top)
    full = []
    for guest in guests:
        g = dict(defaults(GUEST_OPTIONS), **guest)
        for key in bridge_model.SERVICE_LISTS:
            if g.get(key) is not None:
                g[key] = [dict(defaults(SERVICE_OPTIONS), **e) for e in g[key]]
        full.append(g)
    out["guests"] = full
    return out


DNS = {"name": "dns", "port": "uml-conn0", "addresses": ["198.51.100.21", "fd00:100::21"],
       "inbound": [{"protocol": "udp", "port": "53"}, {"protocol": "tcp", "port": "53"}],
       "outbound": [{"protocol": "udp", "port": "53", "to": ["203.0.113.53"]}],
       "host_access": [{"protocol": "tcp", "port": "22"}]}
WWW = {"name": "www", "port": "uml-conn1", "addresses": ["198.51.100.22"]}


def rendered(policy, family):
    backend = IptablesBackend(None, {4: ("s", "r"), 6: ("s", "r")})
    return backend.render(policy, family)["filter"]


def chain_of(owned, prefix):
    found = [(n, r) for n, r in owned.chains if n.startswith(prefix)]
    assert len(found) == 1, [n for n, _r in owned.chains]
    return found[0]


def test_seed_dns_guest_chains_and_hooks():
    policy = bridge_model.build_policy(params([DNS, WWW]))
    owned = rendered(policy, 4)
    assert [j[0] for j in owned.jumps] == ["FORWARD", "INPUT", "OUTPUT"]
    forward, rules = chain_of(owned, "NC-umlhost-forward-")
    g_dns, _rules = chain_of(owned, "NC-umlhost-g-dns-")
    from_dns, _rules = chain_of(owned, "NC-umlhost-from-dns-")
    to_dns, _rules = chain_of(owned, "NC-umlhost-to-dns-")
    guard, guard_rules = chain_of(owned, "NC-umlhost-guard-")
    assert rules == (
        "-A %s -j %s" % (forward, guard),
        "-A %s -m physdev --physdev-in uml-conn0 -j %s" % (forward, from_dns),
        "-A %s -m physdev --physdev-out uml-conn0 --physdev-is-bridged -j %s" % (forward, to_dns),
        "-A %s -m physdev --physdev-in uml-conn0 -j ACCEPT" % forward,
    )
    assert guard_rules[0] == "-A %s -m physdev --physdev-in uml-conn0 -j %s" % (guard, g_dns)
    assert guard_rules[1].startswith("-A %s -m physdev --physdev-in uml-conn1 -j NC-umlhost-g-www-" % guard)
    assert chain_of(owned, "NC-umlhost-g-dns-")[1] == (
        '-A %s -p udp -m udp --sport 67 -m limit --limit 10/min -j LOG --log-prefix "bridge rogue dns: "' % g_dns,
        "-A %s -p udp -m udp --sport 67 -j DROP" % g_dns,
        "-A %s -s 198.51.100.21/32 -j RETURN" % g_dns,
        '-A %s -m limit --limit 10/min -j LOG --log-prefix "bridge spoof dns: "' % g_dns,
        "-A %s -j DROP" % g_dns,
    )
    assert chain_of(owned, "NC-umlhost-to-dns-")[1] == (
        "-A %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT" % to_dns,
        "-A %s -p udp -m udp --dport 53 -j ACCEPT" % to_dns,
        "-A %s -p tcp -m tcp --dport 53 -j ACCEPT" % to_dns,
        '-A %s -m limit --limit 10/min -j LOG --log-prefix "bridge drop dns: "' % to_dns,
        "-A %s -j DROP" % to_dns,
    )
    assert chain_of(owned, "NC-umlhost-from-dns-")[1][1] == \
        "-A %s -d 203.0.113.53/32 -p udp -m udp --dport 53 -j RETURN" % from_dns
    hout, hout_rules = chain_of(owned, "NC-umlhost-hout-dns-")
    assert chain_of(owned, "NC-umlhost-output-")[1] == (
        "-A %s -d 198.51.100.21/32 -o br0 -j %s" % (chain_of(owned, "NC-umlhost-output-")[0], hout),)
    assert hout_rules[1] == "-A %s -p tcp -m tcp --dport 22 -j ACCEPT" % hout
    # no policy block: anti-spoofing only
    assert not any(n.startswith(("NC-umlhost-to-www", "NC-umlhost-from-www")) for n, _r in owned.chains)
    for name, _r in owned.chains:
        assert len(name) <= 28


def test_ipv6_essentials_and_router_functions():
    owned = rendered(bridge_model.build_policy(params([DNS, WWW])), 6)
    g_dns, rules = chain_of(owned, "NC-umlhost-g-dns-")
    body = [r.split(" ", 2)[2] for r in rules]
    assert body == [
        '-p udp -m udp --sport 547 -m limit --limit 10/min -j LOG --log-prefix "bridge rogue dns: "',
        "-p udp -m udp --sport 547 -j DROP",
        '-p ipv6-icmp -m icmp6 --icmpv6-type 134 -m limit --limit 10/min -j LOG --log-prefix "bridge rogue dns: "',
        "-p ipv6-icmp -m icmp6 --icmpv6-type 134 -j DROP",
        '-p ipv6-icmp -m icmp6 --icmpv6-type 137 -m limit --limit 10/min -j LOG --log-prefix "bridge rogue dns: "',
        "-p ipv6-icmp -m icmp6 --icmpv6-type 137 -j DROP",
        "-s fd00:100::21/128 -j RETURN",
        "-s ::/128 -p ipv6-icmp -m icmp6 --icmpv6-type 133 -j RETURN",
        "-s ::/128 -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j RETURN",
        "-s ::/128 -p ipv6-icmp -m icmp6 --icmpv6-type 143 -j RETURN",
        "-s fe80::/64 -j RETURN",
        '-m limit --limit 10/min -j LOG --log-prefix "bridge spoof dns: "',
        "-j DROP",
    ]
    # www has no IPv6 address: every IPv6 source but :: (DAD) and link-local is spoofed
    _n, www = chain_of(owned, "NC-umlhost-g-www-")
    assert not any("RETURN" in r and "-s fd00" in r for r in www)
    allowed = dict(DNS, allow_dhcp_server=True, allow_router_advertisement=True)
    _n, rules = chain_of(rendered(bridge_model.build_policy(params([allowed])), 6), "NC-umlhost-g-dns-")
    assert not any("rogue" in r for r in rules)


def test_resources_are_the_bridge_sysctls_per_family():
    policy = bridge_model.build_policy(params([DNS], ip_version="ipv4"))
    assert policy.resources[:1] == (sysctl_state.Sysctl("net/bridge/bridge-nf-call-iptables", "1", "br_netfilter",
                                                        "bridge"),)
    # every guest has an ebtables guard (only IPv4, IPv6 and ARP pass), with or without a MAC
    ether = policy.resources[1]
    assert isinstance(ether, bridge_model.EtherFilter) and [(g.port, g.mac) for g in ether.guards] == [("uml-conn0", None)]
    both = bridge_model.build_policy(params([DNS]))
    keys = [r.key for r in both.resources if isinstance(r, sysctl_state.Sysctl)]
    assert keys == ["net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables"]


def test_empty_policy_lists_block_everything_but_established_and_nd():
    guest = {"name": "locked", "port": "tap0", "addresses": ["192.0.2.5"], "inbound": []}
    owned = rendered(bridge_model.build_policy(params([guest])), 4)
    _n, rules = chain_of(owned, "NC-umlhost-to-lock")
    assert [r.split(" ", 2)[2] for r in rules] == [
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        '-m limit --limit 10/min -j LOG --log-prefix "bridge drop locked: "', "-j DROP"]


BAD = [
    ("guests[1].port", lambda g: g[1].update(port="uml-conn1-is-far-too-long")),
    ("guests[1].port", lambda g: g[1].update(port="uml+")),
    ("guests[1].port", lambda g: g[1].update(port="uml*")),
    ("guests[1].port", lambda g: g[1].update(port="uml-conn0")),
    ("guests[1].mac", lambda g: g[1].update(mac="52:54:00:zz:00:01")),
    ("guests[1].mac", lambda g: g[1].update(mac="52-54-00-00-00-01")),
    ("guests[1].mac", lambda g: g[1].update(mac="01:00:5e:00:00:01")),
    ("guests[1].mac", lambda g: g[1].update(mac="ff:ff:ff:ff:ff:ff")),
    ("guests[1].mac", lambda g: g[1].update(mac="00:00:00:00:00:00")),
    ("guests[1].mac", lambda g: (g[0].update(mac="52:54:00:00:00:01"), g[1].update(mac="52:54:00:00:00:01"))),
    ("guests[1].addresses", lambda g: g[1].update(addresses=[])),
    ("guests[1].addresses[0]", lambda g: g[1].update(addresses=["198.51.100.22/24"])),
    ("guests[1].addresses[0]", lambda g: g[1].update(addresses=["1.2.3"])),
    ("guests[1].addresses[0]", lambda g: g[1].update(addresses=["198.51.100.21"])),
    ("guests[1].addresses[1]", lambda g: g[1].update(addresses=["198.51.100.22", "198.51.100.16/28"])),
    ("guests[1].addresses[1]", lambda g: g[1].update(addresses=["198.51.100.22", "198.51.100.22"])),
    ("guests[0].inbound[0].port", lambda g: g[0]["inbound"][0].update(port="53:52")),
    ("guests[0].inbound[0].port", lambda g: g[0]["inbound"][0].update(port="!53")),
    ("guests[0].inbound[0].port", lambda g: g[0]["inbound"][0].update(protocol="icmp")),
    ("guests[0].inbound[0].to", lambda g: g[0]["inbound"][0].update(to=["192.0.2.1"])),
    ("guests[0].outbound[0].from", lambda g: g[0]["outbound"][0].update(**{"from": ["192.0.2.1"]})),
    ("guests[0].outbound[0].to", lambda g: g[0]["outbound"][0].update(to=["!192.0.2.1"])),
    ("guests[0].outbound[0].to", lambda g: g[0]["outbound"][0].update(to=["192.0.2.1/24"])),
    ("guests[1].name", lambda g: g[1].update(name="dns")),
    ("guests[1].name", lambda g: g[1].update(name="a-very-long-guest-name")),
    ("guests[1].name", lambda g: g[1].update(name="bad name")),
]


@pytest.mark.parametrize("field,spoil", BAD, ids=["%s-%d" % (b[0], i) for i, b in enumerate(BAD)])
def test_bad_input_names_the_field(field, spoil):
    guests = copy.deepcopy([DNS, WWW])
    spoil(guests)
    with pytest.raises(NetconfineError) as info:
        bridge_model.build_policy(params(guests))
    assert info.value.field == field, str(info.value)


@pytest.mark.parametrize("top,field", [
    ({"bridge": "br+"}, "bridge"), ({"bridge": None}, "bridge"), ({"log_prefix": 'x"'}, "log_prefix"),
    ({"log_limit": "0/min"}, "log_limit"), ({"log_burst": 0}, "log_burst"),
    ({"log_prefix": "a-prefix-of-twenty "}, "guests[0].name"),
])
def test_bad_task_options_name_the_field(top, field):
    with pytest.raises(NetconfineError) as info:
        bridge_model.build_policy(params([DNS], **top))
    assert info.value.field == field, str(info.value)


def fake_sysfs(tmp_path, ports, bridge="br0"):
    os.makedirs(tmp_path / bridge / "bridge")
    for port, master in ports.items():
        os.makedirs(tmp_path / port)
        if master:
            os.makedirs(tmp_path / master, exist_ok=True)
            os.symlink("../%s" % master, tmp_path / port / "master")
    return str(tmp_path)


def test_ports_must_be_ports_of_the_bridge_when_present(tmp_path):
    sysfs = fake_sysfs(tmp_path, {"uml-conn0": "br0", "uml-conn1": "br1", "eth9": None})
    guests = [DNS, WWW]
    with pytest.raises(NetconfineError) as info:
        bridge_model.build_policy(params(guests, state="present"), sys_class_net=sysfs)
    assert info.value.field == "guests[1].port" and "not a port of bridge br0" in str(info.value)
    with pytest.raises(NetconfineError) as info:
        bridge_model.build_policy(params([dict(WWW, port="tap7")], state="present"), sys_class_net=sysfs)
    assert info.value.field == "guests[0].port" and "does not exist" in str(info.value)
    with pytest.raises(NetconfineError) as info:
        bridge_model.build_policy(params([DNS], state="present", bridge="eth9"), sys_class_net=sysfs)
    assert info.value.field == "bridge"
    assert bridge_model.build_policy(params([DNS], state="present"), sys_class_net=sysfs).present
    # absent and rendered do not look at the host's interfaces
    assert not bridge_model.build_policy(params(guests, state="absent"), sys_class_net=sysfs).present
