"""owner_model.py: owner_rule parameters (as the argspec fills them) -> Policy, or an error naming the field."""

from __future__ import annotations

import ipaddress

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils import fields, model, owner_model
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError
from ansible_collections.paranoid.netconfine.plugins.module_utils.iptables_render import render_rule
from ansible_collections.paranoid.netconfine.plugins.module_utils.netfilter_task import COMMON_ARGS
from ansible_collections.paranoid.netconfine.plugins.modules.owner_rule import ARGUMENT_SPEC, RULE_OPTIONS

MISSING = "nct_no_such_account"


def params(rules=(), **top):
    """Module params the way AnsibleModule hands them over: every option present, defaults filled."""
    spec = dict(COMMON_ARGS)
    spec.update(ARGUMENT_SPEC)
    out = {k: v.get("default") for k, v in spec.items()}
    out["name"] = "t"
    out.update(top)
    out["rules"] = [dict({k: v.get("default") for k, v in RULE_OPTIONS.items()}, **r) for r in rules]
    return out


def lines(policy, family):
    return [render_rule("C", r) for c in policy.chains_for(family) for r in c.rules]


def refused(**kw):
    with pytest.raises(NetconfineError) as info:
        owner_model.build_policy(params(**kw))
    return info.value


STUNNEL = {"protocol": "tcp", "destination": ["localhost"], "destination_port": "992", "uid_owner": "!root",
           "jump": "REJECT"}


def test_seed_000_stunnel_rule_covers_both_loopbacks():
    policy = owner_model.build_policy(params([STUNNEL], name="stunnel-992"))
    assert policy.name == "stunnel-992"
    assert policy.present and policy.families == (4, 6)
    (chain,) = policy.chains
    assert (chain.table, chain.name, chain.hook, chain.builtin_policy) == (
        "filter", fields.chain_name("stunnel-992"), model.Hook("OUTPUT", "first"), None)
    assert lines(policy, 4) == [
        "-A C -d 127.0.0.1/32 -p tcp -m tcp --dport 992 -m owner ! --uid-owner 0 -j REJECT "
        "--reject-with icmp-port-unreachable"]
    assert lines(policy, 6) == [
        "-A C -d ::1/128 -p tcp -m tcp --dport 992 -m owner ! --uid-owner 0 -j REJECT "
        "--reject-with icmp6-port-unreachable"]


def test_destination_type_local_guards_every_local_address_of_both_families():
    rule = dict(STUNNEL, destination=None, destination_type="local")
    policy = owner_model.build_policy(params([rule]))
    for family, reject in ((4, "icmp-port-unreachable"), (6, "icmp6-port-unreachable")):
        assert lines(policy, family) == [
            "-A C -p tcp -m tcp --dport 992 -m addrtype --dst-type LOCAL -m owner ! --uid-owner 0 -j REJECT "
            "--reject-with %s" % reject]
    policy = owner_model.build_policy(params([{"destination_type": "!LOCAL", "jump": "DROP"}]))
    assert lines(policy, 4) == ["-A C -m addrtype ! --dst-type LOCAL -j DROP"]


def test_ip_version_ipv4_leaves_ipv6_empty():
    policy = owner_model.build_policy(params([STUNNEL], ip_version="ipv4"))
    assert policy.families == (4,)
    assert len(lines(policy, 4)) == 1
    assert policy.chains_for(6) == ()


def test_rule_ip_version_restricts_one_rule():
    policy = owner_model.build_policy(params([dict(STUNNEL, ip_version="ipv6"), {"jump": "ACCEPT"}]))
    assert lines(policy, 4) == ["-A C -j ACCEPT"]
    assert len(lines(policy, 6)) == 2


