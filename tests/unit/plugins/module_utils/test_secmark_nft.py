"""secmark_label on the nftables backend: secmark objects, restore/label/save chains (golden), and the order
of the policy module and the rules, through engine.converge over the fake nft and the fake semodule.

The golden lines are nft's own syntax for what ``nft -j list`` prints back (nft 1.0.6; the JSON forms are
those of nft's tests/shell/testcases/json/0005secmark_objref_0). The QEMU guest tier
(tests/integration/test_secmark_qemu.py) round-trips them through Debian's stock kernel under enforcing SELinux.
"""

from __future__ import annotations

import json

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils import engine, nft_backend, secmark_render
from ansible_collections.paranoid.netconfine.plugins.module_utils.nft_backend import NftablesBackend
from ansible_collections.paranoid.netconfine.plugins.module_utils.secmark_model import build_policy

from test_nft_backend import NFT, FakeNft, batches, policy as owner_policy, text
# lock_dir / store: fixtures used here
from test_selinux_store import store  # noqa: F401 pylint: disable=unused-import
from test_sysctl_state import lock_dir  # noqa: F401 pylint: disable=unused-import

PROXY_LABEL = {"direction": "output", "protocol": "tcp", "destination": ["192.0.2.80"],
               "destination_port": "80", "packet_type": "myhttp_client_packet_t"}
SSH_LABEL = {"direction": "input", "protocol": "tcp", "destination_port": "22", "packet_type": "ssh_server_packet_t"}
ARTICLE = {"name": "proxy", "state": "present",
           "packet_types": [{"name": "myhttp_client_packet_t", "kind": "client", "domains": ["mozilla_t"]}],
           "allow_unlabeled": {"domains": None, "audit": True}, "labels": [PROXY_LABEL, SSH_LABEL]}
OUT = "NC-proxy-output-e3e48447"
IN = "NC-proxy-input-3636c675"
MYHTTP = "system_u:object_r:myhttp_client_packet_t:s0"
SSH = "system_u:object_r:ssh_server_packet_t:s0"


def secmark_policy(**kw):
    params = dict(ARTICLE)
    params.update(kw)
    return build_policy(params)


def converge(fake, pol, check=False, states=()):
    return engine.converge(pol, [NftablesBackend(fake, NFT)], check_mode=check, lock_timeout=5, states=states)


def objects(fake):
    return fake.tables.get("inet netconfine", {}).get("secmarks", {})


GOLDEN_TABLE = {
    "mangle_input": [("filter", "input", -151), "accept", 'jump %s comment "netconfine:proxy"' % IN],
    "mangle_output": [("route", "output", -151), "accept", 'jump %s comment "netconfine:proxy"' % OUT],
    # restore for established/related first, one label per rule, save for new last (refpolicy's skeleton)
    OUT: ["ct state established,related meta secmark set ct secmark",
          'ip daddr 192.0.2.80 tcp dport 80 meta secmark set "%s.myhttp_client_packet_t"' % OUT,
          "meta nfproto ipv4 ct state new ct secmark set meta secmark"],
    IN: ["ct state established,related meta secmark set ct secmark",
         'tcp dport 22 meta secmark set "%s.ssh_server_packet_t"' % IN,
         "ct state new ct secmark set meta secmark"],
}


def test_article_golden_and_idempotent(lock_dir):
    fake = FakeNft()
    pol = secmark_policy()
    checked = converge(fake, pol, check=True)
    assert checked["changed"] and fake.tables == {}
    assert converge(fake, pol)["changed"]
    assert text(fake) == GOLDEN_TABLE
    assert objects(fake) == {OUT + ".myhttp_client_packet_t": MYHTTP, IN + ".ssh_server_packet_t": SSH}
    assert not converge(fake, pol, check=True)["changed"]
    again = converge(fake, pol)
    assert not again["changed"] and again["scripts"] == {}
    assert 'secmark %s.myhttp_client_packet_t { "%s" }' % (OUT, MYHTTP) in again["rendered"]["nftables ruleset"]


