"""paranoid.netconfine.secmark_label on this machine, through ansible-playbook in a namespace.

This machine's kernel has SELinux compiled in but not active, so here the module must (a) render
everything with ``state: rendered`` and no store at all, (b) refuse ``state: present`` with the clear
"SELinux is not enabled" error and change nothing, and (c) refuse bad input naming the field, before
looking at anything. The enforcing behaviour is proven in the UML guest (test_secmark_guest.py).
"""

from __future__ import annotations

import pytest
import yaml

from nchelpers import ansible_playbook, iptables_save, run

PROXY = {"name": "proxy", "backend": "iptables",
         "packet_types": [{"name": "myhttp_client_packet_t", "kind": "client", "domains": ["mozilla_t"]}],
         "allow_unlabeled": {"domains": ["domain"], "audit": True},
         "labels": [{"direction": "output", "protocol": "tcp", "destination": ["192.0.2.80"],
                     "destination_port": "80", "packet_type": "myhttp_client_packet_t"}]}


def nft_ruleset(ns: str) -> str:
    return run("ip", "netns", "exec", ns, "nft", "list", "ruleset").stdout


def secmark_label(ns: str, args: dict, expect_failure: bool = False, check: bool = False):
    play = ansible_playbook(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "secmark_label", "paranoid.netconfine.secmark_label": args}]}]), [ns], check=check)
    result = play.task(ns, "secmark_label")
    assert result.failed is expect_failure, play
    return result


ROLE_PLAY = yaml.safe_dump([{"hosts": "all", "gather_facts": False,
                             "roles": [{"role": "paranoid.netconfine.secmark_policy"}]}])
ROLE_TASK = "paranoid.netconfine.secmark_policy : Install the packet types and label the packets"


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_role_rendered_is_idempotent_and_touches_nothing(netns_host, backend):
    """state: rendered anywhere: check -> apply -> check -> apply all report changed=false, the kernel is untouched."""
    role_vars = {"secmark_policy_name": "proxy", "secmark_policy_state": "rendered", "secmark_policy_backend": backend,
                 "secmark_policy_packet_types": PROXY["packet_types"],
                 "secmark_policy_allow_unlabeled": PROXY["allow_unlabeled"],
                 "secmark_policy_labels": PROXY["labels"]}
    before = ({f: iptables_save(netns_host, f) for f in (4, 6)}, nft_ruleset(netns_host))
    rendered = None
    for check in (True, False, True, False):
        play = ansible_playbook(ROLE_PLAY, [netns_host], extra_vars=role_vars, check=check)
        assert play.rc == 0 and play.stats[netns_host]["changed"] == 0, play
        res = play.task(netns_host, ROLE_TASK)
        assert res.result["backend"] == backend
        assert rendered in (None, res.result["rendered"])
        rendered = res.result["rendered"]
    assert ({f: iptables_save(netns_host, f) for f in (4, 6)}, nft_ruleset(netns_host)) == before
    unit, label = (("nftables ruleset", 'meta secmark set "NC-proxy-output-') if backend == "nftables"
                   else ("iptables 4", "-j SECMARK --selctx"))
    assert label in rendered[unit], rendered


def test_role_verify_tag_runs_only_the_probes_and_fails_on_a_mismatch(netns_host, listener):
    """secmark_policy_verify with --tags verify: only the probes run (the label task does not), in state rendered too;
    a probe whose outcome differs fails the host naming it."""
    listener(netns_host, 8080)
    role_vars = {"secmark_policy_name": "proxy", "secmark_policy_state": "rendered",
                 "secmark_policy_packet_types": PROXY["packet_types"],
                 "secmark_policy_allow_unlabeled": PROXY["allow_unlabeled"],
                 "secmark_policy_labels": PROXY["labels"],
                 "secmark_policy_verify": [{"name": "listener", "host": "127.0.0.1", "port": 8080, "expect": "allowed"},
                                           {"name": "nothing", "host": "::1", "port": 8081, "expect": "refused"}]}
    probe_task = "paranoid.netconfine.secmark_policy : Probe what must still work once the packets are labelled"
    play = ansible_playbook(ROLE_PLAY, [netns_host], extra_vars=role_vars, args=("--tags", "verify"))
    assert play.rc == 0 and play.stats[netns_host]["changed"] == 0, play
    ran = {r.task for r in play.results[netns_host] if r.status != "skipped"}
    assert ROLE_TASK not in ran and probe_task in ran, ran
    assert [(p["name"], p["outcome"]) for p in play.task(netns_host, probe_task).result["probes"]] == [
        ("listener", "connected"), ("nothing", "refused")]

    plain = ansible_playbook(ROLE_PLAY, [netns_host], extra_vars=role_vars)   # a plain converge does not probe
    assert plain.task(netns_host, probe_task).status == "skipped", plain

    role_vars["secmark_policy_verify"][1]["port"] = 8080
    failed = ansible_playbook(ROLE_PLAY, [netns_host], extra_vars=role_vars, args=("--tags", "verify"))
    assert failed.rc == 2, failed
    res = failed.task(netns_host, probe_task)
    assert res.failed and "expected refused, got connected" in res.msg, res.result


