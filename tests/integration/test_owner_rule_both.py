"""owner_rule scenarios that behave the same on both backends, written once, run on each (``backend``).

Every test runs the module through ansible-playbook in a namespace of its own, checks behaviour (real
users' TCP connections, accepted or refused) and reads the kernel through one helper,
``nchelpers.kernel_rules(ns, backend)`` (``iptables-save`` or ``nft -j list ruleset``); where a test must
know where our jump sits, :func:`first_rule` reads the built-in chain (iptables) or our base chain
(nftables). Drift is made with each backend's own tool (:data:`DRIFTS`), then repaired the same way.
What differs between the backends (the iptables chain text and built-in chain policies, nftables
sets and maps, one-transaction failures, a switch of backend) stays in test_owner_rule.py and
test_owner_rule_nftables.py.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from nchelpers import (BACKENDS, ansible_playbook, iptables_save, kernel_rules, load_foreign_xtables,
                       make_foreign_rules, make_native_tables, nft_json, run, try_connect)

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


# --------------------------------------------------------------------------- state absent

def test_state_absent_removes_its_own_chains_and_jumps_only_then_is_unchanged(
        netns_host, make_user, listener, backend):
    ns = netns_host
    alice = make_user()
    listener(ns, 992)
    make_foreign_rules(ns)
    empty, foreign = kernel_rules(ns, backend), kernel_rules(ns, backend, ours=False)
    other = {"name": "other-task", "rules": [{"protocol": "udp", "uid_owner": "!root", "jump": "REJECT"}]}
    owner_rule(ns, backend, STUNNEL)
    owner_rule(ns, backend, other)
    both = kernel_rules(ns, backend)
    assert reaches(ns, alice, 992) == {"127.0.0.1": "refused", "::1": "refused"}

    absent = {"name": "stunnel-992", "state": "absent"}
    assert owner_rule(ns, backend, absent, check=True).changed
    assert kernel_rules(ns, backend) == both, "check mode changed the kernel"
    gone = owner_rule(ns, backend, absent)
    assert gone.changed
    mine = "\n".join(kernel_rules(ns, backend, ours=True))
    assert "netconfine:stunnel-992" not in mine and gone.result["chains"][0] not in mine
    assert "netconfine:other-task" in mine, "another task's chain is not ours to remove"
    assert kernel_rules(ns, backend, ours=False) == foreign
    assert not owner_rule(ns, backend, absent).changed
    assert reaches(ns, alice, 992) == {"127.0.0.1": "connected", "::1": "connected"}

    assert owner_rule(ns, backend, {"name": "other-task", "state": "absent"}).changed
    assert kernel_rules(ns, backend) == empty


# --------------------------------------------------------------------------- foreign rules

def test_foreign_rules_survive_converge_and_absent_byte_identical(netns_host, make_user, listener, backend):
    """Docker's, kube-proxy's and fail2ban's iptables rules and two native tables at the same hook."""
    ns = netns_host
    user = make_user()
    listener(ns, 992)
    load_foreign_xtables(ns)
    make_native_tables(ns)
    before, foreign = kernel_rules(ns, backend), kernel_rules(ns, backend, ours=False)
    assert any("KUBE-SERVICES" in line for line in foreign) and any("firewalldlike" in line for line in foreign)
    tasks = [STUNNEL,
             {"name": "nat-guard", "table": "nat", "rules": [
                 {"destination": ["198.51.100.0/24"], "uid_owner": "!root", "jump": "RETURN"}]},
             dict(STUNNEL, name="last-one", position="last")]
    for params in tasks:
        assert owner_rule(ns, backend, params).changed
        state = kernel_rules(ns, backend)
        assert not owner_rule(ns, backend, params).changed
        assert kernel_rules(ns, backend) == state
    assert kernel_rules(ns, backend, ours=False) == foreign
    mine = "\n".join(kernel_rules(ns, backend, ours=True))
    assert all("netconfine:%s" % params["name"] in mine for params in tasks), mine
    assert reaches(ns, user, 992) == {"127.0.0.1": "refused", "::1": "refused"}

    for params in tasks:
        assert owner_rule(ns, backend, {"name": params["name"], "table": params.get("table", "filter"),
                                        "state": "absent"}).changed
    assert kernel_rules(ns, backend) == before


