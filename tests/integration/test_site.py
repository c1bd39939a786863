"""playbooks/site.yml, for real: groups -> roles on a namespace host, idempotence, the verify tag, and the
collection playbook paranoid.netconfine.site imported from a user's own playbook."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nchelpers import ROOT, ansible_playbook, iptables_save, run
from test_netns_service import INSIDE, OTHER_PORT, PORT, UPLINK, daemon_in
from test_netns_service import hosts as machine_host
# the machine / client / service-namespace fixture of the netns_service tests, by another name here
from test_netns_service import site as netns_site  # noqa: F401 pylint: disable=unused-import

SITE = ROOT / "playbooks" / "site.yml"
TG = "paranoid.netconfine.tunnel_guard : "
NC = "paranoid.netconfine.netns_confine : "


@pytest.fixture
def fleet(netns_host, make_user, make_group, listener, tmp_path):
    """One namespace host in tunnel_clients and egress_restricted, with listeners on 992 and 273."""
    ns = netns_host
    plebian, noinet = make_user(), make_group()
    listener(ns, 992)
    listener(ns, 273)
    groups = tmp_path / "groups.yml"
    groups.write_text(yaml.safe_dump({"all": {"children": {
        "tunnel_clients": {"hosts": {ns: None}}, "egress_restricted": {"hosts": {ns: None}}}}}))
    host_vars = {
        "ansible_become": False,
        "tunnel_guard_backend": "iptables",
        "tunnel_guard_tunnels": [{"name": "telnet", "port": 992, "allow_users": ["root"]},
                                 {"name": "rsync", "port": 273, "allow_users": ["root"]}],
        "tunnel_guard_verify_denied_user": plebian,
        "user_egress_backend": "iptables",
        "user_egress_policies": [
            {"name": "noinet", "groups": [noinet], "jump": "REJECT"},
            {"name": "ping-allowed", "users": ["root"], "protocol": "icmp", "icmp_type": "echo-request", "jump": "ACCEPT"},
            {"name": "no-ping", "protocol": "icmp", "icmp_type": "echo-request", "jump": "REJECT"},
        ],
        "user_egress_verify_other_user": plebian,
    }
    return ns, {ns: host_vars}, ("-i", str(groups))


def site(fleet, check=False, args=(), extra=None, playbook=SITE):
    ns, hosts, inventory = fleet
    play = ansible_playbook(playbook, hosts, extra or {}, check=check, diff=True, args=inventory + tuple(args))
    assert play.rc == 0, play.output
    return play


def changed_tasks(play, ns):
    return [r.task.split(" : ")[-1] for r in play.results.get(ns, []) if r.changed]


def test_site_converges_each_group_idempotently_and_verifies(fleet):
    ns = fleet[0]
    first_check = site(fleet, check=True)
    assert changed_tasks(first_check, ns) == ["Only the allowed owners may use the tunnel listeners",
                                              "Apply the per-user and per-group egress policies"]
    assert "NC-" not in iptables_save(ns, 4)
    applied = site(fleet)
    assert len(changed_tasks(applied, ns)) == 2
    save = iptables_save(ns, 4)
    assert "netconfine:tunnel_guard" in save and "netconfine:user_egress" in save
    for again in (site(fleet, check=True), site(fleet)):
        assert changed_tasks(again, ns) == [], again.output
        assert again.stats[ns]["changed"] == 0
    # a plain converge does not probe
    assert {r.status for r in applied.results[ns] if r.action == "paranoid.netconfine.probe"} == {"skipped"}

    verify = site(fleet, args=("--tags", "verify"))
    ran = [r for r in verify.results[ns] if r.status != "skipped"]
    assert {r.action for r in ran} == {"paranoid.netconfine.probe", "ansible.builtin.validate_argument_spec"}
    probes = [p for r in ran if r.action == "paranoid.netconfine.probe" for p in r.result["probes"]]
    assert {p["outcome"] for p in probes} >= {"connected", "refused"}
    assert all(p["as_expected"] for p in probes), verify.output
    names = [p["name"] for p in probes]
    assert "tunnel_guard: root -> [::1]:992/tcp" in names and any("(as " in n for n in names)
    assert verify.stats[ns]["changed"] == 0


def test_verify_fails_on_drift_and_audit_mode_does_not_change(fleet, tmp_path):
    """With a role's rules gone, --tags verify fails naming the probe; netconfine_audit runs in check mode."""
    ns = fleet[0]
    site(fleet, extra={"user_egress_state": "absent", "tunnel_guard_state": "absent"})
    audit = site(fleet, extra={"netconfine_audit": True, "netconfine_verify": True, "netconfine_verify_fail": False})
    assert "NC-" not in iptables_save(ns, 4)       # check mode: nothing applied
    tunnel = audit.task(ns, TG + "Only the allowed owners may use the tunnel listeners")
    assert tunnel.changed and "diff" in tunnel.result
    probes = audit.task(ns, TG + "Probe the tunnel listeners as allowed and denied users").result
    assert probes["mismatches"] > 0               # the denied user still connects: not enforced yet

    ns_, hosts, inventory = fleet
    failed = ansible_playbook(SITE, hosts, {}, args=inventory + ("--tags", "verify"))
    assert failed.rc == 2, failed.output
    res = failed.task(ns, TG + "Probe the tunnel listeners as allowed and denied users")
    assert res.failed and "expected refused, got connected" in res.msg