def test_rendered_nftables_form(netns_host):
    res = secmark_label(netns_host, dict(PROXY, state="rendered", backend="nftables"))
    assert res.result["changed"] is False and res.result["backend"] == "nftables"
    chain = [c for c in res.result["chains"] if c.startswith("NC-proxy-output-")][0]
    text = res.result["rendered"]["nftables ruleset"]
    assert 'secmark %s.myhttp_client_packet_t { "system_u:object_r:myhttp_client_packet_t:s0" }' % chain in text
    body = text.split("chain %s {\n" % chain)[1].split("}")[0].splitlines()
    # an IPv4 destination only: the IPv6 packets are not labelled, so nothing is restored for them either
    assert body == ["\tmeta nfproto ipv4 ct state established,related meta secmark set ct secmark",
                    '\tip daddr 192.0.2.80 tcp dport 80 meta secmark set "%s.myhttp_client_packet_t"' % chain,
                    "\tmeta nfproto ipv4 ct state new ct secmark set meta secmark"], text
    assert "chain mangle_output { type route hook output priority -151; }" in text
    assert res.result["scripts"]["selinux policy"] == "semodule -X 400 -i netconfine_proxy.cil\n"


def test_rendered_needs_no_selinux(netns_host):
    res = secmark_label(netns_host, dict(PROXY, state="rendered"))
    assert res.result["changed"] is False
    cil = res.result["rendered"]["selinux policy"]
    assert "(allow mozilla_t myhttp_client_packet_t (packet (send recv)))" in cil
    assert "(auditallow domain unlabeled_t (packet (send recv)))" in cil
    chain = [c for c in res.result["chains"] if c.startswith("NC-proxy-output-")][0]
    assert ("-A %s -d 192.0.2.80/32 -p tcp -m tcp --dport 80 -j SECMARK --selctx "
            "system_u:object_r:myhttp_client_packet_t:s0" % chain) in res.result["rendered"]["iptables 4"]
    assert res.result["scripts"]["selinux policy"] == "semodule -X 400 -i netconfine_proxy.cil\n"


def test_present_without_selinux_is_a_clear_error_and_changes_nothing(netns_host):
    before = ({f: iptables_save(netns_host, f) for f in (4, 6)}, nft_ruleset(netns_host))
    for backend in ("iptables", "auto"):
        for check in (True, False):
            # auto: this kernel refuses nftables secmark objects (SELinux inactive), so iptables it is
            res = secmark_label(netns_host, dict(PROXY, backend=backend), expect_failure=True, check=check)
            assert res.result["field"] == "state"
            assert "SELinux is not enabled on this host" in res.result["msg"], res.result
    res = secmark_label(netns_host, dict(PROXY, backend="nftables"), expect_failure=True)
    assert res.result["field"] == "backend"
    assert "backend nftables is not available on this host: SELinux is not active, so the kernel cannot hold " \
        "nftables secmark objects" in res.result["msg"], res.result
    assert ({f: iptables_save(netns_host, f) for f in (4, 6)}, nft_ruleset(netns_host)) == before


def test_bad_input_names_the_field(netns_host):
    cases = [
        (dict(PROXY, packet_types=[{"name": "x_packet_t", "domains": ["mozilla_t) (allow user_t self"]}]),
         "packet_types[0].domains[0]"),
        (dict(PROXY, labels=[dict(PROXY["labels"][0], destination=["192.0.2.80/24"])]), "labels[0].destination"),
        (dict(PROXY, allow_unlabeled=None), "labels"),
        (dict(PROXY, allow_unlabeled=None, backend="nftables"), "labels"),
    ]
    for args, field in cases:
        res = secmark_label(netns_host, dict(args, state="rendered"), expect_failure=True)
        assert res.result["field"] == field, res.result