# --------------------------------------------------------------------------- drift

def first_rule(ns: str, backend: str) -> list[str]:
    """The first rule at the output hook, per family (iptables: filter OUTPUT; nftables: our base chain)."""
    if backend == "iptables":
        return [next(line for line in iptables_save(ns, family, "filter").splitlines()
                     if line.startswith("-A OUTPUT ")) for family in (4, 6)]
    rules = [item["rule"] for item in nft_json(ns)["nftables"]
             if "rule" in item and (item["rule"]["family"], item["rule"]["table"], item["rule"]["chain"])
             == ("inet", "netconfine", "filter_output")]
    return [json.dumps({"expr": rules[0]["expr"], "comment": rules[0].get("comment")}, sort_keys=True)]


def ours_rebuilt(ns: str, backend: str) -> list[str]:
    """What we own, as a repair rebuilds it: nft's handles, which count every rule ever added, left out."""
    def without_handle(text):
        item = json.loads(text)
        for body in item.values():
            body.pop("handle", None)
        return json.dumps(item, sort_keys=True)
    lines = kernel_rules(ns, backend, ours=True)
    return [without_handle(line) for line in lines] if backend == "nftables" else lines


def _ipt(family, *argv):
    tool = "iptables" if family == 4 else "ip6tables"
    return lambda ns, chain: run(tool, "-w", *[a.format(chain=chain) for a in argv], ns=ns)


def _nft(command):
    def drift(ns, chain):
        handle = next(item["rule"]["handle"] for item in nft_json(ns)["nftables"]
                      if "rule" in item and item["rule"]["chain"] == chain)
        run("nft", *command.format(chain=chain, handle=handle).split(), ns=ns)
    return drift


TAG = "netconfine:stunnel-992"
DRIFTS = {
    "iptables": {
        "rule added to the chain": _ipt(4, "-I", "{chain}", "1", "-j", "ACCEPT"),
        "rule deleted from the chain": _ipt(4, "-D", "{chain}", "1"),
        "rule edited in the chain": _ipt(4, "-R", "{chain}", "1", "-p", "tcp", "-d", "127.0.0.1", "--dport", "992",
                                         "-j", "ACCEPT"),
        "chain flushed (ipv6)": _ipt(6, "-F", "{chain}"),
        "jump deleted": _ipt(4, "-D", "OUTPUT", "-m", "comment", "--comment", TAG, "-j", "{chain}"),
        "jump deleted (ipv6)": _ipt(6, "-D", "OUTPUT", "1"),
        "jump moved below a foreign rule": _ipt(4, "-I", "OUTPUT", "1", "-p", "tcp", "--dport", "992", "-j", "ACCEPT"),
        "jump duplicated": _ipt(4, "-A", "OUTPUT", "-m", "comment", "--comment", TAG, "-j", "{chain}"),
        "untagged jump added": _ipt(6, "-I", "OUTPUT", "1", "-p", "udp", "-j", "{chain}"),
    },
    "nftables": {
        "rule deleted from the chain": _nft("delete rule inet netconfine {chain} handle {handle}"),
        "chain flushed": _nft("flush chain inet netconfine {chain}"),
        "foreign rule in our base chain": _nft("add rule inet netconfine filter_output accept"),
        "rule inserted before the jump": _nft("insert rule inet netconfine filter_output tcp dport 992 accept"),
        "jump duplicated": _nft("insert rule inet netconfine filter_output jump {chain}"),
        "table deleted": _nft("delete table inet netconfine"),
    },
}


