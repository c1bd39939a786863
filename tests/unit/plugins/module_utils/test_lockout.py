"""lockout.py: the static lockout guard, with a fake management path (no kernel, no SSH).

The policies are built by owner_model from module params (as the argspec fills them), and a few by hand
for what owner_rule cannot declare (INPUT chains, a DROP policy without the established accept).
"""

from __future__ import annotations

import ipaddress

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils import lockout, model, netfilter_task, owner_model
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError
from ansible_collections.paranoid.netconfine.plugins.plugin_utils import confirm

from test_owner_model import STUNNEL, params

SSH4 = {"SSH_CONNECTION": "192.0.2.1 51000 192.0.2.10 22"}
SSH6 = {"SSH_CONNECTION": "fd00:9::1 51000 fd00:9::10 22"}
PLUGIN4 = {"connection": "ssh", "addresses": ["192.0.2.10"], "port": None, "sources": ["192.0.2.1"]}


def paths(given=None, environ=None):
    return lockout.management(given, SSH4 if environ is None else environ)


def owner(rules, **top):
    return owner_model.build_policy(params(rules, **top))


def refusal(policy, where):
    with pytest.raises(NetconfineError) as info:
        lockout.check(policy, where)
    return info.value


# ---------------------------------------------------------------- the management path

@pytest.mark.parametrize("given, environ, expected", [
    # the module alone: SSH_CONNECTION is all there is
    (None, SSH4, [(4, {"192.0.2.10"}, {22}, {"192.0.2.1"}, 51000)]),
    (None, {"SSH_CONNECTION": "::ffff:192.0.2.1 51000 ::ffff:192.0.2.10 2222"},
     [(4, {"192.0.2.10"}, {2222}, {"192.0.2.1"}, 51000)]),
    (None, {}, []),
    (None, {"SSH_CONNECTION": "garbage"}, []),
    # the action plugin's view, refined by SSH_CONNECTION (candidates: NAT on the way)
    (PLUGIN4, {}, [(4, {"192.0.2.10"}, {22}, {"192.0.2.1"}, None)]),
    (dict(PLUGIN4, port=2222), {}, [(4, {"192.0.2.10"}, {2222}, {"192.0.2.1"}, None)]),
    (dict(PLUGIN4, addresses=["198.51.100.7"], sources=[]), SSH4,
     [(4, {"198.51.100.7", "192.0.2.10"}, {22}, {"192.0.2.1"}, 51000)]),
    (dict(PLUGIN4, addresses=["192.0.2.10", "fd00:9::10"], sources=["192.0.2.1"]), {},
     [(4, {"192.0.2.10"}, {22}, {"192.0.2.1"}, None), (6, {"fd00:9::10"}, {22}, set(), None)]),
    # a connection without a network path: nothing, whatever the environment says
    ({"connection": "paranoid.netconfine.netns", "addresses": []}, SSH4, []),
    ({"connection": "local", "addresses": []}, SSH4, []),
])
def test_management_path(given, environ, expected):
    got = [(p.family, set(str(a) for a in p.local), set(p.port), set(str(a) for a in p.peers), p.peer_port)
           for p in lockout.management(given, environ)]
    assert got == expected


class FakeConnection:
    def __init__(self, transport, **options):
        self.transport, self.options = transport, options

    def get_option(self, name):
        if name not in self.options:
            raise KeyError(name)
        return self.options[name]


@pytest.mark.parametrize("connection, expected", [
    (FakeConnection("ssh", host="192.0.2.10", port=None), {"addresses": ["192.0.2.10"], "port": None}),
    (FakeConnection("ssh", host="fd00:9::10", port=2222), {"addresses": ["fd00:9::10"], "port": 2222}),
    (FakeConnection("local"), {"addresses": []}),
    (FakeConnection("paranoid.netconfine.netns"), {"addresses": []}),
])
def test_the_action_plugin_passes_the_connections_address(connection, expected):
    got = confirm.management_path(connection, None)
    assert dict((k, got.get(k)) for k in expected) == expected
    assert got["connection"] == connection.transport


# ---------------------------------------------------------------- refused, naming the field

