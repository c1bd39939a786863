"""paranoid.netconfine.secmark_label on this machine, through ansible-playbook in a namespace.

This machine's kernel has SELinux compiled in but not active, so here the module must (a) render
everything with ``state: rendered`` and no store at all, (b) refuse ``state: present`` with the clear
"SELinux is not enabled" error and change nothing, and (c) refuse bad input naming the field, before
looking at anything. The enforcing behaviour is proven in the UML guest (test_secmark_guest.py).
"""

from __future__ import annotations

import yaml

from nchelpers import ansible_playbook, iptables_save

PROXY = {"name": "proxy", "backend": "iptables",
         "packet_types": [{"name": "myhttp_client_packet_t", "kind": "client", "domains": ["mozilla_t"]}],
         "allow_unlabeled": {"domains": ["domain"], "audit": True},
         "labels": [{"direction": "output", "protocol": "tcp", "destination": ["192.0.2.80"],
                     "destination_port": "80", "packet_type": "myhttp_client_packet_t"}]}


def secmark_label(ns: str, args: dict, expect_failure: bool = False, check: bool = False):
    play = ansible_playbook(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "secmark_label", "paranoid.netconfine.secmark_label": args}]}]), [ns], check=check)
    result = play.task(ns, "secmark_label")
    assert result.failed is expect_failure, play
    return result


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
    before = {f: iptables_save(netns_host, f) for f in (4, 6)}
    for check in (True, False):
        res = secmark_label(netns_host, PROXY, expect_failure=True, check=check)
        assert res.result["field"] == "state"
        assert "SELinux is not enabled on this host" in res.result["msg"], res.result
    assert {f: iptables_save(netns_host, f) for f in (4, 6)} == before


def test_bad_input_names_the_field(netns_host):
    cases = [
        (dict(PROXY, packet_types=[{"name": "x_packet_t", "domains": ["mozilla_t) (allow user_t self"]}]),
         "packet_types[0].domains[0]"),
        (dict(PROXY, labels=[dict(PROXY["labels"][0], destination=["192.0.2.80/24"])]), "labels[0].destination"),
        (dict(PROXY, allow_unlabeled=None), "labels"),
        (dict(PROXY, backend="nftables"), "backend"),
    ]
    for args, field in cases:
        res = secmark_label(netns_host, dict(args, state="rendered") if field != "backend" else args,
                            expect_failure=True)
        assert res.result["field"] == field, res.result
