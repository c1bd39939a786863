"""iptables_render.py golden tests: model -> the exact line iptables-save prints.

Every expected line below is what iptables v1.8.9 (nf_tables) prints for the rule after
``iptables-restore``; tests/integration/test_owner_rule.py round-trips the same kinds
through the kernel.
"""

from __future__ import annotations

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils import model
from ansible_collections.paranoid.netconfine.plugins.module_utils.iptables_render import (
    quote, render_chain, render_jump, render_rule)
from rule_tables import ACCEPT, DROP, RETURN, C, R, n


GOLDEN = [
    # header matches
    (R(), "-A C -j ACCEPT"),
    (R(4, DROP, source=n("192.0.2.0/24")), "-A C -s 192.0.2.0/24 -j DROP"),
    (R(4, DROP, source=n("192.0.2.0/24"), source_negate=True), "-A C ! -s 192.0.2.0/24 -j DROP"),
    (R(4, DROP, destination=n("127.0.0.1/32")), "-A C -d 127.0.0.1/32 -j DROP"),
    (R(4, DROP, destination=n("198.51.100.7/32"), destination_negate=True), "-A C ! -d 198.51.100.7/32 -j DROP"),
    (R(6, DROP, destination=n("::1/128")), "-A C -d ::1/128 -j DROP"),
    (R(6, DROP, source=n("fd00::/8"), destination=n("fd00:1::5/128")), "-A C -s fd00::/8 -d fd00:1::5/128 -j DROP"),
    # ip6tables prints IPv6 addresses as inet_ntop does (IPv4-mapped and -compatible in dotted form)
    (R(6, DROP, destination=n("::ffff:192.0.2.1/128")), "-A C -d ::ffff:192.0.2.1/128 -j DROP"),
    (R(6, DROP, destination=n("::ffff:192.0.2.0/120")), "-A C -d ::ffff:192.0.2.0/120 -j DROP"),
    (R(6, DROP, destination=n("::2:3/128")), "-A C -d ::0.2.0.3/128 -j DROP"),
    # a /0 match is no match: iptables-save prints nothing for it
    (R(4, DROP, destination=n("0.0.0.0/0")), "-A C -j DROP"),
    (R(6, DROP, source=n("::/0")), "-A C -j DROP"),
    (R(4, DROP, out_interface="lo"), "-A C -o lo -j DROP"),
    (R(4, DROP, out_interface="veth+", out_interface_negate=True), "-A C ! -o veth+ -j DROP"),
    (R(4, DROP, in_interface="eth0"), "-A C -i eth0 -j DROP"),
    (R(4, DROP, source=n("192.0.2.0/24"), out_interface="lo", protocol="tcp"),
     "-A C -s 192.0.2.0/24 -o lo -p tcp -j DROP"),
    (R(4, DROP, protocol="udplite"), "-A C -p udplite -j DROP"),
    # ports
    (R(4, DROP, model.Ports("tcp", dport=(992, 992)), protocol="tcp"), "-A C -p tcp -m tcp --dport 992 -j DROP"),
    (R(4, DROP, model.Ports("tcp", sport=(1024, 65535)), protocol="tcp"),
     "-A C -p tcp -m tcp --sport 1024:65535 -j DROP"),
    (R(4, DROP, model.Ports("tcp", dport=(22, 22), dport_negate=True), protocol="tcp"),
     "-A C -p tcp -m tcp ! --dport 22 -j DROP"),
    (R(4, DROP, model.Ports("udp", (1, 2), False, (3, 3), False), protocol="udp"),
     "-A C -p udp -m udp --sport 1:2 --dport 3 -j DROP"),
    (R(4, DROP, model.Ports("udp", (53, 53), True, (1000, 2000), True), protocol="udp"),
     "-A C -p udp -m udp ! --sport 53 ! --dport 1000:2000 -j DROP"),
    (R(6, DROP, model.Ports("sctp", dport=(3, 3)), protocol="sctp"), "-A C -p sctp -m sctp --dport 3 -j DROP"),
    # the full range is no port match: iptables-save prints none
    (R(4, DROP, model.Ports("tcp", dport=(0, 65535)), protocol="tcp"), "-A C -p tcp -m tcp -j DROP"),
    (R(4, DROP, model.Ports("tcp", sport=(0, 65535), dport=(80, 80)), protocol="tcp"),
     "-A C -p tcp -m tcp --dport 80 -j DROP"),
    # icmp
    (R(4, ACCEPT, model.Icmp(4, "8"), protocol="icmp"), "-A C -p icmp -m icmp --icmp-type 8 -j ACCEPT"),
    (R(4, ACCEPT, model.Icmp(4, "3/3", True), protocol="icmp"), "-A C -p icmp -m icmp ! --icmp-type 3/3 -j ACCEPT"),
    (R(4, ACCEPT, model.Icmp(4, "any"), protocol="icmp"), "-A C -p icmp -m icmp --icmp-type any -j ACCEPT"),
    (R(6, ACCEPT, model.Icmp(6, "128"), protocol="ipv6-icmp"),
     "-A C -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT"),
    (R(6, ACCEPT, model.Icmp(6, "1/4", True), protocol="ipv6-icmp"),
     "-A C -p ipv6-icmp -m icmp6 ! --icmpv6-type 1/4 -j ACCEPT"),
    # owner
    (R(4, DROP, model.Owner(uid=(0, 0))), "-A C -m owner --uid-owner 0 -j DROP"),
    (R(4, DROP, model.Owner(uid=(0, 0), uid_negate=True)), "-A C -m owner ! --uid-owner 0 -j DROP"),
    (R(4, DROP, model.Owner(uid=(1000, 1999))), "-A C -m owner --uid-owner 1000-1999 -j DROP"),
    (R(4, DROP, model.Owner(gid=(10, 10))), "-A C -m owner --gid-owner 10 -j DROP"),
    (R(4, DROP, model.Owner(gid=(10, 10), suppl_groups=True, gid_members=(1001,))),
     "-A C -m owner --gid-owner 10 --suppl-groups -j DROP"),
    (R(4, DROP, model.Owner(gid=(10, 10), gid_negate=True, suppl_groups=True)),
     "-A C -m owner ! --gid-owner 10 --suppl-groups -j DROP"),
    (R(4, DROP, model.Owner(uid=(5, 5), gid=(6, 7), gid_negate=True)),
     "-A C -m owner --uid-owner 5 ! --gid-owner 6-7 -j DROP"),
    (R(4, DROP, model.Owner(socket_exists=True)), "-A C -m owner --socket-exists -j DROP"),
    (R(4, DROP, model.Owner(uid=(1, 5), socket_exists=False)),
     "-A C -m owner ! --socket-exists --uid-owner 1-5 -j DROP"),
    # destination type (addrtype): every local address, in the order iptables-save keeps
    (R(4, ACCEPT, model.Ports("tcp", dport=(992, 992)), model.DestinationType(), protocol="tcp"),
     "-A C -p tcp -m tcp --dport 992 -m addrtype --dst-type LOCAL -j ACCEPT"),
    (R(6, DROP, model.DestinationType(negate=True)), "-A C -m addrtype ! --dst-type LOCAL -j DROP"),
    # cgroup, conntrack, limit, comment
    (R(4, ACCEPT, model.Cgroup("/system.slice/stunnel4.service")),
     '-A C -m cgroup --path "/system.slice/stunnel4.service" -j ACCEPT'),
    (R(4, ACCEPT, model.Cgroup("/user.slice", True)), '-A C -m cgroup ! --path "/user.slice" -j ACCEPT'),
    (R(4, ACCEPT, model.Conntrack(("RELATED", "ESTABLISHED"))),
     "-A C -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
    (R(4, ACCEPT, model.Conntrack(("NEW",))), "-A C -m conntrack --ctstate NEW -j ACCEPT"),
    (R(4, ACCEPT, model.Limit(10, "min")), "-A C -m limit --limit 10/min -j ACCEPT"),
    (R(4, ACCEPT, model.Limit(2, "sec", 10)), "-A C -m limit --limit 2/sec --limit-burst 10 -j ACCEPT"),
    (R(4, ACCEPT, model.Comment("tunnel")), "-A C -m comment --comment tunnel -j ACCEPT"),
    (R(4, ACCEPT, model.Comment("only root: 992")), '-A C -m comment --comment "only root: 992" -j ACCEPT'),
    (R(4, ACCEPT, model.Comment("")), '-A C -m comment --comment "" -j ACCEPT'),
    # targets
    (R(4, RETURN), "-A C -j RETURN"),
    (R(4, model.Reject()), "-A C -j REJECT --reject-with icmp-port-unreachable"),
    (R(6, model.Reject()), "-A C -j REJECT --reject-with icmp6-port-unreachable"),
    (R(4, model.Reject("admin-prohibited")), "-A C -j REJECT --reject-with icmp-admin-prohibited"),
    (R(6, model.Reject("admin-prohibited")), "-A C -j REJECT --reject-with icmp6-adm-prohibited"),
    (R(6, model.Reject("net-unreachable")), "-A C -j REJECT --reject-with icmp6-no-route"),
    (R(6, model.Reject("host-unreachable")), "-A C -j REJECT --reject-with icmp6-addr-unreachable"),
    (R(4, model.Reject("tcp-reset"), protocol="tcp"), "-A C -p tcp -j REJECT --reject-with tcp-reset"),
    (R(6, model.Reject("tcp-reset"), protocol="tcp"), "-A C -p tcp -j REJECT --reject-with tcp-reset"),
    (R(4, model.Log()), "-A C -j LOG"),
    (R(4, model.Log("root-egress: ")), '-A C -j LOG --log-prefix "root-egress: "'),
    (R(4, model.Log("rootlog", 6)), "-A C -j LOG --log-prefix rootlog --log-level 6"),
    (R(4, model.Log(None, 0)), "-A C -j LOG --log-level 0"),
    (R(4, model.Jump("NC-other-00000000")), "-A C -j NC-other-00000000"),
    # everything at once, in the kernel's order
    (R(4, model.Reject("tcp-reset"), model.Ports("tcp", dport=(992, 992)), model.Owner(uid=(0, 0), uid_negate=True),
       model.Conntrack(("NEW",)), model.Limit(5, "min", 3), model.Comment("seed 000"),
       protocol="tcp", destination=n("127.0.0.1/32"), out_interface="lo"),
     '-A C -d 127.0.0.1/32 -o lo -p tcp -m tcp --dport 992 -m owner ! --uid-owner 0 -m conntrack --ctstate NEW '
     '-m limit --limit 5/min --limit-burst 3 -m comment --comment "seed 000" -j REJECT --reject-with tcp-reset'),
]


@pytest.mark.parametrize("rule,expected", GOLDEN, ids=[e for _r, e in GOLDEN])
def test_render_rule_golden(rule, expected):
    assert render_rule("C", rule) == expected


def test_render_rule_refuses_unknown_matches_and_targets():
    with pytest.raises(TypeError):
        render_rule("C", R(4, ACCEPT, object()))
    with pytest.raises(TypeError):
        render_rule("C", R(4, object()))


def test_render_chain_keeps_order():
    chain = model.Chain("filter", C, (R(4, model.Log("x")), R(4, DROP)))
    assert render_chain(chain) == ("-A %s -j LOG --log-prefix x" % C, "-A %s -j DROP" % C)


@pytest.mark.parametrize("name,tag", [
    ("stunnel-992", '"netconfine:stunnel-992"'),
    ("a.b", '"netconfine:a.b"'),
])
def test_render_jump_is_tagged_with_the_task_name(name, tag):
    policy = model.Policy(name)
    chain = model.Chain("filter", C, hook=model.Hook("OUTPUT"))
    assert render_jump(policy, chain) == "-A OUTPUT -m comment --comment %s -j %s" % (tag, C)


@pytest.mark.parametrize("value,expected", [
    ("abc", "abc"), ("a-b_C9", "a-b_C9"), ("a b", '"a b"'), ("a:b", '"a:b"'), ("", '""'), ("/x", '"/x"'),
])
def test_quote_like_xtables_save_string(value, expected):
    assert quote(value) == expected
