"""secmark_model / secmark_cil: params -> CIL text and mangle chains (golden), and bad input naming its field."""

from __future__ import annotations

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils import model, secmark_cil, selinux_store
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError
from ansible_collections.paranoid.netconfine.plugins.module_utils.iptables_render import render_chain
from ansible_collections.paranoid.netconfine.plugins.module_utils.secmark_model import build_policy

PROXY_LABEL = {"direction": "output", "protocol": "tcp", "destination": ["192.0.2.80"],
               "destination_port": "80", "packet_type": "myhttp_client_packet_t"}
ARTICLE = {"name": "proxy", "state": "present",
           "packet_types": [{"name": "myhttp_client_packet_t", "kind": "client", "domains": ["mozilla_t"]}],
           "allow_unlabeled": {"domains": None, "audit": True},
           "labels": [PROXY_LABEL]}

ARTICLE_CIL = """\
;; netconfine module for task proxy: managed by paranoid.netconfine, do not edit
;; packet type myhttp_client_packet_t
(type myhttp_client_packet_t)
(roletype object_r myhttp_client_packet_t)
(typeattributeset client_packet_type (myhttp_client_packet_t))
(typeattributeset packet_type (myhttp_client_packet_t))
(typeattributeset cil_gen_require mozilla_t)
(allow mozilla_t myhttp_client_packet_t (packet (send recv)))
;; unlabeled_t: what no label matched (every packet once any SECMARK rule exists)
(typeattributeset cil_gen_require unlabeled_t)
(typeattributeset cil_gen_require domain)
(allow domain unlabeled_t (packet (send recv)))
(auditallow domain unlabeled_t (packet (send recv)))
"""


def params(**kw):
    out = dict(ARTICLE)
    out.update(kw)
    return out


def module_of(policy):
    (found,) = [r for r in policy.resources if isinstance(r, selinux_store.SelinuxModule)]
    return found


def test_article_cil_is_the_articles_module():
    policy = build_policy(params())
    mod = module_of(policy)
    assert mod.name == "netconfine_proxy" and mod.priority == 400
    assert mod.cil == ARTICLE_CIL
    # the loaded-policy types it relies on, with the option that named them
    assert mod.types == (("mozilla_t", "packet_types[0].domains[0]"),)
    # compiler line 8 (the allow) comes from the domain that asked for it
    assert dict(mod.line_fields)[8] == "packet_types[0].domains[0]"


def test_article_chain_is_the_refpolicy_skeleton():
    policy = build_policy(params())
    out, inp = policy.chains_for(4)
    assert out.table == "mangle" and out.hook == model.Hook("OUTPUT", "first")
    assert out.name.startswith("NC-proxy-output-")
    assert render_chain(out) == (
        "-A %s -m conntrack --ctstate RELATED,ESTABLISHED -j CONNSECMARK --restore" % out.name,
        "-A %s -d 192.0.2.80/32 -p tcp -m tcp --dport 80 -j SECMARK "
        "--selctx system_u:object_r:myhttp_client_packet_t:s0" % out.name,
        "-A %s -m conntrack --ctstate NEW -j CONNSECMARK --save" % out.name,
    )
    # the replies come in through INPUT: restored there to the connection's label, not unlabeled_t
    assert inp.hook == model.Hook("INPUT", "first") and inp.name.startswith("NC-proxy-input-")
    assert render_chain(inp) == (
        "-A %s -m conntrack --ctstate RELATED,ESTABLISHED -j CONNSECMARK --restore" % inp.name,)
    # an IPv4 destination only: the IPv6 chains exist (owned, hooked) but hold nothing
    assert [c.rules for c in policy.chains_for(6)] == [(), ()]


