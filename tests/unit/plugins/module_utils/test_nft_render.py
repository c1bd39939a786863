"""nft_render.py: model -> the rules ``nft list`` prints (golden), the normal form, lookup merging.

The expected lines are what nft 1.0.6 prints for each rule after ``nft -j -f`` of our JSON;
tests/integration/test_owner_rule_nftables.py round-trips the same kinds through the kernel.
A small evaluator below runs rule lists against packets, to prove that merging into sets and
verdict maps keeps first-match semantics.
"""

from __future__ import annotations

import json
import random

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils import model, nft_render, owner_model
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError
from rule_tables import ACCEPT, DROP, RETURN, C, R, n


def both(target=ACCEPT, *matches, **kw):
    return [R(4, target, *matches, **kw), R(6, target, *matches, **kw)]


def lines(rules, name=C):
    """Every chain rendered for ``rules`` as {chain: [nft lines]}."""
    chains = nft_render.render_chain(model.Chain("filter", name, tuple(rules)))
    return {chain: [nft_render.format_rule(r) for r in body] for chain, body in chains}


def main(rules):
    return lines(rules)[C]


TCP992 = model.Ports("tcp", dport=(992, 992))

GOLDEN = [
    # one family: meta nfproto, unless something else already says the family
    ([R(4)], ["meta nfproto ipv4 accept"]),
    ([R(6, DROP)], ["meta nfproto ipv6 counter drop"]),
    ([R(4, DROP, destination=n("127.0.0.1/32"))], ["ip daddr 127.0.0.1 counter drop"]),
    ([R(6, DROP, destination=n("::1/128"))], ["ip6 daddr ::1 counter drop"]),
    ([R(4, DROP, source=n("192.0.2.0/24"), source_negate=True)], ["ip saddr != 192.0.2.0/24 counter drop"]),
    ([R(6, DROP, destination=n("::ffff:192.0.2.1/128"))], ["ip6 daddr ::ffff:192.0.2.1 counter drop"]),
    ([R(4, DROP, destination=n("0.0.0.0/0"))], ["meta nfproto ipv4 counter drop"]),
    # both families of one rule: one inet rule
    (both(DROP), ["counter drop"]),
    (both(DROP, out_interface="veth+", out_interface_negate=True), ['oifname != "veth*" counter drop']),
    (both(DROP, out_interface="lo"), ['oifname "lo" counter drop']),
    (both(DROP, protocol="udp"), ["meta l4proto udp counter drop"]),
    (both(DROP, TCP992, protocol="tcp"), ["tcp dport 992 counter drop"]),
    (both(DROP, model.Ports("tcp", sport=(1024, 65535), dport=(22, 22), dport_negate=True), protocol="tcp"),
     ["tcp sport 1024-65535 tcp dport != 22 counter drop"]),
    (both(DROP, model.Ports("udp", dport=(0, 65535)), protocol="udp"), ["meta l4proto udp counter drop"]),
    (both(DROP, model.Ports("sctp", dport=(1, 2)), protocol="sctp"), ["sctp dport 1-2 counter drop"]),
    # ICMP: names as nft prints them; the protocol implies the family
    ([R(4, ACCEPT, model.Icmp(4, "8"), protocol="icmp")], ["icmp type echo-request accept"]),
    ([R(4, ACCEPT, model.Icmp(4, "3/3"), protocol="icmp")],
     ["icmp type destination-unreachable icmp code port-unreachable accept"]),
    ([R(4, ACCEPT, model.Icmp(4, "3/7"), protocol="icmp")], ["icmp type destination-unreachable icmp code 7 accept"]),
    ([R(4, ACCEPT, model.Icmp(4, "200"), protocol="icmp")], ["icmp type 200 accept"]),
    ([R(4, ACCEPT, model.Icmp(4, "any"), protocol="icmp")], ["meta l4proto icmp accept"]),
    ([R(4, DROP, model.Icmp(4, "8", negate=True), protocol="icmp")], ["icmp type != echo-request counter drop"]),
    # '! any' matches nothing, on iptables too
    ([R(4, DROP, model.Icmp(4, "any", negate=True), protocol="icmp")], ["icmp type != 0-255 counter drop"]),
    ([R(6, DROP, model.Icmp(6, "any", negate=True), protocol="ipv6-icmp")], ["icmpv6 type != 0-255 counter drop"]),
    ([R(6, ACCEPT, model.Icmp(6, "128"), protocol="ipv6-icmp")], ["icmpv6 type echo-request accept"]),
    ([R(6, ACCEPT, model.Icmp(6, "135"), protocol="ipv6-icmp")], ["icmpv6 type nd-neighbor-solicit accept"]),
    ([R(6, ACCEPT, model.Icmp(6, "1/4"), protocol="ipv6-icmp")],
     ["icmpv6 type destination-unreachable icmpv6 code port-unreachable accept"]),
    ([R(6, ACCEPT, protocol="ipv6-icmp")], ["meta l4proto ipv6-icmp accept"]),
    # destination type: one fib lookup covers both families (no meta nfproto)
    (both(DROP, TCP992, model.DestinationType(), protocol="tcp"), ["tcp dport 992 fib daddr type local counter drop"]),
    ([R(6, DROP, model.DestinationType(negate=True))], ["meta nfproto ipv6 fib daddr type != local counter drop"]),
    (both(model.Reject("tcp-reset"), TCP992, model.DestinationType(), protocol="tcp"),
     ["tcp dport 992 fib daddr type local counter reject with tcp reset"]),
    # owner
    (both(ACCEPT, model.Owner(uid=(0, 0))), ["meta skuid 0 accept"]),
    (both(ACCEPT, model.Owner(uid=(1000, 1999))), ["meta skuid 1000-1999 accept"]),
    (both(ACCEPT, model.Owner(gid=(27, 27))), ["meta skgid 27 accept"]),
    (both(ACCEPT, model.Owner(uid=(0, 0), gid=(5, 5), gid_negate=True)), ["meta skuid 0 meta skgid != 5 accept"]),
    (both(ACCEPT, model.Owner(socket_exists=True)), ["meta skuid 0-4294967295 accept"]),
    (both(DROP, model.Owner(uid=(0, 0), uid_negate=True, socket_exists=True)),
     ["meta skuid 0-4294967295 meta skuid != 0 counter drop"]),
    # supplementary groups: the effective group, or else one of the members
    (both(ACCEPT, model.Owner(gid=(27, 27), suppl_groups=True, gid_members=(1000, 1001, 1003))),
     ["meta skgid 27 accept", "meta skgid != 27 meta skuid { 1000-1001, 1003 } accept"]),
    (both(ACCEPT, model.Owner(gid=(27, 27), suppl_groups=True)), ["meta skgid 27 accept"]),
    # conntrack, limit, comment, log, reject
    (both(ACCEPT, model.Conntrack(("RELATED", "ESTABLISHED"))), ["ct state established,related accept"]),
    (both(ACCEPT, model.Conntrack(("NEW",))), ["ct state new accept"]),
    (both(ACCEPT, model.Conntrack(("SNAT",))), ["ct status snat accept"]),
    (both(ACCEPT, model.Limit(5, "min")), ["limit rate 5/minute accept"]),
    (both(ACCEPT, model.Limit(1, "sec", 10)), ["limit rate 1/second burst 10 packets accept"]),
    (both(ACCEPT, model.Owner(uid=(0, 0)), model.Comment("root ok")), ['meta skuid 0 accept comment "root ok"']),
    (both(model.Log()), ["counter log"]),
    (both(model.Log("root-egress: ", 6)), ['counter log prefix "root-egress: " level info']),
    (both(model.Log(None, 0)), ["counter log level emerg"]),
    (both(model.Reject()), ["counter reject"]),
    (both(model.Reject("admin-prohibited")), ["counter reject with icmpx admin-prohibited"]),
    (both(model.Reject("net-unreachable")), ["counter reject with icmpx no-route"]),
    (both(model.Reject("tcp-reset"), protocol="tcp"), ["meta l4proto tcp counter reject with tcp reset"]),
    (both(model.Reject("host-prohibited")),
     ["meta nfproto ipv4 counter reject with icmp host-prohibited", "meta nfproto ipv6 counter reject with icmpv6 admin-prohibited"]),
    (both(model.Reject("proto-unreachable")),
     ["meta nfproto ipv4 counter reject with icmp prot-unreachable", "meta nfproto ipv6 counter reject with icmpv6 port-unreachable"]),
    # one-family rejects say their family without meta nfproto (nft's listing hides it there)
    ([R(4, model.Reject())], ["meta nfproto ipv4 counter reject with icmp port-unreachable"]),
    ([R(6, model.Reject("host-unreachable"))], ["meta nfproto ipv6 counter reject with icmpv6 addr-unreachable"]),
    ([R(4, model.Reject("tcp-reset"), protocol="tcp")], ["ip version 4 meta l4proto tcp counter reject with tcp reset"]),
    ([R(6, model.Reject("tcp-reset"), TCP992, protocol="tcp")], ["ip6 version 6 tcp dport 992 counter reject with tcp reset"]),
    ([R(4, model.Reject("tcp-reset"), TCP992, protocol="tcp", destination=n("127.0.0.1/32"))],
     ["ip daddr 127.0.0.1 tcp dport 992 counter reject with tcp reset"]),
    # verdicts
    (both(RETURN, model.Owner(uid=(0, 0))), ["meta skuid 0 return"]),
    (both(model.Jump("NC-other-00000000")), ["jump NC-other-00000000"]),
]


