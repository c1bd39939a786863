"""nft_bridge's conntrack form (the service policy in the bridge table) and the choice of form (fake nft runner)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils import bridge_model, nft_render, sysctl_state
from ansible_collections.paranoid.netconfine.plugins.module_utils.engine import for_backend
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError
from ansible_collections.paranoid.netconfine.plugins.module_utils.nft_backend import NftablesBackend, NftChain, NftTable
from ansible_collections.paranoid.netconfine.plugins.module_utils.nft_bridge import (
    CONNTRACK_PROBE, INET_PROBE, NftBridgeState, choose_form)

from test_bridge_model import DNS, WWW, params

TABLE = "bridge netconfine"
OUTBOUND = {"outbound": [{"protocol": "udp", "port": "53", "to": ["198.51.100.23", "fd00:100::23"]}],
            "host_access": [{"protocol": "tcp", "port": "22"}], "host_services": [{"protocol": "tcp", "port": "8053"}]}


def conntrack(policy):
    return for_backend(policy.with_form("nftables", "conntrack"), "nftables")


def lines(policy):
    owned = NftBridgeState(None, "nft").render(policy, "bridge")[TABLE]
    chains = {name: [nft_render.format_rule(json.loads(r)) for r in rules] for name, rules in owned.chains}
    jumps = {base: nft_render.format_rule(json.loads(rule)) for base, rule, _placement in owned.jumps}
    return chains, jumps, owned


def test_conntrack_form_golden_dispatch_by_port_and_policy_chains_in_the_bridge_table():
    policy = conntrack(bridge_model.build_policy(params([dict(DNS, **OUTBOUND), WWW])))
    chains, jumps, owned = lines(policy)
    main = [n for n in chains if "." not in n][0]
    assert [b[0] for b in owned.bases] == ["bridge_forward", "bridge_input", "bridge_output", "bridge_prerouting"]
    assert [b[3] for b in owned.bases] == [-201] * 4
    assert jumps["bridge_input"] == 'jump %s.input comment "netconfine:umlhost"' % main
    assert chains[main + ".forward"] == [
        'meta protocol { ip, ip6 } iifname vmap { "uml-conn0" : jump %s.from-dns }' % main,
        'meta protocol { ip, ip6 } oifname vmap { "uml-conn0" : jump %s.to-dns }' % main,
        'meta protocol { ip, ip6 } iifname "uml-conn0" accept']
    assert chains[main + ".input"] == ['meta protocol { ip, ip6 } iifname vmap { "uml-conn0" : jump %s.hostin-dns }'
                                       % main]
    assert chains[main + ".output"] == ['meta protocol { ip, ip6 } oifname vmap { "uml-conn0" : jump '
                                        '%s.hostout-dns }' % main]
    # the same model rules as the other forms: established first (both families in one rule), ND, services, log, drop
    assert chains[main + ".from-dns"] == [
        "ct state established,related return",
        "ip daddr 198.51.100.23 udp dport 53 return",
        "icmpv6 type nd-router-solicit return", "icmpv6 type nd-router-advert return",
        "icmpv6 type nd-neighbor-solicit return", "icmpv6 type nd-neighbor-advert return",
        "icmpv6 type mld2-listener-report return",
        "ip6 daddr fd00:100::23 udp dport 53 return",
        'limit rate 10/minute counter log prefix "bridge drop dns: "', "counter drop"]
    assert chains[main + ".to-dns"][-4:-2] == ["udp dport 53 accept", "tcp dport 53 accept"]
    assert "tcp dport 22 accept" in chains[main + ".hostout-dns"]
    assert "tcp dport 8053 accept" in chains[main + ".hostin-dns"]
    # no marks anywhere, no policy chains for the guest without a policy, nothing in inet
    text = json.dumps(chains)
    assert "mark" not in text and "nfproto" not in text and "-www" not in "".join(
        n for n in chains if n.rsplit(".", 1)[-1].startswith(("from", "to", "host")))
    assert policy.chains == () and NftablesBackend(None, "nft").render(policy, "ruleset") == {}


def test_conntrack_form_one_family_says_it_with_meta_protocol():
    policy = conntrack(bridge_model.build_policy(params([dict(DNS, inbound=[{"protocol": "tcp"}])],
                                                        ip_version="ipv4")))
    chains, _jumps, _owned = lines(policy)
    to = [rules for name, rules in chains.items() if name.endswith(".to-dns")][0]
    assert to == ["meta protocol ip ct state established,related accept", "meta protocol ip meta l4proto tcp accept",
                  'meta protocol ip limit rate 10/minute counter log prefix "bridge drop dns: "',
                  "meta protocol ip counter drop"]
    forward = [rules for name, rules in chains.items() if name.endswith(".forward")][0]
    assert forward[0].startswith('meta protocol ip iifname vmap')


def test_conntrack_variant_needs_nf_conntrack_bridge_not_br_netfilter_and_retires_the_inet_chains():
    built = bridge_model.build_policy(params([dict(DNS, **OUTBOUND), WWW]))
    marks, chosen = for_backend(built, "nftables"), conntrack(built)
    assert [r for r in marks.resources if isinstance(r, sysctl_state.Sysctl)]
    assert not [r for r in chosen.resources if isinstance(r, sysctl_state.Sysctl)]
    assert sysctl_state.KernelModule("nf_conntrack_bridge", field="bridge_form") in chosen.resources
    assert [c.name for c in chosen.retired] == [c.name for c in marks.chains] and marks.retired == ()
    # the iptables variant is the same whatever the nftables form
    assert for_backend(built.with_form("nftables", "conntrack"), "iptables") == for_backend(built, "iptables")


def test_switching_forms_removes_the_other_forms_chains():
    built = bridge_model.build_policy(params([dict(DNS, **OUTBOUND), WWW]))
    marks, chosen = for_backend(built, "nftables"), conntrack(built)
    # inet: what the marks form holds is owned (retired) by the conntrack form and rendered away
    inet = NftablesBackend(None, "nft")
    held = inet.render(marks, "ruleset")["inet netconfine"]
    tables = {"inet netconfine": NftTable("inet netconfine", tuple(
        [NftChain(n, None, None, rules) for n, rules in held.chains]
        + [NftChain(b, (t, h, p), "accept", tuple(r for bb, r, _p in held.jumps if bb == b))
           for b, t, h, p in held.bases]))}
    owned = inet.owned(tables, chosen, "ruleset")["inet netconfine"]
    assert (owned.chains, owned.jumps) == (held.chains, held.jumps)
    script = json.loads(inet.script(tables, inet.owned(tables, chosen, "ruleset"), {}))["nftables"]
    assert script == [{"delete": {"table": {"family": "inet", "name": "netconfine"}}}]
    # bridge: the conntrack form's chains are <chain>.*, so the marks form owns them and renders them away
    bridge = NftBridgeState(None, "nft")
    ct = bridge.render(chosen, "bridge")[TABLE]
    tables = {TABLE: NftTable(TABLE, tuple(
        [NftChain(n, None, None, rules) for n, rules in ct.chains]
        + [NftChain(b, (t, h, p), "accept", tuple(r for bb, r, _p in ct.jumps if bb == b)) for b, t, h, p in ct.bases]))}
    assert bridge.owned(tables, chosen, "bridge") == {TABLE: ct}
    now = bridge.owned(tables, marks, "bridge")[TABLE]
    assert set(n for n, _r in ct.chains) <= set(n for n, _r in now.chains)
    batch = json.loads(bridge.script(tables, {TABLE: now}, bridge.render(marks, "bridge")))["nftables"]
    deleted = [c["delete"]["chain"]["name"] for c in batch if "delete" in c and "chain" in c["delete"]]
    assert {"bridge_input", "bridge_output"} <= set(deleted)
    assert any(n.endswith(".hostin-dns") for n in deleted) and any(n.endswith(".from-dns") for n in deleted)


# --------------------------------------------------------------------------- choosing the form

class Module:
    def __init__(self, form="auto", nft="/usr/sbin/nft"):
        self.params = {"bridge_form": form}
        self.nft = nft

    def get_bin_path(self, name):
        return self.nft if name == "nft" else None


class Nft:
    """A fake ``run``: answers the two probes as a kernel with or without bridge conntrack / the inet family."""

    def __init__(self, conntrack=True, inet=True):
        self.conntrack, self.inet, self.calls = conntrack, inet, []

    def __call__(self, argv, data=None):
        self.calls.append((argv, data))
        assert argv == ["/usr/sbin/nft", "-c", "-f", "-"]
        if data == CONNTRACK_PROBE:
            refused = "/dev/stdin:3:1-60: Error: Could not process rule: Protocol error\n"
            return (0, "", "") if self.conntrack else (1, "", refused)
        if data == INET_PROBE:
            return (0, "", "") if self.inet else (1, "", "Error: Could not process rule: Operation not supported\n")
        raise AssertionError(data)


POLICY = bridge_model.build_policy(params([dict(DNS, **OUTBOUND), WWW]))


@pytest.mark.parametrize("form, conntrack_ok, inet_ok, expected, probes", [
    ("auto", True, True, "conntrack", [CONNTRACK_PROBE]),            # a Debian stock kernel
    ("auto", True, False, "conntrack", [CONNTRACK_PROBE]),           # User-Mode-Linux's (bridge family only)
    ("auto", False, True, "marks", [CONNTRACK_PROBE, INET_PROBE]),   # this project's test machine
    ("conntrack", True, True, "conntrack", [CONNTRACK_PROBE]),
    ("marks", True, True, "marks", [INET_PROBE]),
])
def test_choose_form_asks_the_kernel(form, conntrack_ok, inet_ok, expected, probes):
    nft = Nft(conntrack_ok, inet_ok)
    policy, result = choose_form(Module(form), nft, POLICY, "nftables")
    assert result == {"bridge_form": expected}
    assert [data for _argv, data in nft.calls] == probes
    chosen = for_backend(policy, "nftables")
    guard = [r for r in chosen.resources if isinstance(r, bridge_model.BridgeGuard)][0]
    assert guard.form == expected
    assert bool(chosen.chains) is (expected == "marks")


@pytest.mark.parametrize("form, conntrack_ok, inet_ok, words", [
    ("conntrack", False, True, ["bridge_form conntrack", "nf_conntrack_bridge", "Protocol error", "nothing was changed"]),
    ("marks", True, False, ["bridge_form marks", "inet family", "Operation not supported", "nothing was changed"]),
    ("auto", False, False, ["neither form", "nf_conntrack_bridge", "Protocol error", "Operation not supported"]),
])
def test_a_form_the_kernel_cannot_hold_fails_naming_what_is_missing(form, conntrack_ok, inet_ok, words):
    with pytest.raises(NetconfineError) as failure:
        choose_form(Module(form), Nft(conntrack_ok, inet_ok), POLICY, "nftables")
    assert failure.value.field == "bridge_form"
    for word in words:
        assert word in str(failure.value)


def test_no_probe_without_a_service_policy_absent_or_offline_and_the_iptables_backend_refuses_a_form():
    nft = Nft()
    bare = bridge_model.build_policy(params([WWW]))
    assert choose_form(Module(), nft, bare, "nftables") == (bare, {"bridge_form": "none"})
    absent = bridge_model.build_policy(params([dict(DNS, **OUTBOUND)], state="absent"))
    assert choose_form(Module(), nft, absent, "nftables") == (absent, {})
    offline, result = choose_form(Module(), nft, POLICY, "nftables", offline=True)
    assert result == {"bridge_form": "marks"} and nft.calls == []
    assert choose_form(Module(), nft, POLICY, "iptables") == (POLICY, {})
    with pytest.raises(NetconfineError, match="form of the nftables backend"):
        choose_form(Module("conntrack"), nft, POLICY, "iptables")


def test_more_than_255_policy_guests_only_the_conntrack_form():
    guests = [dict(DNS, name="g%d" % i, port="tap%d" % i, addresses=["10.0.%d.%d" % (i // 200, i % 200 + 1)])
              for i in range(256)]
    built = bridge_model.build_policy(params(guests))
    policy, result = choose_form(Module(), Nft(), built, "nftables")
    assert result == {"bridge_form": "conntrack"}
    with pytest.raises(NetconfineError, match="at most 255 guests"):
        choose_form(Module(), Nft(conntrack=False), built, "nftables")