def test_directions_get_one_chain_each():
    ssh = {"direction": "input", "protocol": "tcp", "destination_port": "22", "packet_type": "ssh_server_packet_t"}
    dns = {"direction": "forward", "protocol": "udp", "destination_port": "53",
           "context": "system_u:object_r:dns_client_packet_t:s0"}
    labels = [dict(PROXY_LABEL), ssh, dns]
    policy = build_policy(params(labels=labels))
    hooks = [(c.hook.builtin, c.name.split("-")[2]) for c in policy.chains]
    assert hooks == [("OUTPUT", "output"), ("INPUT", "input"), ("FORWARD", "forward")]
    fwd = policy.chains_for(6)[2]
    assert [r.target for r in fwd.rules] == [
        model.ConnSecmark("restore"), model.Secmark("system_u:object_r:dns_client_packet_t:s0"),
        model.ConnSecmark("save")]
    # existing packet types are checked against the loaded policy, ours are not
    assert ("ssh_server_packet_t", "labels[1].packet_type") in module_of(policy).types
    assert ("dns_client_packet_t", "labels[2].context") in module_of(policy).types


def test_server_kind_and_specific_unlabeled_domains():
    policy = build_policy(params(
        packet_types=[{"name": "a_packet_t", "kind": "server", "domains": ["httpd_t", "sshd_t"]},
                      {"name": "b_packet_t", "kind": "client", "domains": []}],
        allow_unlabeled={"domains": ["sshd_t"], "audit": False}, labels=[]))
    cil = module_of(policy).cil
    assert "(typeattributeset server_packet_type (a_packet_t))" in cil
    assert "(allow sshd_t unlabeled_t (packet (send recv)))" in cil
    assert "auditallow" not in cil
    assert cil.count("(typeattributeset cil_gen_require sshd_t)") == 1
    assert policy.chains == ()


def test_rendering_is_deterministic():
    assert module_of(build_policy(params())).cil == module_of(build_policy(params())).cil


def test_module_name_from_task_name():
    assert secmark_cil.module_name("web.proxy-1") == "netconfine_web_proxy_1"


def test_absent_owns_every_direction_and_the_module_whatever_is_declared():
    policy = build_policy({"name": "proxy", "state": "absent", "labels": [], "packet_types": []})
    assert not policy.present
    assert [c.hook.builtin for c in policy.chains] == ["OUTPUT", "INPUT", "FORWARD"]
    assert module_of(policy).name == "netconfine_proxy"


def test_labels_with_existing_types_only_own_an_empty_module():
    policy = build_policy(params(packet_types=[], allow_unlabeled=None,
                                 labels=[{"direction": "input", "protocol": "tcp", "destination_port": "22",
                                          "packet_type": "ssh_server_packet_t"}]))
    assert module_of(policy).cil == ""


# ---------------------------------------------------------------- the unlabeled_t guard

SSH_IN = {"direction": "input", "protocol": "tcp", "destination_port": "22", "packet_type": "ssh_server_packet_t"}
SSH_OUT = {"direction": "output", "protocol": "tcp", "source_port": "22", "packet_type": "ssh_server_packet_t"}


@pytest.mark.parametrize("extra", [SSH_IN, SSH_OUT, dict(SSH_IN, destination_port="1:1024")])
def test_guard_accepts_a_label_covering_ssh(extra):
    build_policy(params(allow_unlabeled=None, labels=[PROXY_LABEL, extra]))


@pytest.mark.parametrize("extra", [None, dict(SSH_IN, destination_port="2222"), dict(SSH_IN, protocol="udp"),
                                   dict(SSH_IN, source=["192.0.2.1"]), dict(SSH_OUT, direction="input")])
def test_guard_refuses_labels_that_would_cut_ssh(extra):
    labels = [PROXY_LABEL] + ([extra] if extra else [])
    with pytest.raises(NetconfineError) as err:
        build_policy(params(allow_unlabeled=None, labels=labels))
    assert err.value.field == "labels"
    assert "unlabeled_t" in str(err.value) and "sshd_t" in str(err.value)


def test_guard_follows_ssh_port_and_unlabeled_deny():
    build_policy(params(allow_unlabeled=None, labels=[PROXY_LABEL, dict(SSH_IN, destination_port="2222")],
                        ssh_port=2222))
    build_policy(params(allow_unlabeled=None, labels=[PROXY_LABEL], unlabeled="deny"))


# ---------------------------------------------------------------- bad input names its field