@pytest.mark.parametrize(("rules", "expected"), GOLDEN, ids=[" | ".join(e) for _r, e in GOLDEN])
def test_golden(rules, expected):
    assert main(rules) == expected


def test_seed_000_negated_owner_jumps_to_a_helper_that_returns_for_root():
    """xt_owner's '! --uid-owner 0' also matches packets without a socket; 'meta skuid != 0' never does."""
    rules = [R(4, model.Reject(), TCP992, model.Owner(uid=(0, 0), uid_negate=True), protocol="tcp",
               destination=n("127.0.0.1/32")),
             R(6, model.Reject(), TCP992, model.Owner(uid=(0, 0), uid_negate=True), protocol="tcp",
               destination=n("::1/128"))]
    assert lines(rules) == {
        C: ["ip daddr 127.0.0.1 tcp dport 992 jump %s.1" % C, "ip6 daddr ::1 tcp dport 992 jump %s.2" % C],
        C + ".1": ["meta skuid 0 return", "meta nfproto ipv4 counter reject with icmp port-unreachable"],
        C + ".2": ["meta skuid 0 return", "meta nfproto ipv6 counter reject with icmpv6 port-unreachable"],
    }


def test_helpers_are_shared_when_identical():
    rule = both(model.Reject(), model.Owner(uid=(0, 0), uid_negate=True))
    assert lines(rule + rule) == {C: ["jump %s.1" % C, "jump %s.1" % C],
                                  C + ".1": ["meta skuid 0 return", "counter reject"]}