LOCKOUTS = [
    # (rules, field): sshd's answers dropped or rejected in OUTPUT
    ([{"protocol": "tcp", "source_port": "22", "jump": "DROP"}], "rules[0]"),
    ([{"protocol": "tcp", "source_port": "22", "jump": "REJECT"}], "rules[0]"),
    ([{"protocol": "tcp", "source_port": "22", "jump": "REJECT", "reject_with": "tcp-reset"}], "rules[0]"),
    ([{"jump": "DROP"}], "rules[0]"),
    ([{"destination": "192.0.2.1", "jump": "DROP"}], "rules[0]"),
    ([{"destination": "192.0.2.0/24", "jump": "REJECT"}], "rules[0]"),
    ([{"protocol": "tcp", "destination_port": "1024:65535", "jump": "DROP"}], "rules[0]"),
    ([{"protocol": "tcp", "ctstate": ["ESTABLISHED"], "jump": "DROP"}], "rules[0]"),
    # what comes before does not let it through: a LOG, a DROP for another port, another family's ACCEPT
    ([{"jump": "LOG"}, {"protocol": "tcp", "source_port": "80", "jump": "ACCEPT"},
      {"ip_version": "ipv6", "jump": "ACCEPT"}, {"protocol": "tcp", "source_port": "22", "jump": "DROP"}], "rules[3]"),
    # a rule that may drop it (an owner match) and then one that surely does
    ([{"uid_owner": "!root", "jump": "DROP"}, {"protocol": "tcp", "jump": "DROP"}], "rules[1]"),
]


@pytest.mark.parametrize("rules, field", LOCKOUTS)
def test_a_rule_that_drops_the_ssh_connection_is_refused(rules, field):
    err = refusal(owner(rules), paths())
    assert err.field == field
    assert "would cut the controller off" in str(err) and "allow_lockout" in str(err)
    assert "192.0.2.1 -> 192.0.2.10 port 22" in str(err)


def test_the_action_plugins_view_alone_is_enough():
    err = refusal(owner([{"protocol": "tcp", "source_port": "22", "jump": "DROP"}]), paths(PLUGIN4, {}))
    assert err.field == "rules[0]"


def test_ipv6_path():
    rules = [{"protocol": "tcp", "destination": "fd00:9::/64", "jump": "REJECT", "reject_with": "tcp-reset"}]
    assert refusal(owner(rules), paths(None, SSH6)).field == "rules[0]"
    lockout.check(owner(rules), paths())            # the IPv4 path stays open


def chain(builtin, rules=(), policy=None, position="first", family=4):
    return model.Policy("t", (model.Chain("filter", "NC-t", tuple(rules), model.Hook(builtin, position), policy),),
                        families=(family,))


def rule(target, family=4, field="rules[0]", **kw):
    return model.Rule(family, target, field=field, **kw)


DROP, ACCEPT = model.Verdict("DROP"), model.Verdict("ACCEPT")
ESTABLISHED = model.Conntrack(("RELATED", "ESTABLISHED"))
NEW = model.Conntrack(("NEW",))


@pytest.mark.parametrize("policy, field", [
    (chain("OUTPUT", policy="DROP"), "policy"),
    (chain("INPUT", policy="DROP"), "policy"),
    (chain("INPUT", [rule(ACCEPT, matches=(model.Ports("tcp", dport=(80, 80)),))], policy="DROP"), "policy"),
    (chain("OUTPUT", [rule(ACCEPT, matches=(ESTABLISHED,))], policy="DROP", family=6), None),   # not the v4 path
    # a new connection to sshd dropped in INPUT, or by a helper chain's address
    (chain("INPUT", [rule(DROP, matches=(NEW, model.Ports("tcp", dport=(22, 22))))]), "rules[0]"),
    (chain("INPUT", [rule(DROP, source=ipaddress.ip_network("192.0.2.0/24"))]), "rules[0]"),
    (chain("PREROUTING", [rule(model.Reject("tcp-reset"), protocol="tcp",
                               matches=(model.DestinationType("LOCAL"),))]), "rules[0]"),
])
def test_hand_built_lockouts(policy, field):
    if field is None:
        lockout.check(policy, paths())
    else:
        assert refusal(policy, paths()).field == field