BAD = [
    (dict(packet_types=[{"name": "myhttp_t", "domains": []}]), "packet_types[0].name", "_packet_t"),
    (dict(packet_types=[{"name": "_packet_t", "domains": []}]), "packet_types[0].name", "_packet_t"),
    (dict(packet_types=[{"name": "Myhttp_packet_t", "domains": []}]), "packet_types[0].name", "lower-case"),
    (dict(packet_types=[{"name": "x_packet_t)(allow", "domains": []}]), "packet_types[0].name", "lower-case"),
    (dict(packet_types=[{"name": "x_packet_t", "domains": ["mozilla_t)) (allow user_t self"]}]),
     "packet_types[0].domains[0]", "SELinux name"),
    (dict(packet_types=[{"name": "x_packet_t", "domains": ["a_t", "mozilla_t;x"]}]),
     "packet_types[0].domains[1]", "SELinux name"),
    (dict(packet_types=[{"name": "x_packet_t", "domains": ["mozilla_t\n(allow"]}]),
     "packet_types[0].domains[0]", "SELinux name"),
    (dict(packet_types=[{"name": "x_packet_t", "domains": ["a_t", "a_t"]}]), "packet_types[0].domains[1]", "twice"),
    (dict(packet_types=[{"name": "x_packet_t", "kind": "peer", "domains": []}]), "packet_types[0].kind", "client"),
    (dict(packet_types=[{"name": "x_packet_t"}, {"name": "x_packet_t"}]), "packet_types[1].name", "twice"),
    (dict(allow_unlabeled={"domains": ["domain", "bad name"], "audit": True}), "allow_unlabeled.domains[1]",
     "SELinux name"),
    (dict(allow_unlabeled={"domains": [], "audit": True}), "allow_unlabeled.domains", "at least one"),
    (dict(unlabeled="deny"), "unlabeled", "contradicts"),
    (dict(priority=0), "priority", "between 1 and 999"),
    (dict(priority=1000), "priority", "between 1 and 999"),
    (dict(labels=[dict(PROXY_LABEL, packet_type=None)]), "labels[0].packet_type", "exactly one"),
    (dict(labels=[dict(PROXY_LABEL, context="system_u:object_r:x_packet_t:s0")]), "labels[0].packet_type",
     "exactly one"),
    (dict(labels=[dict(PROXY_LABEL, packet_type=None, context="system_u:object_r:x_packet_t")]),
     "labels[0].context", "user:role:type:level"),
    (dict(labels=[dict(PROXY_LABEL, packet_type=None, context="system_u:object_r:x_t:s0 -j ACCEPT")]),
     "labels[0].context", "user:role:type:level"),
    (dict(labels=[dict(PROXY_LABEL, packet_type=None, context='system_u:object_r:x_t:s0"')]),
     "labels[0].context", "user:role:type:level"),
    (dict(labels=[dict(PROXY_LABEL, packet_type="http_port_t")]), "labels[0].packet_type", "_packet_t"),
    (dict(labels=[dict(PROXY_LABEL, destination=["192.0.2.80/24"])]), "labels[0].destination", "host bits"),
    (dict(labels=[dict(PROXY_LABEL, destination=["1.2.3"])]), "labels[0].destination", "not a valid address"),
    (dict(labels=[dict(PROXY_LABEL, destination_port="70000")]), "labels[0].destination_port", "65535"),
    (dict(labels=[dict(PROXY_LABEL, protocol=None)]), "labels[0].destination_port", "needs protocol"),
    (dict(labels=[dict(PROXY_LABEL, direction="sideways")]), "labels[0].direction", "output"),
    (dict(name="bad name"), "name", "letters"),
    (dict(packet_types=[], allow_unlabeled=None, labels=[]), "packet_types", "declares nothing"),
]


@pytest.mark.parametrize("change, field, words", BAD)
def test_bad_input_names_the_field(change, field, words):
    with pytest.raises(NetconfineError) as err:
        build_policy(params(**change))
    assert err.value.field == field
    assert words in str(err.value)


def test_cil_never_holds_more_than_validated_names():
    # whatever passes the model is made of [a-z0-9_] names and our fixed punctuation only
    cil = module_of(build_policy(params())).cil
    body = "".join(line for line in cil.splitlines() if not line.startswith(";;"))
    assert set(body) <= set("abcdefghijklmnopqrstuvwxyz0123456789_() ")