def test_drift_is_repaired_and_reported(make_netns, make_user, listener, backend):
    """One namespace per kind of drift, all repaired by the same run (one playbook over every host)."""
    user = make_user()
    hosts = {drift: make_netns() for drift in DRIFTS[backend]}
    for ns in hosts.values():
        listener(ns, 992)
        make_foreign_rules(ns)
    play = yaml.safe_dump([{"hosts": "all", "gather_facts": False,
                            "tasks": [{"name": "owner_rule", OWNER_RULE: dict(STUNNEL, backend=backend)}]}])
    first = ansible_playbook(play, list(hosts.values()))
    assert first.rc == 0, first
    some = next(iter(hosts.values()))
    chain = first.task(some, "owner_rule").result["chains"][0]
    good = {drift: (ours_rebuilt(ns, backend), first_rule(ns, backend)) for drift, ns in hosts.items()}
    drifted = {}
    for drift, ns in hosts.items():
        before = kernel_rules(ns, backend)
        DRIFTS[backend][drift](ns, chain)
        assert kernel_rules(ns, backend) != before, drift
        drifted[drift] = kernel_rules(ns, backend, ours=False)

    repair = ansible_playbook(play, list(hosts.values()))
    assert repair.rc == 0, repair
    problems = []
    for drift, ns in hosts.items():
        if not repair.task(ns, "owner_rule").changed:
            problems.append("%s: the repairing run reported changed=false" % drift)
        if ours_rebuilt(ns, backend) != good[drift][0]:
            problems.append("%s: we hold %s" % (drift, ours_rebuilt(ns, backend)))
        if kernel_rules(ns, backend, ours=False) != drifted[drift]:
            problems.append("%s: foreign rules were touched" % drift)
        if first_rule(ns, backend) != good[drift][1]:
            problems.append("%s: our jump is not first: %s" % (drift, first_rule(ns, backend)))
        for host, outcome in reaches(ns, user, 992).items():
            if outcome != "refused":
                problems.append("%s: %s:992 %s after the repair" % (drift, host, outcome))
    assert problems == [], "\n".join(problems) + "\n" + str(repair)

    quiet = ansible_playbook(play, list(hosts.values()), diff=True)
    assert quiet.rc == 0, quiet
    assert [(d, quiet.task(ns, "owner_rule").result.get("diff")) for d, ns in hosts.items()
            if quiet.task(ns, "owner_rule").changed] == []


# --------------------------------------------------------------------------- bad and hostile input