def test_objects_are_added_before_the_rules_that_name_them(lock_dir):
    fake = FakeNft()
    converge(fake, secmark_policy())
    (batch,) = [json.loads(data)["nftables"] for _argv, data in batches(fake)]
    kinds = [(verb, kind) for cmd in batch for verb, obj in cmd.items() for kind in obj]
    first_rule = kinds.index(("add", "rule"))
    assert kinds[1:3] == [("add", "secmark"), ("add", "secmark")] and first_rule > 2


def test_a_context_other_than_the_packet_default_gets_its_own_object(lock_dir):
    fake = FakeNft()
    mls = "system_u:object_r:myhttp_client_packet_t:s0:c1"
    converge(fake, secmark_policy(labels=[dict(PROXY_LABEL, packet_type=None, context=mls), SSH_LABEL]))
    name = secmark_render.object_name(OUT, mls)
    assert name.startswith(OUT + ".myhttp_client_packet_t-") and objects(fake)[name] == mls


def test_a_label_dropped_takes_its_object_along_after_its_rule(lock_dir):
    fake = FakeNft()
    converge(fake, secmark_policy())
    result = converge(fake, secmark_policy(labels=[SSH_LABEL]))
    assert result["changed"]
    assert objects(fake) == {IN + ".ssh_server_packet_t": SSH}
    assert text(fake)[OUT] == ["ct state established,related meta secmark set ct secmark"]


def _drift_label_rule_deleted(fake):
    fake.chain(OUT)["rules"].pop(1)


def _drift_object_context_replaced(fake):
    # made by hand: no rule names it for a moment, so it can be deleted and added again with another context
    rules = fake.chain(OUT)["rules"]
    fake.chain(OUT)["rules"] = []
    objects(fake)[OUT + ".myhttp_client_packet_t"] = SSH
    fake.chain(OUT)["rules"] = rules


def _drift_table_deleted(fake):
    del fake.tables["inet netconfine"]


@pytest.mark.parametrize("drift", [_drift_label_rule_deleted, _drift_object_context_replaced, _drift_table_deleted])
def test_drift_is_reported_and_repaired(lock_dir, drift):
    fake = FakeNft()
    pol = secmark_policy()
    converge(fake, pol)
    drift(fake)
    assert converge(fake, pol, check=True)["changed"]
    assert converge(fake, pol)["changed"]
    assert text(fake) == GOLDEN_TABLE and objects(fake)[OUT + ".myhttp_client_packet_t"] == MYHTTP
    assert not converge(fake, pol)["changed"]


def test_absent_removes_rules_then_objects_and_keeps_other_tasks(lock_dir):
    fake = FakeNft()
    owner = owner_policy()
    converge(fake, owner)
    converge(fake, secmark_policy())
    gone = build_policy({"name": "proxy", "state": "absent", "labels": [], "packet_types": []})
    result = converge(fake, gone)
    assert result["changed"]
    batch = json.loads(batches(fake)[-1][1])["nftables"]
    deletes = [cmd["delete"] for cmd in batch if "delete" in cmd]
    assert [list(d)[0] for d in deletes] == ["chain", "chain", "chain", "chain", "secmark", "secmark"]
    assert objects(fake) == {} and not [c for c in text(fake) if c.startswith(("NC-proxy", "mangle_"))]
    assert not converge(fake, gone)["changed"]
    # the last task leaving removes the table, objects and all
    converge(fake, secmark_policy())
    converge(fake, owner_policy(state="absent"))
    converge(fake, gone)
    assert fake.tables == {}


def test_the_policy_module_goes_in_before_and_out_after_the_rules(lock_dir, store):
    semodule, seam = store
    fake = FakeNft()
    log = []

    def run(argv, data=None):
        log.append("nft" if argv[0] == NFT and argv[1:] == ["-j", "-f", "-"] else
                   "semodule" if "--list-modules=full" not in argv and argv[0] != NFT else "read")
        return (fake if argv[0] == NFT else semodule)(argv, data)

    seam.run = run
    backend = NftablesBackend(run, NFT)
    engine.converge(secmark_policy(), [backend], states=[seam], lock_timeout=5)
    assert [e for e in log if e != "read"] == ["semodule", "nft"]
    del log[:]
    gone = build_policy({"name": "proxy", "state": "absent", "labels": [], "packet_types": []})
    engine.converge(gone, [backend], states=[seam], lock_timeout=5)
    assert [e for e in log if e != "read"] == ["nft", "semodule"]
    assert semodule.installed == {} and fake.tables == {}


