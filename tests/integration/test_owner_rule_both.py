"""owner_rule scenarios that behave the same on both backends, written once, run on each (``backend``).

Every test runs the module through ansible-playbook in a namespace of its own, checks behaviour (real
users' TCP connections, accepted or refused) and reads the kernel through one helper,
``nchelpers.kernel_rules(ns, backend)`` (``iptables-save`` or ``nft -j list ruleset``). What differs
between the backends (the iptables chain text, nftables sets and maps, one-transaction failures, a
switch of backend) stays in test_owner_rule.py and test_owner_rule_nftables.py.
"""

from __future__ import annotations

import re
import textwrap

import pytest
import yaml

from nchelpers import BACKENDS, ansible_playbook, kernel_rules, run, try_connect

OWNER_RULE = "paranoid.netconfine.owner_rule"
BOTH = ("127.0.0.1", "::1")


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def owner_rule(ns: str, backend: str, params: dict, check: bool = False):
    """One owner_rule task on ``ns`` with ``backend``; its TaskResult (it must not fail)."""
    play = yaml.safe_dump([{"hosts": "all", "gather_facts": False,
                            "tasks": [{"name": "owner_rule", OWNER_RULE: dict(params, backend=backend)}]}])
    result = ansible_playbook(play, [ns], check=check, diff=True)
    task = result.task(ns, "owner_rule")
    assert not task.failed and result.rc == 0, result.output
    assert task.result["backend"] == backend, task.result
    return task


def four_steps(ns: str, backend: str, params: dict) -> list:
    """check -> apply -> check -> apply; the kernel is unchanged by each check and by the second apply."""
    before = kernel_rules(ns, backend)
    predicted = owner_rule(ns, backend, params, check=True)
    assert kernel_rules(ns, backend) == before, "check mode changed the kernel"
    applied = owner_rule(ns, backend, params)
    after = kernel_rules(ns, backend)
    assert after != before
    steps = [predicted, applied, owner_rule(ns, backend, params, check=True), owner_rule(ns, backend, params)]
    assert [s.changed for s in steps] == [True, True, False, False], [s.result for s in steps]
    assert applied.result["scripts"] == predicted.result["scripts"], "check mode did not predict the run"
    assert kernel_rules(ns, backend) == after
    return steps


def reaches(ns: str, user: str, port: int, group: str | None = None, timeout: float = 2.0) -> dict:
    return {addr: try_connect(ns, user, addr, port, group, timeout=timeout) for addr in BOTH}


def make_foreign_rules(ns: str) -> None:
    """Other tools' rules: iptables-nft's (filter, nat), a Docker-like and a firewalld-like native table."""
    run("iptables", "-A", "OUTPUT", "-p", "tcp", "--dport", "5555", "-m", "comment", "--comment", "keep me",
        "-j", "ACCEPT", ns=ns)
    run("ip6tables", "-A", "OUTPUT", "-p", "udp", "--dport", "5556", "-j", "DROP", ns=ns)
    run("iptables", "-t", "nat", "-N", "DOCKER", ns=ns)
    run("iptables", "-t", "nat", "-A", "OUTPUT", "-d", "198.51.100.0/24", "-j", "DOCKER", ns=ns)
    run("nft", "-f", "-", ns=ns, input=textwrap.dedent("""
        table ip dockerlike {
            set published { type inet_service; elements = { 8080, 8443 } }
            chain out { type filter hook output priority filter + 10; policy accept;
                oifname "docker0" tcp dport @published counter accept
            }
        }
        table inet firewalldlike {
            chain filter_OUTPUT { type filter hook output priority filter + 10; policy accept;
                ct state established,related accept
                meta l4proto ipv6-icmp accept
            }
        }
    """))


STUNNEL = {"name": "stunnel-992", "rules": [
    {"protocol": "tcp", "destination": ["localhost"], "destination_port": "992", "uid_owner": "!root",
     "jump": "REJECT"}]}


# --------------------------------------------------------------------------- seed 000

def test_seed000_only_root_may_use_the_tunnel_on_both_loopbacks(netns_host, make_user, listener, backend):
    ns = netns_host
    alice = make_user()
    listener(ns, 992)
    make_foreign_rules(ns)
    foreign = kernel_rules(ns, backend, ours=False)
    assert reaches(ns, alice, 992) == {"127.0.0.1": "connected", "::1": "connected"}, "control"

    steps = four_steps(ns, backend, STUNNEL)

    assert reaches(ns, alice, 992) == {"127.0.0.1": "refused", "::1": "refused"}
    assert reaches(ns, "root", 992) == {"127.0.0.1": "connected", "::1": "connected"}
    assert try_connect(ns, alice, "127.0.0.1", 993) == "refused"       # closed port: the kernel's own RST
    assert kernel_rules(ns, backend, ours=False) == foreign, "another tool's rules changed"
    chain = steps[1].result["chains"][0]
    assert re.fullmatch(r"NC-stunnel-992-[0-9a-f]{8}", chain)
    mine = "\n".join(kernel_rules(ns, backend, ours=True))
    assert chain in mine and "netconfine:stunnel-992" in mine
    # the other backend holds nothing of ours
    other = next(b for b in BACKENDS if b != backend)
    assert kernel_rules(ns, other, ours=True) == []


