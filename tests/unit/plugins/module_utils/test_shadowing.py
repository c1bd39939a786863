"""shadowing.py: which layers beside ours can drop what we accept (pure parts), and engine.shadowed_by."""

from __future__ import annotations

import json

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils import engine, model, shadowing
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError
from ansible_collections.paranoid.netconfine.plugins.module_utils.iptables_backend import IptablesBackend, parse_save
from ansible_collections.paranoid.netconfine.plugins.module_utils.nft_backend import NftablesBackend


def policy(*targets, present=True, builtin="OUTPUT"):
    rules = tuple(model.Rule(4, t) for t in targets)
    return model.Policy("t", (model.Chain("filter", "NC-t", rules, model.Hook(builtin)),), present=present)


ACCEPT, REJECT = model.Verdict("ACCEPT"), model.Reject()


@pytest.mark.parametrize(("pol", "expected"), [
    (policy(ACCEPT), True),
    (policy(REJECT, ACCEPT), True),
    (policy(REJECT), False),               # a foreign drop cannot override a reject of ours
    (policy(ACCEPT, present=False), False),
])
def test_only_a_policy_that_accepts_can_be_shadowed(pol, expected):
    assert shadowing.means_to_allow(pol) is expected


LEGACY = parse_save("""*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:old-tool - [0:0]
:counts - [0:0]
-A OUTPUT -p tcp -m tcp --dport 5000 -j REJECT --reject-with tcp-reset
-A OUTPUT -j old-tool
-A OUTPUT -j counts
-A OUTPUT -p udp -j ACCEPT
-A old-tool -d 192.0.2.9/32 -j DROP
-A counts -j LOG
COMMIT
*mangle
:OUTPUT DROP [0:0]
COMMIT
*raw
:OUTPUT ACCEPT [0:0]
-A OUTPUT -j CT --notrack
COMMIT
""")


def test_xtables_deciders_follow_user_chains_and_count_drop_policies():
    assert shadowing.xtables_deciders(LEGACY, ["OUTPUT"]) == [("filter", "OUTPUT", 2), ("mangle", "OUTPUT", 0)]
    assert shadowing.xtables_deciders(LEGACY, ["POSTROUTING"]) == []
    lines = shadowing.describe_xtables("iptables-legacy", 4, [("filter", "OUTPUT", 2), ("mangle", "OUTPUT", 0)])
    assert lines[0].startswith("iptables-legacy table filter (IPv4), chain OUTPUT: 2 rule(s) that drop or reject")
    assert lines[1].startswith("iptables-legacy table mangle (IPv4), chain OUTPUT: policy DROP")


def _ruleset(*tables):
    items = []
    for family, table, chains in tables:
        items.append({"table": {"family": family, "name": table}})
        for name, spec, rules in chains:
            items.append({"chain": dict({"family": family, "table": table, "name": name}, **spec)})
            items += [{"rule": {"family": family, "table": table, "chain": name, "expr": expr}} for expr in rules]
    return items


VMAP = {"key": {"meta": {"key": "skuid"}}, "data": {"set": [[0, {"accept": None}], [1, {"drop": None}]]}}
OUT = {"type": "filter", "hook": "output", "prio": 10, "policy": "accept"}
RULESET = _ruleset(
    ("inet", "fw", [("out", OUT, [[{"jump": {"target": "deny"}}]]), ("deny", {}, [[{"drop": None}]])]),
    ("inet", "netconfine", [("filter_output", dict(OUT, prio=-1), [[{"drop": None}]])]),
    ("ip", "filter", [("OUTPUT", dict(OUT, prio=0), [[{"xt": {"type": "target", "name": "REJECT"}}]])]),
    ("ip6", "v6only", [("out", dict(OUT, policy="drop"), [])]),
    ("inet", "vmap", [("out", OUT, [[{"vmap": VMAP}]])]),
    ("inet", "loop", [("out", OUT, [[{"jump": {"target": "a"}}]]), ("a", {}, [[{"goto": {"target": "out"}}]])]),
    ("inet", "accepts", [("out", OUT, [[{"accept": None}]])]),
    ("inet", "input", [("in", dict(OUT, hook="input"), [[{"drop": None}]])]),
    ("bridge", "l2", [("out", OUT, [[{"drop": None}]])]),
)