def test_negated_supplementary_group_returns_for_group_and_members():
    owner = model.Owner(gid=(27, 27), gid_negate=True, suppl_groups=True, gid_members=(1000,))
    assert lines(both(model.Reject("tcp-reset"), owner, protocol="tcp")) == {
        C: ["meta l4proto tcp jump %s.1" % C],
        C + ".1": ["meta skgid 27 return", "meta skuid 1000 return", "meta l4proto tcp counter reject with tcp reset"]}


def test_what_follows_the_owner_match_moves_into_the_helper():
    """A limit after a negated owner only spends tokens on packets the owner match lets through."""
    rules = both(model.Log("x "), model.Owner(uid=(0, 0), uid_negate=True), model.Limit(5, "min"))
    assert lines(rules) == {C: ["jump %s.1" % C],
                            C + ".1": ["meta skuid 0 return", 'limit rate 5/minute counter log prefix "x "']}


def test_socket_exists_false_matches_only_socketless_packets():
    assert lines(both(DROP, model.Owner(socket_exists=False))) == {
        C: ["jump %s.1" % C], C + ".1": ["meta skuid 0-4294967295 return", "counter drop"]}


def test_return_with_negated_owner_splits_the_chain():
    rules = (both(ACCEPT, model.Owner(uid=(5, 5))) + both(RETURN, model.Owner(uid=(0, 0), uid_negate=True))
             + both(DROP, model.Owner(uid=(7, 7))))
    assert lines(rules) == {
        C: ["meta skuid 5 accept", "meta skuid 0 goto %s.1" % C, "return", "goto %s.1" % C],
        C + ".1": ["meta skuid 7 counter drop"]}