def test_drop_policy_puts_established_first_in_each_family():
    policy = owner_model.build_policy(params([{"uid_owner": "0", "jump": "ACCEPT"}], policy="drop"))
    assert policy.chains[0].builtin_policy == "DROP"
    for family in (4, 6):
        assert lines(policy, family) == ["-A C -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                                         "-A C -m owner --uid-owner 0 -j ACCEPT"]


def test_accept_policy_and_absent():
    policy = owner_model.build_policy(params([], policy="accept", state="absent"))
    assert policy.chains[0].builtin_policy == "ACCEPT"
    assert not policy.present
    assert policy.chains_for(4) == ()


def test_icmp_rules_only_in_their_family():
    policy = owner_model.build_policy(params([
        {"protocol": "icmp", "icmp_type": "echo-request", "uid_owner": "0", "jump": "ACCEPT"},
        {"protocol": "ipv6-icmp", "icmp_type": "echo-request", "jump": "REJECT"},
    ]))
    assert lines(policy, 4) == ["-A C -p icmp -m icmp --icmp-type 8 -m owner --uid-owner 0 -j ACCEPT"]
    assert lines(policy, 6) == ["-A C -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j REJECT "
                                "--reject-with icmp6-port-unreachable"]


def test_one_rule_per_address_and_family_in_order():
    policy = owner_model.build_policy(params([{"destination": ["192.0.2.1", "fd00::1", "198.51.100.0/24"],
                                               "source": ["192.0.2.0/24"], "jump": "DROP"}]))
    assert lines(policy, 4) == ["-A C -s 192.0.2.0/24 -d 192.0.2.1/32 -j DROP",
                                "-A C -s 192.0.2.0/24 -d 198.51.100.0/24 -j DROP"]
    assert lines(policy, 6) == []   # no IPv6 source: the rule cannot match IPv6


def test_negated_address_of_one_family_still_applies_to_the_other():
    """'not 192.0.2.1' is true of every IPv6 packet: dropping the IPv6 rule would fail open."""
    policy = owner_model.build_policy(params([{"destination": ["!192.0.2.1"], "uid_owner": "0", "jump": "REJECT"}]))
    assert lines(policy, 4) == ["-A C ! -d 192.0.2.1/32 -m owner --uid-owner 0 -j REJECT "
                                "--reject-with icmp-port-unreachable"]
    assert lines(policy, 6) == ["-A C -m owner --uid-owner 0 -j REJECT --reject-with icmp6-port-unreachable"]


def test_owner_and_every_match_kind():
    policy = owner_model.build_policy(params([{
        "protocol": "udp", "source_port": "!53", "destination_port": "1000-2000", "out_interface": "!lo",
        "uid_owner": "1000-1999", "gid_owner": "root", "suppl_groups": True, "socket_exists": True,
        "ctstate": ["new"], "limit": "5/min", "limit_burst": 7, "comment": "all of it",
        "jump": "LOG", "log_prefix": "all: ", "log_level": "info", "ip_version": "ipv4"}]))
    (rule,) = policy.chains[0].rules
    owner = [m for m in rule.matches if isinstance(m, model.Owner)][0]
    assert owner.gid_members and 0 in owner.gid_members
    assert lines(policy, 4) == [
        '-A C ! -o lo -p udp -m udp ! --sport 53 --dport 1000:2000 -m owner --socket-exists --uid-owner 1000-1999 '
        '--gid-owner 0 --suppl-groups -m conntrack --ctstate NEW -m limit --limit 5/min --limit-burst 7 '
        '-m comment --comment "all of it" -j LOG --log-prefix "all: " --log-level 6']


def test_reject_reason_per_family():
    policy = owner_model.build_policy(params([{"protocol": "tcp", "jump": "REJECT", "reject_with": "tcp-reset"},
                                              {"jump": "REJECT", "reject_with": "icmp-admin-prohibited"}]))
    assert lines(policy, 6) == ["-A C -p tcp -j REJECT --reject-with tcp-reset",
                                "-A C -j REJECT --reject-with icmp6-adm-prohibited"]


def test_protocol_all_is_no_protocol_match():
    policy = owner_model.build_policy(params([{"protocol": "all", "uid_owner": "0", "jump": "ACCEPT"}]))
    assert lines(policy, 4) == ["-A C -m owner --uid-owner 0 -j ACCEPT"]


def test_verdicts_each_table_accepts():
    for table, jumps in (("filter", ("ACCEPT", "DROP", "REJECT", "LOG", "RETURN")),
                         ("mangle", ("ACCEPT", "DROP", "LOG", "RETURN")), ("nat", ("ACCEPT", "LOG", "RETURN"))):
        policy = owner_model.build_policy(params([{"jump": j} for j in jumps], table=table))
        assert len(lines(policy, 4)) == len(jumps)


def test_nat_and_mangle_postrouting_are_allowed():
    for table, chain in (("nat", "OUTPUT"), ("nat", "POSTROUTING"), ("mangle", "OUTPUT"), ("mangle", "POSTROUTING")):
        policy = owner_model.build_policy(params([{"uid_owner": "0", "jump": "RETURN"}], table=table, chain=chain))
        assert (policy.chains[0].table, policy.chains[0].hook.builtin) == (table, chain)


def test_position_last():
    policy = owner_model.build_policy(params([], position="last"))
    assert policy.chains[0].hook == model.Hook("OUTPUT", "last")


def test_hostnames_are_resolved_on_the_target_and_reported(monkeypatch):
    def resolve(value, field):
        assert (value, field) == ("strudel.example", "rules[0].destination")
        return [ipaddress.ip_network("192.0.2.20/32"), ipaddress.ip_network("fd00::20/128")]
    monkeypatch.setattr(fields, "resolve_host", resolve)
    policy = owner_model.build_policy(params([{"destination": ["strudel.example"], "protocol": "tcp",
                                               "destination_port": "992", "uid_owner": "root", "jump": "ACCEPT"}]))
    assert policy.resolved == {"strudel.example": ["192.0.2.20", "fd00::20"]}
    assert lines(policy, 4) == ["-A C -d 192.0.2.20/32 -p tcp -m tcp --dport 992 -m owner --uid-owner 0 -j ACCEPT"]
    assert lines(policy, 6) == ["-A C -d fd00::20/128 -p tcp -m tcp --dport 992 -m owner --uid-owner 0 -j ACCEPT"]


BAD = [
    # (rules, top-level params, field, part of the message)
    ([{"uid_owner": MISSING, "jump": "REJECT"}], {}, "rules[0].uid_owner", "unknown user"),
    ([{"gid_owner": MISSING, "jump": "REJECT"}], {}, "rules[0].gid_owner", "unknown group"),
    ([{"jump": "ACCEPT"}, {"uid_owner": "!" + MISSING, "jump": "REJECT"}], {}, "rules[1].uid_owner", "unknown user"),
    ([{"pid_owner": 1234, "jump": "REJECT"}], {}, "rules[0].pid_owner", "2.6.14"),
    ([{"sid_owner": 1, "jump": "REJECT"}], {}, "rules[0].sid_owner", "2.6.14"),
    ([], {"chain": "INPUT"}, "chain", "locally generated"),
    ([], {"chain": "FORWARD"}, "chain", "locally generated"),
    ([], {"table": "nat", "chain": "PREROUTING"}, "chain", "locally generated"),
    ([], {"table": "raw"}, "table", "must be one of"),
    ([], {"table": "nat", "policy": "drop"}, "policy", "only managed in table filter"),
    ([], {"name": "bad name"}, "name", "letters, digits"),
    ([{"destination": ["192.0.2.1/24"], "jump": "DROP"}], {}, "rules[0].destination", "has host bits set"),
    ([{"destination": ["1.2.3"], "jump": "DROP"}], {}, "rules[0].destination", "not a valid address"),
    ([{"source": ["523454/24"], "jump": "DROP"}], {}, "rules[0].source", "not a valid address"),
    ([{"destination": ["0x7f.1"], "jump": "DROP"}], {}, "rules[0].destination", ""),
    ([{"destination": ["192.0.2.1", "127.1"], "jump": "DROP"}], {}, "rules[0].destination[1]", ""),
    ([{"destination": ["!0.0.0.0/0"], "jump": "DROP"}], {}, "rules[0].destination", "no address"),
    ([{"comment": 'say "hi"', "jump": "ACCEPT"}], {}, "rules[0].comment", "not allowed"),
    ([{"comment": "two\nlines", "jump": "ACCEPT"}], {}, "rules[0].comment", "not allowed"),
    ([{"comment": "x" * 129, "jump": "ACCEPT"}], {}, "rules[0].comment", "at most 128"),
    ([{"log_prefix": "it's", "jump": "LOG"}], {}, "rules[0].log_prefix", "not allowed"),
    ([{"log_prefix": "esc\x1b", "jump": "LOG"}], {}, "rules[0].log_prefix", "not allowed"),
    ([{"log_prefix": "x" * 30, "jump": "LOG"}], {}, "rules[0].log_prefix", "at most 29"),
    ([{"log_prefix": "x", "jump": "ACCEPT"}], {}, "rules[0].log_prefix", "only applies to jump LOG"),
    ([{"log_level": "info", "jump": "DROP"}], {}, "rules[0].log_level", "only applies to jump LOG"),
    ([{"log_level": "loud", "jump": "LOG"}], {}, "rules[0].log_level", "must be 0-7"),
    ([{"protocol": "tcp", "destination_port": "70000", "jump": "DROP"}], {}, "rules[0].destination_port", "65535"),
    ([{"protocol": "tcp", "source_port": "2000:1000", "jump": "DROP"}], {}, "rules[0].source_port", "reversed"),
    ([{"protocol": "tcp", "destination_port": "!0:65535", "jump": "DROP"}], {}, "rules[0].destination_port",
     "no port"),
    ([{"destination_port": "22", "jump": "DROP"}], {}, "rules[0].destination_port", "needs protocol"),
    ([{"protocol": "icmp", "destination_port": "22", "jump": "DROP"}], {}, "rules[0].destination_port",
     "needs protocol"),
    # iptables has no udplite port match (-m udplite does not exist)
    ([{"protocol": "udplite", "destination_port": "22", "jump": "DROP"}], {}, "rules[0].destination_port",
     "needs protocol"),
    ([{"icmp_type": "echo-request", "jump": "DROP"}], {}, "rules[0].icmp_type", "needs protocol icmp"),
    ([{"protocol": "tcp", "icmp_type": "echo-request", "jump": "DROP"}], {}, "rules[0].icmp_type",
     "needs protocol icmp"),
    ([{"protocol": "icmp", "icmp_type": "neighbour-solicitation", "jump": "DROP"}], {}, "rules[0].icmp_type", "ICMP"),
    ([{"protocol": "icmp", "jump": "DROP"}], {"ip_version": "ipv6"}, "rules[0]", "applies to no IP family"),
    ([{"protocol": "icmp", "ip_version": "ipv6", "jump": "DROP"}], {}, "rules[0]", "applies to no IP family"),
    ([{"protocol": "gre", "jump": "DROP"}], {}, "rules[0].protocol", "must be one of"),
    ([{"protocol": "udp", "jump": "REJECT", "reject_with": "tcp-reset"}], {}, "rules[0].reject_with",
     "needs protocol tcp"),
    ([{"jump": "REJECT", "reject_with": "tcp-reset"}], {}, "rules[0].reject_with", "needs protocol tcp"),
    ([{"jump": "DROP", "reject_with": "tcp-reset"}], {}, "rules[0].reject_with", "only applies to jump REJECT"),
    ([{"jump": "REJECT", "reject_with": "bogus"}], {}, "rules[0].reject_with", "must be one of"),
    ([{"gid_owner": "0", "jump": "DROP", "suppl_groups": True}, {"suppl_groups": True, "jump": "DROP"}], {},
     "rules[1].suppl_groups", "needs gid_owner"),
    ([{"jump": None}], {}, "rules[0].jump", "is required"),
    ([{"jump": "ACCEPT"}, {"jump": "REJECT"}], {"table": "nat"}, "rules[1].jump", "REJECT in table nat"),
    ([{"jump": "REJECT"}], {"table": "mangle"}, "rules[0].jump", "REJECT in table mangle"),
    ([{"jump": "DROP"}], {"table": "nat", "chain": "POSTROUTING"}, "rules[0].jump", "DROP in table nat"),
    ([{"jump": "MASQUERADE"}], {}, "rules[0].jump", "must be one of"),
    ([{"limit_burst": 3, "jump": "DROP"}], {}, "rules[0].limit_burst", "needs limit"),
    ([{"limit": "5/min", "limit_burst": 0, "jump": "DROP"}], {}, "rules[0].limit_burst", "between 1 and 10000"),
    ([{"limit": "5/min", "limit_burst": 10001, "jump": "DROP"}], {}, "rules[0].limit_burst", "between 1 and 10000"),
    ([{"limit": "5/fortnight", "jump": "DROP"}], {}, "rules[0].limit", "rate"),
    ([{"ctstate": ["NEWISH"], "jump": "DROP"}], {}, "rules[0].ctstate", "conntrack state"),
    ([{"out_interface": "x" * 16, "jump": "DROP"}], {}, "rules[0].out_interface", "1-15"),
    ([{"cgroup": "system.slice", "jump": "DROP"}], {}, "rules[0].cgroup", "absolute"),
    ([{"cgroup": "/a/../b", "jump": "DROP"}], {}, "rules[0].cgroup", "absolute"),
    ([{"cgroup": '/a"b', "jump": "DROP"}], {}, "rules[0].cgroup", "not allowed"),
    ([{"destination_type": "unicast", "jump": "DROP"}], {}, "rules[0].destination_type", "'local'"),
    ([{"destination_type": "", "jump": "DROP"}], {}, "rules[0].destination_type", "'local'"),
]


@pytest.mark.parametrize("rules,top,field,why", BAD, ids=["%s-%s" % (b[2], b[3]) for b in BAD])
def test_bad_input_names_the_field(rules, top, field, why):
    exc = refused(rules=rules, **top)
    assert exc.field == field, str(exc)
    assert why in str(exc)
    assert str(exc).startswith(field + ": ")