def test_nft_deciders_find_drops_and_rejects_at_the_hook_through_jumps_vmaps_and_xt_targets():
    found = shadowing.nft_deciders(RULESET, (4,), ["output"], skip=("inet netconfine",))
    assert [(f, t, c, why) for f, t, c, _h, _p, why, _ours in found] == [
        ("inet", "fw", "out", "rules that drop or reject"),
        ("inet", "vmap", "out", "rules that drop or reject"),
        ("ip", "filter", "OUTPUT", "rules that drop or reject"),
    ]
    six = shadowing.nft_deciders(RULESET, (6,), ["output"], skip=("inet netconfine",) +
                                 tuple(shadowing.xtables_skip(RULESET)))
    assert [(f, t, why) for f, t, _c, _h, _p, why, _ours in six] == [
        ("inet", "fw", "rules that drop or reject"), ("inet", "vmap", "rules that drop or reject"),
        ("ip6", "v6only", "policy drop")]
    assert shadowing.nft_deciders(None, (4, 6), ["output"]) == []


# crueller in the lab before: tunnel_guard on nftables (table inet netconfine), user_egress on iptables-nft
OURS = _ruleset(
    ("inet", "netconfine", [("filter_output", dict(OUT, prio=-1), [[{"jump": {"target": "NC-tunnel-1"}}]]),
                            ("NC-tunnel-1", {}, [[{"reject": None}]])]),
    ("ip", "filter", [("OUTPUT", dict(OUT, prio=0), [[{"jump": {"target": "NC-egress-2"}}], [{"drop": None}]]),
                      ("NC-egress-2", {}, [[{"xt": {"type": "target", "name": "REJECT"}}]])]),
    ("ip", "other", [("OUTPUT", OUT, [[{"drop": None}]])]),
)


def test_nft_deciders_name_the_backend_of_our_own_tasks_and_the_warning_says_what_to_do():
    found = shadowing.nft_deciders(OURS, (4,), ["output"])
    assert [(t, c, ours) for _f, t, c, _h, _p, _why, ours in found] == [
        ("netconfine", "filter_output", "nftables"), ("filter", "OUTPUT", "iptables"), ("other", "OUTPUT", None)]
    lines = shadowing.describe_nft(found, "table inet netconfine")
    assert lines[1].endswith("those are paranoid.netconfine's own rules, of tasks on backend iptables: give every "
                             "task on this host the same backend (the option backend, or the role's <role>_backend) "
                             "to keep them in one layer")
    assert "backend nftables" in lines[0] and "paranoid.netconfine" not in lines[2]
    # the task's own chains on the other backend (a switch of backend removes them in the same run) do not count
    mine = shadowing.nft_deciders(OURS, (4,), ["output"], own=frozenset(["NC-tunnel-1", "NC-egress-2"]))
    assert [(t, c, ours) for _f, t, c, _h, _p, _why, ours in mine] == [
        ("filter", "OUTPUT", None), ("other", "OUTPUT", None)]     # ip filter OUTPUT's own drop is left


class FakeRun:
    def __init__(self, ruleset=(), legacy=None):
        self.ruleset, self.legacy, self.calls = list(ruleset), legacy, []

    def __call__(self, argv, data=None):
        self.calls.append(argv)
        if argv[0].endswith("nft"):
            return 0, json.dumps({"nftables": self.ruleset}), ""
        if "legacy" in argv[0]:
            return 0, self.legacy, ""
        raise AssertionError(argv)