def test_negated_icmp_type_with_code_excludes_the_pair():
    rules = [R(4, DROP, model.Icmp(4, "3/3", negate=True), protocol="icmp")]
    assert lines(rules) == {
        C: ["meta l4proto icmp jump %s.1" % C],
        C + ".1": ["icmp type destination-unreachable icmp code port-unreachable return", "counter drop"]}


def test_mixed_snat_and_states_is_refused():
    with pytest.raises(NetconfineError) as err:
        main(both(ACCEPT, model.Conntrack(("NEW", "SNAT"))))
    assert err.value.field == "ctstate"


# ---------------------------------------------------------------- merging into sets and verdict maps

def owner_port(uid, port, target=ACCEPT, proto="udp"):
    return both(target, model.Ports(proto, dport=(port, port)), model.Owner(uid=(uid, uid)), protocol=proto)


def test_different_verdicts_become_one_verdict_map():
    rules = owner_port(100, 53) + owner_port(101, 54, DROP) + owner_port(102, 55, RETURN)
    # a verdict-map element cannot carry a counter: a counted drop is a goto to a chain that counts and drops
    assert lines(rules) == {
        C: ["udp dport . meta skuid vmap { 53 . 100 : accept, 54 . 101 : goto %s.1, 55 . 102 : return }" % C],
        C + ".1": ["counter drop"]}


def test_a_run_of_drops_is_one_counted_set_lookup():
    rules = owner_port(100, 53, DROP) + owner_port(101, 53, DROP)
    assert lines(rules) == {C: ["udp dport 53 meta skuid 100-101 counter drop"]}


def test_one_verdict_becomes_a_set_and_constant_dimensions_stay_matches():
    rules = owner_port(0, 273, proto="tcp") + owner_port(0, 274, proto="tcp") + owner_port(0, 992, proto="tcp")
    assert main(rules) == ["meta skuid 0 tcp dport { 273-274, 992 } accept"]


def test_a_thousand_owners_are_one_lookup():
    rules = [r for i in range(1000) for r in owner_port(20000 + i, 20000 + i)]
    out = main(rules)
    assert len(out) == 1 and out[0].startswith("udp dport . meta skuid { 20000 . 20000, ")


@pytest.mark.parametrize(("rules", "expected"), [
    # overlapping keys: the first rule must win, so they are not merged
    (both(ACCEPT, model.Owner(uid=(1, 5))) + both(DROP, model.Owner(uid=(3, 3))),
     ["meta skuid 1-5 accept", "meta skuid 3 counter drop"]),
    # a LOG does not end the chain
    (both(model.Log(), model.Owner(uid=(1, 1))) + both(model.Log(), model.Owner(uid=(2, 2))),
     ["meta skuid 1 counter log", "meta skuid 2 counter log"]),
    # a limit is a token bucket per rule: never shared
    (both(ACCEPT, model.Owner(uid=(1, 1)), model.Limit(5, "min")) +
     both(ACCEPT, model.Owner(uid=(2, 2)), model.Limit(5, "min")),
     ["meta skuid 1 limit rate 5/minute accept", "meta skuid 2 limit rate 5/minute accept"]),
    # comments stay with their rule
    (both(ACCEPT, model.Owner(uid=(1, 1)), model.Comment("a")) + both(ACCEPT, model.Owner(uid=(2, 2))),
     ['meta skuid 1 accept comment "a"', "meta skuid 2 accept"]),
    # other matches differ
    (both(ACCEPT, model.Owner(uid=(1, 1)), out_interface="lo") + both(ACCEPT, model.Owner(uid=(2, 2))),
     ['oifname "lo" meta skuid 1 accept', "meta skuid 2 accept"]),
    # a single rule stays a rule
    (both(ACCEPT, model.Owner(uid=(1, 1))), ["meta skuid 1 accept"]),
], ids=["overlap", "log", "limit", "comment", "shape", "single"])
def test_not_merged_where_order_or_state_could_matter(rules, expected):
    assert main(rules) == expected