def test_secmark_commands_in_nft_syntax():
    cmds = [{"add": {"secmark": {"family": "inet", "table": "netconfine", "name": OUT + ".a_packet_t",
                                 "context": "system_u:object_r:a_packet_t:s0"}}},
            {"add": {"rule": {"family": "inet", "table": "netconfine", "chain": OUT,
                              "expr": [{"secmark": OUT + ".a_packet_t"}]}}},
            {"add": {"rule": {"family": "inet", "table": "netconfine", "chain": OUT,
                              "expr": [secmark_render.SAVE]}}},
            {"delete": {"secmark": {"family": "inet", "table": "netconfine", "name": OUT + ".a_packet_t"}}}]
    assert nft_backend.batch_text(cmds).splitlines() == [
        'add secmark inet netconfine %s.a_packet_t { "system_u:object_r:a_packet_t:s0" }' % OUT,
        'add rule inet netconfine %s meta secmark set "%s.a_packet_t"' % (OUT, OUT),
        "add rule inet netconfine %s ct secmark set meta secmark" % OUT,
        "delete secmark inet netconfine %s.a_packet_t" % OUT]


def test_parse_list_reads_secmark_objects():
    listed = json.dumps({"nftables": [
        {"metainfo": {"version": "1.0.6"}}, {"table": {"family": "inet", "name": "netconfine", "handle": 4}},
        {"secmark": {"family": "inet", "name": "x.a_packet_t", "table": "netconfine", "handle": 1,
                     "context": "system_u:object_r:a_packet_t:s0"}}]})
    assert nft_backend.parse_list(listed)["inet netconfine"].secmarks == (
        ("x.a_packet_t", "system_u:object_r:a_packet_t:s0"),)


@pytest.mark.parametrize("name, chain, ours", [
    (OUT + ".a_packet_t", OUT, True), (OUT + ".1", OUT, False), (OUT, OUT, False), (IN + ".a_packet_t", OUT, False)])
def test_objects_belong_to_their_chain(name, chain, ours):
    assert secmark_render.is_object_of(name, chain) is ours


class Probe:
    def __init__(self, rc, err=""):
        self.rc, self.err, self.calls = rc, err, []

    def __call__(self, argv, data=None):
        self.calls.append((argv, data))
        return self.rc, "", self.err


def test_auto_asks_the_kernel_for_secmark_objects(tmp_path):
    fs = tmp_path / "selinuxfs"
    backend = NftablesBackend(Probe(0), NFT, selinuxfs=str(fs))
    assert "SELinux is not active" in backend.refuses(secmark_policy())
    assert backend.run.calls == []
    (fs / "initial_contexts").mkdir(parents=True)
    (fs / "initial_contexts" / "unlabeled").write_bytes(b"system_u:object_r:unlabeled_t:s0\0")
    assert backend.refuses(secmark_policy()) is None
    (argv, data), = backend.run.calls
    assert argv == [NFT, "-c", "-f", "-"]
    assert data == ('add table inet netconfine_probe\n'
                    'add secmark inet netconfine_probe probe { "system_u:object_r:unlabeled_t:s0" }\n')
    refused = NftablesBackend(Probe(1, "Error: Could not process rule: No such file or directory\n"), NFT,
                              selinuxfs=str(fs))
    assert refused.refuses(secmark_policy()) == (
        "the kernel refuses nftables secmark objects (nft -c: Error: Could not process rule: No such file or directory)")
    # nothing to label, nothing to ask: policies without SECMARK targets and removals
    for pol in (owner_policy(), build_policy({"name": "proxy", "state": "absent"})):
        assert refused.refuses(pol) is None
