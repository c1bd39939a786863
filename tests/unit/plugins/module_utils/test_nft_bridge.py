"""nft_bridge.py and the nftables form of bridge_model: golden nft text of the bridge table, the inet variant."""

from __future__ import annotations

import json

from ansible_collections.paranoid.netconfine.plugins.module_utils import bridge_model, model, nft_render, sysctl_state
from ansible_collections.paranoid.netconfine.plugins.module_utils.engine import for_backend
from ansible_collections.paranoid.netconfine.plugins.module_utils.nft_backend import NftablesBackend
from ansible_collections.paranoid.netconfine.plugins.module_utils.nft_bridge import NftBridgeState

from test_bridge_model import DNS, WWW, params

TABLE = "bridge netconfine"


def bridge_lines(policy):
    owned = NftBridgeState(None, "nft").render(for_backend(policy, "nftables"), "bridge")
    return {name: [nft_render.format_rule(json.loads(r)) for r in rules] for name, rules in owned[TABLE].chains}


def test_anti_spoofing_is_one_lookup_per_check_whatever_the_number_of_guests():
    guests = [dict(WWW, name="g%d" % i, port="tap%d" % i, addresses=["198.51.100.%d" % (100 + i)])
              for i in range(100)]
    few = bridge_lines(bridge_model.build_policy(params(guests[:1])))
    many = bridge_lines(bridge_model.build_policy(params(guests)))
    main = [n for n in many if "." not in n][0]
    for chain in (main, main + ".ip", main + ".ip6"):     # the prerouting chain and its per-protocol checks
        assert len(many[chain]) == len(few[chain]), "the number of rules in %s grew with guests" % chain
    assert len(many) == 3 + 4 * 100      # per guest: spoof4, spoof6, rogue and l2 log-and-drop chains, no rules


def test_seed_dns_guest_bridge_table_golden():
    policy = bridge_model.build_policy(params([DNS, dict(WWW, mac="52:54:00:00:00:22")]))
    lines = bridge_lines(policy)
    main = [n for n in lines if "." not in n][0]
    text = "\n".join(lines[main])
    assert 'mark set iifname map { "uml-conn0" : 0x0000' in text
    assert 'iifname . ether saddr != { "uml-conn1" . "52:54:00:00:00:22" }' in text
    # a frame is checked only by the rules of its own protocol: one ether type dispatch
    dispatch = "ether type vmap { arp : goto %s.arp, ip : goto %s.ip, ip6 : goto %s.ip6 }" % (main, main, main)
    assert lines[main][-2] == dispatch
    # a guest may send nothing but untagged IPv4, IPv6 and ARP (VLAN-tagged frames pass no check above)
    assert lines[main][-1] == ('ether type != { arp, ip, ip6 } iifname vmap { "uml-conn0" : goto %s.l2-dns, '
                               '"uml-conn1" : goto %s.l2-www }' % (main, main))
    assert lines[main + ".l2-dns"] == ['limit rate 10/minute counter log prefix "bridge l2 dns: "', "counter drop"]
    assert 'iifname . arp saddr ip != { "uml-conn1" . "0.0.0.0", "uml-conn1" . "198.51.100.22" }' in "\n".join(
        lines[main + ".arp"])
    rogue = 'udp sport 67 iifname vmap { "uml-conn0" : goto %s.rogue-dns, "uml-conn1" : goto %s.rogue-www }'
    assert lines[main + ".ip"][0] == rogue % (main, main)
    text = "\n".join(lines[main + ".ip"] + lines[main + ".ip6"])
    assert ('iifname . ip saddr != { "uml-conn0" . "198.51.100.21", "uml-conn1" . "198.51.100.22" } iifname vmap '
            '{ "uml-conn0" : goto %s.spoof4-dns, "uml-conn1" : goto %s.spoof4-www }' % (main, main)) in text
    assert 'iifname . ip6 saddr != { "uml-conn0" . "fd00:100::21" } iifname vmap' in text
    assert "ip6 saddr fe80::/64 return" in text
    assert lines[main + ".spoof4-dns"] == ['limit rate 10/minute counter log prefix "bridge spoof dns: "',
                                           "counter drop"]
    assert lines[main + ".forward"] == ['oifname vmap { "uml-conn0" : jump %s.mark-dns }' % main]
    # the batch is JSON nft -j -f reads (a singleton concatenation stays a set)
    state = NftBridgeState(None, "nft")
    script = state.script({}, {}, state.render(for_backend(policy, "nftables"), "bridge"))
    assert json.loads(script)["nftables"][0] == {"add": {"table": {"family": "bridge", "name": "netconfine"}}}
    assert '"right": {"set": [{"concat": ["uml-conn1", "52:54:00:00:00:22"]}]}' in script


def test_nftables_variant_matches_ports_by_mark_and_owns_no_guard_chain():
    policy = bridge_model.build_policy(params([DNS, WWW]))
    nft = for_backend(policy, "nftables")
    ipt = for_backend(policy, "iptables")
    assert [c.name for c in ipt.chains if "guard" in c.name or "-g-" in c.name]
    assert not [c.name for c in nft.chains if "guard" in c.name or "-g-" in c.name]
    physdev = [m for c in nft.chains for r in c.rules for m in r.matches if isinstance(m, model.Physdev)]
    assert physdev and all(m.bridge == "br0" and (m.in_mark or m.out_mark) for m in physdev)
    owned = NftablesBackend(None, "nft").render(nft, "ruleset")["inet netconfine"]
    forward = [rules for name, rules in owned.chains if "-forward-" in name][0]
    text = [nft_render.format_rule(json.loads(r)) for r in forward]
    assert len(text) == 3 and text[0].startswith('iifname "br0" meta mark & 0x0000ff00 == 0x0000'), text
    # only the guest with a policy needs br_netfilter; without any, nothing in inet and no sysctl
    bare = for_backend(bridge_model.build_policy(params([WWW])), "nftables")
    assert bare.chains == () and not [r for r in bare.resources if isinstance(r, sysctl_state.Sysctl)]
    # each form carries the other's resources empty, so a backend switch removes them
    assert [r.guards for r in nft.resources if isinstance(r, bridge_model.EtherFilter)] == [()]
    assert [r.ports for r in ipt.resources if isinstance(r, bridge_model.BridgeGuard)] == [()]


def test_marks_are_stable_when_other_guests_come_and_go():
    many = [dict(DNS, name="g%d" % i, port="tap%d" % i, addresses=["198.51.100.%d" % (100 + i)]) for i in range(40)]
    marks = bridge_model._marks(bridge_model._guests(params(many)["guests"], "bridge ", {}))
    fewer = bridge_model._marks(bridge_model._guests(params(many[:10] + many[11:])["guests"], "bridge ", {}))
    assert len(set(marks.values())) == 40 and all(1 <= m <= 255 for m in marks.values())
    moved = [g for g in fewer if fewer[g] != marks[g]]
    assert len(moved) <= 1, moved