def test_nftables_backend_reports_other_tables_and_legacy_tables(tmp_path):
    names = tmp_path / "ip_tables_names"
    names.write_text("filter\nmangle\n")
    run = FakeRun(RULESET, legacy="*filter\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j DROP\nCOMMIT\n")
    layers = shadowing.Layers(run, parse_save, nft="/usr/sbin/nft", legacy_save={4: "/usr/sbin/iptables-legacy-save"},
                              proc={4: str(names), 6: str(tmp_path / "none")})
    warnings = NftablesBackend(run, "/usr/sbin/nft").shadows(policy(ACCEPT), layers)
    assert [w.split(":")[0] for w in warnings] == [
        "nftables table inet fw, base chain out (hook output, priority 10)",
        "nftables table inet vmap, base chain out (hook output, priority 10)",
        "nftables table ip filter, base chain OUTPUT (hook output, priority 0)",
        "nftables table ip6 v6only, base chain out (hook output, priority 10)",
        "iptables-legacy table filter (IPv4), chain OUTPUT"]
    assert "an accept in table inet netconfine does not override a drop there" in warnings[0]
    warnings_again = NftablesBackend(run, "/usr/sbin/nft").shadows(policy(ACCEPT), layers)
    assert warnings_again == warnings and len(run.calls) == 2      # each layer read once per run


def test_legacy_tables_that_cannot_be_read_are_reported_by_name(tmp_path):
    names = tmp_path / "ip6_tables_names"
    names.write_text("filter\n")
    layers = shadowing.Layers(FakeRun(), parse_save, proc={4: str(tmp_path / "none"), 6: str(names)})
    assert shadowing.legacy_warnings(layers, (4, 6), ["OUTPUT"], "iptables-nft") == [
        "iptables-legacy tables present (IPv6: filter) beside iptables-nft; they see the same packets as ours and "
        "can drop what we accept (install iptables to read them with ip6tables-legacy-save)"]


def test_iptables_nft_skips_its_own_tables_and_legacy_reports_every_nft_table(tmp_path, monkeypatch):
    layers = shadowing.Layers(FakeRun(RULESET), parse_save, nft="/usr/sbin/nft",
                              proc={4: str(tmp_path / "none"), 6: str(tmp_path / "none")})
    backend = IptablesBackend(FakeRun(), {4: ("/sbin/iptables-save", "/sbin/iptables-restore"), 6: None})
    monkeypatch.setattr(backend, "variant", lambda family: "nf_tables")
    v4 = model.Policy("t", policy(ACCEPT).chains, families=(4,))
    tables = [w.split(",")[0] for w in backend.shadows(v4, layers)]
    assert tables == ["nftables table inet fw", "nftables table inet netconfine", "nftables table inet vmap"]
    monkeypatch.setattr(backend, "variant", lambda family: "legacy")
    warnings = backend.shadows(model.Policy("t", policy(ACCEPT).chains, families=(4,)), layers)
    assert [w.split(",")[0] for w in warnings] == tables[:2] + ["nftables table inet vmap", "nftables table ip filter"]
    assert "an accept in iptables-legacy's table does not override" in warnings[0]


def test_shadowed_by_warns_or_fails_before_anything_is_applied():
    class Backend:
        def shadows(self, pol, layers):
            return ["a layer drops"]

    assert engine.shadowed_by(policy(ACCEPT), Backend(), object()) == ["a layer drops"]
    assert engine.shadowed_by(policy(REJECT), Backend(), object()) == []
    assert engine.shadowed_by(policy(ACCEPT), Backend(), None) == []
    with pytest.raises(NetconfineError) as info:
        engine.shadowed_by(policy(ACCEPT), Backend(), object(), fail_on_shadowing=True)
    assert info.value.field == "fail_on_shadowing" and info.value.details["shadowing"] == ["a layer drops"]
    assert "nothing was changed" in str(info.value)