BAD = [
    # (task name, module args, field the message names): the model refuses before any backend is asked
    ("unknown user", {"rules": [{"uid_owner": "nct_no_such_user", "jump": "REJECT"}]}, "rules[0].uid_owner"),
    ("unknown group", {"rules": [{"gid_owner": "nct_no_such_group", "jump": "REJECT"}]}, "rules[0].gid_owner"),
    ("pid_owner", {"rules": [{"pid_owner": 1, "jump": "REJECT"}]}, "rules[0].pid_owner"),
    ("sid_owner", {"rules": [{"sid_owner": 1, "jump": "REJECT"}]}, "rules[0].sid_owner"),
    ("owner in INPUT", {"chain": "INPUT", "rules": [{"uid_owner": "root", "jump": "ACCEPT"}]}, "chain"),
    ("owner in PREROUTING", {"table": "nat", "chain": "PREROUTING",
                             "rules": [{"uid_owner": "root", "jump": "ACCEPT"}]}, "chain"),
    ("CIDR with host bits", {"rules": [{"destination": ["192.0.2.1/24"], "jump": "DROP"}]}, "rules[0].destination"),
    ("short address", {"rules": [{"destination": ["1.2.3"], "jump": "DROP"}]}, "rules[0].destination"),
    ("number as address", {"rules": [{"source": ["523454/24"], "jump": "DROP"}]}, "rules[0].source"),
    ("hex address", {"rules": [{"destination": ["0x7f.1"], "jump": "DROP"}]}, "rules[0].destination"),
    ("hex number address", {"rules": [{"destination": ["0x7f000001"], "jump": "DROP"}]}, "rules[0].destination"),
    ("octal address", {"rules": [{"destination": ["192.0.2.1", "0177.0.0.1"], "jump": "DROP"}]},
     "rules[0].destination[1]"),
    ("port 70000", {"rules": [{"protocol": "tcp", "destination_port": "70000", "jump": "DROP"}]},
     "rules[0].destination_port"),
    ("icmp_type without icmp", {"rules": [{"icmp_type": "echo-request", "jump": "DROP"}]}, "rules[0].icmp_type"),
    ("tcp-reset with udp", {"rules": [{"protocol": "udp", "jump": "REJECT", "reject_with": "tcp-reset"}]},
     "rules[0].reject_with"),
    ("REJECT in nat", {"table": "nat", "rules": [{"jump": "REJECT"}]}, "rules[0].jump"),
    ("limit too fast", {"rules": [{"limit": "20000/second", "jump": "ACCEPT"}]}, "rules[0].limit"),
    ("second rule bad", {"rules": [{"uid_owner": "root", "jump": "ACCEPT"},
                                   {"uid_owner": "root", "destination": ["!0.0.0.0/0"], "jump": "DROP"}]},
     "rules[1].destination"),
    ("hostile name", {"name": 'evil" ; flush ruleset', "rules": []}, "name"),
    # the suboptions' own checks (fields.check_suboptions: types, choices, required, unknown keys)
    ("unknown option", {"rules": [{"jump": "DROP", "uid": 0}]}, "rules[0]"),
    ("jump not a target", {"rules": [{"jump": "ALLOW"}]}, "rules[0].jump"),
    ("jump missing", {"rules": [{"jump": "DROP"}, {"uid_owner": "root"}]}, "rules[1].jump"),
    ("burst not a number", {"rules": [{"jump": "ACCEPT", "limit": "5/second", "limit_burst": "many"}]},
     "rules[0].limit_burst"),
    ("ip_version not a version", {"rules": [{"jump": "DROP", "ip_version": "ipv5"}]}, "rules[0].ip_version"),
]
# Text that would break out of iptables-restore or nft syntax (quotes, newlines, braces, comments, ';').
HOSTILE = {
    "comment": ['x" -j ACCEPT "', "x\n-A OUTPUT -j ACCEPT", 'x" ; flush ruleset ; #', "x\nflush ruleset",
                "x } ; table ip evil { }", "x # y"],
    "log_prefix": ["a\x1b[2J", "it's", 'x" ; flush ruleset', "x\n", "x}", "x#"],
    "out_interface": ['lo" ; flush', "lo\n", "lo}", "lo#", "lo;"],
    "cgroup": ['/x" ; flush ruleset', "/x\n", "/x}", "/x#"],
}
BAD += [("%s %r" % (key, value), {"rules": [{"jump": "LOG" if key == "log_prefix" else "ACCEPT", key: value}]},
         "rules[0].%s" % key) for key, values in HOSTILE.items() for value in values]


def test_bad_and_hostile_input_fails_naming_the_field_and_changes_nothing(netns_host, backend):
    ns = netns_host
    make_foreign_rules(ns)
    owner_rule(ns, backend, dict(STUNNEL, name="guard"))
    before = kernel_rules(ns, backend)
    tasks = [{"name": what, OWNER_RULE: dict({"name": "guard"}, **args, backend=backend), "ignore_errors": True}
             for what, args, _field in BAD]
    play = ansible_playbook(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": tasks}]), [ns])
    problems = []
    for what, _args, field in BAD:
        result = play.task(ns, what)
        if not result.failed:
            problems.append("%s: did not fail: %s" % (what, result.result))
        elif result.result.get("field") != field or not result.msg.startswith(field + ": "):
            problems.append("%s: expected field %s, got %r / %r"
                            % (what, field, result.result.get("field"), result.msg))
    assert problems == [], "\n".join(problems)
    assert kernel_rules(ns, backend) == before