def test_collection_playbook_import(fleet, tmp_path):
    mine = tmp_path / "mine.yml"
    mine.write_text("- name: The collection's site\n  ansible.builtin.import_playbook: paranoid.netconfine.site\n")
    first = site(fleet, playbook=Path(mine))
    assert len(changed_tasks(first, fleet[0])) == 2
    assert changed_tasks(site(fleet, playbook=Path(mine)), fleet[0]) == []


def test_netns_hosts_converge_and_verify_from_a_client(netns_site, make_user, tmp_path):
    """netns_hosts -> netns_confine (seed 004); --tags verify runs netns_confine_verify on the client
    (netns_confine_verify_from): the forward connects, another port is refused, the namespace's own address,
    routed by the client through the machine, is dropped."""
    machine, client, name = netns_site
    run("ip", "-n", client, "route", "add", "192.0.2.0/30", "via", UPLINK)
    groups = tmp_path / "groups.yml"
    groups.write_text(yaml.safe_dump({"all": {"children": {"netns_hosts": {"hosts": {machine: None}}}}}))
    hosts = machine_host(machine)
    hosts[machine].update({
        "ansible_become": False,
        "netns_confine_backend": "iptables",
        "netns_confine_services": [{"name": name, "subnet": "192.0.2.0/30", "outbound_interface": "m0",
                                    "port_forwards": [{"host_port": PORT}]}],
        "netns_confine_verify_from": client,
        "netns_confine_verify": [
            {"name": "the forward", "host": UPLINK, "port": PORT, "receive": True, "expect": "allowed"},
            {"name": "not forwarded", "host": UPLINK, "port": OTHER_PORT, "expect": "refused"},
            {"name": "the namespace itself", "host": INSIDE, "port": PORT, "timeout": 1, "expect": "timeout"}],
    })
    hosts[client] = {}
    fleet = (machine, hosts, ("-i", str(groups)))
    applied = site(fleet)
    assert changed_tasks(applied, machine) == ["Each daemon in its own network namespace"]
    assert {r.status for r in applied.results[machine] if r.action == "paranoid.netconfine.probe"} == {"skipped"}
    again = site(fleet)
    assert changed_tasks(again, machine) == [] and again.stats[machine]["changed"] == 0, again.output

    with daemon_in(name, make_user(), PORT):
        verify = site(fleet, args=("--tags", "verify"))
    probes = verify.task(machine, NC + "Probe the services' port forwards").result["probes"]
    assert [p["outcome"] for p in probes] == ["connected", "refused", "timeout"], verify.output
    assert all(p["as_expected"] for p in probes) and verify.stats[machine]["changed"] == 0

    # the probes really ran on the client: from the machine itself the namespace's address answers
    hosts[machine]["netns_confine_verify_from"] = ""
    with daemon_in(name, make_user(), PORT):
        failed = ansible_playbook(SITE, hosts, {}, args=fleet[2] + ("--tags", "verify"))
    assert failed.rc == 2, failed.output
    res = failed.task(machine, NC + "Probe the services' port forwards")
    assert res.failed and "expected timeout, got connected" in res.msg, failed.output