def test_runs_are_merged_separately_around_a_rule_that_cannot_be():
    rules = (both(ACCEPT, model.Owner(uid=(1, 1))) + both(DROP, model.Owner(uid=(2, 2)))
             + both(model.Log(), model.Owner(uid=(3, 3)))
             + both(ACCEPT, model.Owner(uid=(1, 1))) + both(ACCEPT, model.Owner(uid=(4, 4))))
    assert lines(rules) == {C: ["meta skuid vmap { 1 : accept, 2 : goto %s.1 }" % C, "meta skuid 3 counter log",
                                "meta skuid { 1, 4 } accept"],
                            C + ".1": ["counter drop"]}


def test_a_long_run_is_checked_for_overlaps_without_comparing_every_pair(monkeypatch):
    calls = []
    disjoint = nft_render._disjoint
    monkeypatch.setattr(nft_render, "_disjoint", lambda a, b: calls.append(1) or disjoint(a, b))
    rules = [r for i in range(3000) for r in owner_port(20000 + i, 10000 + i)]
    out = main(rules)
    assert len(out) == 1 and out[0].count(" . ") == 1 + 3000  # the key, then one per element
    assert calls == []  # single ids and ports: a set lookup each, not 4.5 million box comparisons


@pytest.mark.parametrize("seed", range(30))
def test_run_disjointness_is_the_pairwise_test(seed):
    rng = random.Random(seed)

    def box():
        out = []
        for _round in range(2):
            low = rng.randint(0, 6)
            out.append((low, low + rng.choice((0, 0, 0, 1, 3))))
        return tuple(out)

    boxes = [box()]
    run = nft_render._Run(boxes[0])
    for _round in range(25):
        new = box()
        expected = all(nft_render._disjoint(new, old) for old in boxes)
        assert run.disjoint(new) == expected, (new, boxes)
        if expected:
            run.add(new)
            boxes.append(new)


# A tiny evaluator of our rule dicts: enough to run chains before and after merging.

def _left_value(left, packet):
    if "concat" in left:
        return tuple(_left_value(x, packet) for x in left["concat"])
    if "meta" in left:
        return packet[left["meta"]["key"]]
    return packet[left["payload"]["protocol"] + " " + left["payload"]["field"]]


def _contains(right, value):
    if isinstance(right, dict) and "set" in right:
        return any(_contains(e, value) for e in right["set"])
    if isinstance(right, dict) and "concat" in right:
        return all(_contains(r, v) for r, v in zip(right["concat"], value))
    if isinstance(right, dict) and "range" in right:
        return right["range"][0] <= value <= right["range"][1]
    return right == value


def evaluate(rules, packet, chains=None):
    """The verdict of ``rules`` for ``packet``; a goto / jump continues in ``chains[target]``."""
    for rule in rules:
        verdict = None
        for expr in rule["expr"]:
            if "match" in expr:
                m = expr["match"]
                hit = _contains(m["right"], _left_value(m["left"], packet))
                if hit != (m["op"] == "=="):
                    break
            elif "vmap" in expr:
                value = _left_value(expr["vmap"]["key"], packet)
                found = [v for k, v in expr["vmap"]["data"]["set"] if _contains(k, value)]
                assert len(found) <= 1, "overlapping verdict-map keys"
                if not found:
                    break
                verdict = next(iter(found[0]))
                if verdict in ("goto", "jump"):
                    verdict = evaluate(chains[found[0][verdict]["target"]], packet, chains)
            elif "counter" in expr:
                continue
            else:
                verdict = next(iter(expr))
        else:
            if verdict is not None:
                return verdict
    return "fall-through"


@pytest.mark.parametrize("seed", range(40))
def test_merging_keeps_first_match_semantics(seed):
    rng = random.Random(seed)
    rules = []
    for _rule in range(rng.randint(1, 30)):
        low = rng.randint(0, 12)
        uid = (low, low + rng.choice((0, 0, 0, 2)))
        port = rng.choice((53, 54, 55))
        target = rng.choice((ACCEPT, DROP, RETURN))
        rules.append(R(4, target, model.Ports("udp", dport=(port, port)), model.Owner(uid=uid), protocol="udp"))
    chain = model.Chain("filter", C, tuple(rules))
    plain = nft_render.render_chain(chain, merge=False)[0][1]
    chains = dict(nft_render.render_chain(chain))
    merged = chains[C]
    for uid in range(0, 16):
        for port in (52, 53, 54, 55):
            packet = {"skuid": uid, "udp dport": port, "nfproto": "ipv4"}
            assert evaluate(merged, packet, chains) == evaluate(plain, packet), (uid, port, merged)