# ---------------------------------------------------------------- no false positives

KEPT = [
    [STUNNEL],                                                        # the seed: REJECT to localhost:992 for !root
    [{"protocol": "tcp", "destination_port": "992", "jump": "REJECT"}],
    [{"protocol": "udp", "jump": "DROP"}],
    [{"protocol": "icmp", "jump": "DROP"}],
    [{"protocol": "tcp", "source_port": "2222", "jump": "DROP"}],
    [{"destination": "198.51.100.0/24", "jump": "DROP"}],
    [{"destination": "!192.0.2.1", "jump": "DROP"}],
    [{"protocol": "tcp", "ctstate": ["NEW"], "jump": "DROP"}],        # OUTPUT: sshd's answers are ESTABLISHED
    [{"uid_owner": "!root", "jump": "DROP"}],                         # an owner match is not decidable here
    [{"gid_owner": "root", "jump": "REJECT"}],
    [{"out_interface": "eth9", "jump": "DROP"}],
    [{"limit": "10/sec", "jump": "DROP"}],
    # accepted first
    [{"protocol": "tcp", "source_port": "22", "jump": "ACCEPT"}, {"jump": "DROP"}],
    [{"ctstate": ["ESTABLISHED", "RELATED"], "jump": "ACCEPT"}, {"jump": "DROP"}],
    # may be accepted first: not sure, so not refused
    [{"uid_owner": "root", "jump": "ACCEPT"}, {"jump": "DROP"}],
    [{"jump": "RETURN", "uid_owner": "root"}, {"jump": "DROP"}],
    # the controller's side: one port is not every port a fresh connection can come from
    [{"protocol": "tcp", "destination_port": "51000", "jump": "DROP"}],
    [{"protocol": "tcp", "destination_port": "!51000", "jump": "DROP"}],
]


@pytest.mark.parametrize("rules", KEPT)
def test_what_keeps_the_ssh_connection_is_not_refused(rules):
    lockout.check(owner(rules), paths())
    lockout.check(owner(rules), paths(PLUGIN4, {}))


def test_a_drop_policy_with_established_first_passes():
    # owner_rule puts the established/related accept first itself
    lockout.check(owner([{"jump": "DROP", "uid_owner": "!root"}], policy="drop"), paths())
    lockout.check(owner([], policy="drop"), paths())


@pytest.mark.parametrize("where", [[], paths({"connection": "local", "addresses": []})])
def test_nothing_is_refused_without_a_management_path(where):
    lockout.check(owner([{"jump": "DROP"}]), where)
    lockout.check(chain("INPUT", policy="DROP"), where)


def test_a_chain_hooked_last_is_not_refused_for_its_rules():
    # foreign rules before it may accept the connection; its DROP policy is still checked
    lockout.check(chain("OUTPUT", [rule(DROP)], position="last"), paths())
    assert refusal(chain("OUTPUT", policy="DROP", position="last"), paths()).field == "policy"


def test_every_address_of_the_host_must_be_cut():
    both = paths(dict(PLUGIN4, addresses=["192.0.2.10", "fd00:9::10"]), {})
    lockout.check(owner([{"jump": "DROP", "ip_version": "ipv4"}]), both)
    assert refusal(owner([{"jump": "DROP"}]), both).field == "rules[0]"


def test_absent_is_never_refused():
    lockout.check(owner([{"jump": "DROP"}], state="absent"), paths())


# ---------------------------------------------------------------- the shared task flow

class FakeModule:
    def __init__(self, **params):
        self.params = dict(dict(allow_lockout=False, state="present", management_path=PLUGIN4), **params)


def test_the_task_flow_guards_and_allow_lockout_skips(monkeypatch):
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    policy = owner([{"protocol": "tcp", "source_port": "22", "jump": "DROP"}])
    with pytest.raises(NetconfineError) as info:
        netfilter_task.guard_lockout(FakeModule(), policy)
    assert info.value.field == "rules[0]"
    netfilter_task.guard_lockout(FakeModule(allow_lockout=True), policy)
    netfilter_task.guard_lockout(FakeModule(management_path={"connection": "local", "addresses": []}), policy)