def test_seed000_rsync_tunnel_for_members_of_a_group_primary_or_supplementary(
        netns_host, make_user, make_group, listener, backend):
    ns = netns_host
    wheel = make_group()
    primary = make_user(group=wheel)
    secondary = make_user(groups=[wheel])
    outsider = make_user()
    listener(ns, 273)
    params = {"name": "rsync-273", "rules": [
        {"protocol": "tcp", "destination": ["localhost"], "destination_port": "273", "gid_owner": "!" + wheel,
         "suppl_groups": True, "jump": "REJECT", "reject_with": "tcp-reset"}]}
    four_steps(ns, backend, params)
    assert reaches(ns, primary, 273) == {"127.0.0.1": "connected", "::1": "connected"}
    assert reaches(ns, secondary, 273) == {"127.0.0.1": "connected", "::1": "connected"}
    assert reaches(ns, outsider, 273) == {"127.0.0.1": "refused", "::1": "refused"}
    # running as the group (sg wheel -c CMD) is membership too, as with --suppl-groups
    assert reaches(ns, outsider, 273, group=wheel) == {"127.0.0.1": "connected", "::1": "connected"}

    # a new member is drift on nftables (members are resolved at converge time); iptables' --suppl-groups
    # asks the kernel per packet, so there is nothing to repair: both end with the new member let through
    run("usermod", "-a", "-G", wheel, outsider)
    drift = owner_rule(ns, backend, params, check=True)
    assert drift.changed is (backend == "nftables"), drift.result
    assert owner_rule(ns, backend, params).changed is (backend == "nftables")
    assert reaches(ns, outsider, 273) == {"127.0.0.1": "connected", "::1": "connected"}
    assert not owner_rule(ns, backend, params).changed

    # without suppl_groups only the effective group counts: a supplementary member is shut out
    params["rules"][0]["suppl_groups"] = False
    assert owner_rule(ns, backend, params).changed
    assert reaches(ns, primary, 273) == {"127.0.0.1": "connected", "::1": "connected"}
    assert reaches(ns, secondary, 273) == {"127.0.0.1": "refused", "::1": "refused"}


def test_seed000_drop_policy_allowed_owner_passes_replies_flow_others_not(netns_host, make_user, listener, backend):
    ns = netns_host
    alice, bob = make_user(), make_user()
    listener(ns, 992)
    listener(ns, 993)
    empty = kernel_rules(ns, backend)
    params = {"name": "crueller-output", "policy": "drop", "rules": [
        {"protocol": "tcp", "destination": ["localhost"], "destination_port": "992", "uid_owner": alice,
         "jump": "ACCEPT"}]}
    four_steps(ns, backend, params)
    policy = ":OUTPUT DROP" if backend == "iptables" else '"policy": "drop"'
    assert sum(policy in line for line in kernel_rules(ns, backend)) == (2 if backend == "iptables" else 1)
    # the listener's SYN-ACK belongs to root, which no rule allows: it flows as ESTABLISHED
    assert reaches(ns, alice, 992) == {"127.0.0.1": "connected", "::1": "connected"}
    assert reaches(ns, alice, 993, timeout=1) == {"127.0.0.1": "timeout", "::1": "timeout"}
    assert reaches(ns, bob, 992, timeout=1) == {"127.0.0.1": "timeout", "::1": "timeout"}
    assert reaches(ns, "root", 992, timeout=1) == {"127.0.0.1": "timeout", "::1": "timeout"}

    # the module's own removal example names no policy: the drop it set is released all the same
    gone = owner_rule(ns, backend, {"name": "crueller-output", "state": "absent"})
    assert gone.changed
    assert not [line for line in kernel_rules(ns, backend) if policy in line]
    assert kernel_rules(ns, backend, ours=True) == []
    assert reaches(ns, bob, 993) == {"127.0.0.1": "connected", "::1": "connected"}
    assert not owner_rule(ns, backend, {"name": "crueller-output", "state": "absent"}).changed
    if backend == "nftables":
        assert kernel_rules(ns, backend) == empty


def test_negated_owner_also_matches_socketless_packets_like_xt_owner(netns_host, backend):
    """The kernel's RST from a closed port has no owning process: '! --uid-owner 0' matches it."""
    ns = netns_host
    params = {"name": "rst", "rules": [
        {"protocol": "tcp", "source_port": "993", "uid_owner": "!root", "jump": "DROP"}]}
    assert try_connect(ns, "root", "127.0.0.1", 993) == "refused"
    assert owner_rule(ns, backend, params).changed
    assert try_connect(ns, "root", "127.0.0.1", 993, timeout=1) == "timeout"
    assert try_connect(ns, "root", "::1", 993, timeout=1) == "timeout"