# ---------------------------------------------------------------- normal form

@pytest.mark.parametrize(("read", "rendered"), [
    ({"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": {"set": [7, 5, {"range": [1, 4]}]}}},
     {"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": {"set": [{"range": [1, 5]}, 7]}}}),
    ({"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": {"set": [{"range": [1, 10]}]}}},
     {"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": {"range": [1, 10]}}}),
    ({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["related", "established"]}},
     {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}),
    ({"vmap": {"key": {"meta": {"key": "skuid"}}, "data": {"set": [[2, {"drop": None}], [1, {"accept": None}]]}}},
     {"vmap": {"key": {"meta": {"key": "skuid"}}, "data": {"set": [[1, {"accept": None}], [2, {"drop": None}]]}}}),
], ids=["set-order-and-adjacent-ranges", "one-element-set", "ct-state-order", "vmap-order"])
def test_normalise_undoes_what_nft_reorders(read, rendered):
    listed = {"family": "inet", "table": "netconfine", "chain": C, "handle": 7, "expr": [read, {"accept": None}]}
    ours = {"expr": [rendered, {"accept": None}]}
    assert nft_render.canonical(nft_render.normalise(listed)) == nft_render.canonical(nft_render.normalise(ours))


def test_rendered_rules_are_json_nft_accepts():
    rule = nft_render.render_chain(model.Chain("filter", C, tuple(both(ACCEPT, model.Owner(uid=(0, 0))))))[0][1][0]
    assert rule == {"expr": [{"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": 0}},
                             {"accept": None}]}


@pytest.mark.parametrize(("table", "builtin", "position", "expected"), [
    ("filter", "OUTPUT", "first", ("filter_output", "filter", "output", -1)),
    ("filter", "OUTPUT", "last", ("filter_output_last", "filter", "output", 1)),
    ("mangle", "OUTPUT", "first", ("mangle_output", "route", "output", -151)),
    ("mangle", "POSTROUTING", "first", ("mangle_postrouting", "filter", "postrouting", -151)),
    ("nat", "OUTPUT", "first", ("nat_output", "nat", "output", -101)),
    ("nat", "POSTROUTING", "first", ("nat_postrouting", "nat", "postrouting", 99)),
])
def test_base_chains_have_explicit_priorities(table, builtin, position, expected):
    assert tuple(nft_render.base_chain(table, builtin, position)) == expected


# ---------------------------------------------------------------- hostile input

HOSTILE = ['a"b', "a\nb", "a;b", "a}b", "a#b", "a{b", "a'b", "a\\b", "a\x00b", "a$b"]


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
@pytest.mark.parametrize(("key", "extra"), [
    ("comment", {}), ("log_prefix", {"jump": "LOG"}), ("out_interface", {}), ("cgroup", {}),
])
def test_hostile_text_is_refused_naming_the_field(key, extra, value):
    rule = {"jump": "ACCEPT", key: value}
    rule.update(extra)
    with pytest.raises(NetconfineError) as err:
        owner_model.build_policy({"name": "t", "rules": [rule]})
    assert err.value.field == "rules[0].%s" % key


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_hostile_task_name_is_refused(value):
    with pytest.raises(NetconfineError) as err:
        owner_model.build_policy({"name": value, "rules": []})
    assert err.value.field == "name"


def test_even_text_that_slipped_through_cannot_leave_its_json_string():
    """Defence in depth: the batch is JSON, so a quote in a comment stays inside the comment."""
    rules = both(ACCEPT, model.Comment('x" ; flush ruleset ; #'))
    rule = nft_render.render_chain(model.Chain("filter", C, tuple(rules)))[0][1][0]
    assert json.loads(json.dumps(rule))["comment"] == 'x" ; flush ruleset ; #'


@pytest.mark.parametrize("value", [0, 65535, {"concat": [10000, 20000]}, {"concat": [1, "lo"]}, {"range": [1, 9]},
                                   "eth0", {"concat": [{"range": [1, 2]}, 3]}, [1, 2], True, {"concat": [True, 1]}])
def test_sort_keys_are_the_json_text_of_the_element(value):
    assert nft_render._sort_key(value) == json.dumps(value, sort_keys=True)
