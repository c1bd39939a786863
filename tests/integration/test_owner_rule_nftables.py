"""owner_rule on the native nftables backend, for real: kernel, users, sockets, ansible-playbook.

Every test runs in its own network namespace (``netns_host``). What the tests prove:

* (seed 000's scenarios - only root may use localhost:992 on 127.0.0.1 *and* ::1, members of a group
  through supplementary groups, drop policy - and the negated owner matching socketless packets run on
  both backends in test_owner_rule_both.py);
* every kind of rule the module renders reads back from the kernel in the rendered normal form
  (the second run of the same tasks changes nothing);
* (drift repaired, other tables byte-identical, ``state: absent`` leaving nothing, hostile input refused
  before anything is applied: test_owner_rule_both.py, on both backends;) a policy set by hand on our
  base chain is not drift of a task that declares none;
* a failure in the last statement of a two-family change leaves ``nft list ruleset``
  byte-identical (one transaction);
* ``backend: auto`` picks nftables and a switch between backends cleans up the old one in the
  same run, both ways.
"""

from __future__ import annotations

import json
import os
import textwrap

import yaml

from nchelpers import ROOT, ansible_playbook, iptables_save, make_foreign_rules, run, try_connect

OWNER_RULE = "paranoid.netconfine.owner_rule"
TABLE = ("inet", "netconfine")


# --------------------------------------------------------------------------- helpers

def playbook(tasks: list[dict]) -> str:
    """A play running owner_rule once per params dict (ignore_errors, so every task reports)."""
    body = [{"name": params["name"] if "task" not in params else params.pop("task"),
             OWNER_RULE: params, "ignore_errors": True} for params in tasks]
    return yaml.safe_dump([{"name": "owner_rule on nftables", "hosts": "all", "gather_facts": False,
                            "tasks": body}], sort_keys=False)


def converge(ns: str, *tasks: dict, check: bool = False):
    """Run owner_rule tasks (backend nftables unless given); return their results in order."""
    tasks = [dict({"backend": "nftables"}, **t) for t in tasks]
    result = ansible_playbook(playbook([dict(t) for t in tasks]), [ns], check=check, diff=True)
    results = [r for r in result.results.get(ns, []) if r.action == OWNER_RULE]
    assert len(results) == len(tasks), result.output
    return results


def one(ns: str, params: dict, check: bool = False):
    res = converge(ns, params, check=check)[0]
    assert not res.failed, res.result
    return res


def ruleset(ns: str) -> str:
    return run("nft", "list", "ruleset", ns=ns).stdout


def ruleset_json(ns: str) -> list:
    return json.loads(run("nft", "-j", "list", "ruleset", ns=ns).stdout)["nftables"]


def foreign(ns: str) -> str:
    """``nft -j list ruleset`` minus our table: what must stay byte-identical."""
    def ours(item):
        (_kind, body), = item.items()
        return isinstance(body, dict) and (body.get("family"), body.get("table", body.get("name"))) == TABLE
    return json.dumps([i for i in ruleset_json(ns) if "metainfo" not in i and not ours(i)], sort_keys=True)


def our_table(ns: str) -> str:
    return run("nft", "list", "table", *TABLE, ns=ns, check=False).stdout


STUNNEL = {"name": "stunnel-992", "rules": [
    {"protocol": "tcp", "destination": ["localhost"], "destination_port": "992", "uid_owner": "!root",
     "jump": "REJECT"}]}


def reaches(ns: str, user: str, group: str | None = None, port: int = 992) -> dict:
    return {addr: try_connect(ns, user, addr, port, group) for addr in ("127.0.0.1", "::1")}


# --------------------------------------------------------------------------- the scenarios
# Seed 000's behaviour on both backends (only root through the tunnel, group members, drop policy):
# test_owner_rule_both.py. Here what only nftables shows.

def test_a_negated_owner_is_a_return_before_the_verdict_and_other_tables_stay(netns_host):
    ns = netns_host
    make_foreign_rules(ns)
    before = foreign(ns)
    res = one(ns, STUNNEL)
    assert res.changed
    assert "meta skuid 0 return" in res.result["rendered"]["nftables ruleset"]
    assert foreign(ns) == before
    assert "NC-" not in iptables_save(ns, 4) + iptables_save(ns, 6)


def test_auto_chooses_nftables_and_says_so(netns_host):
    res = one(netns_host, dict(STUNNEL, backend="auto"))
    assert res.changed and res.result["backend"] == "nftables"
    assert "NC-stunnel-992-" in our_table(netns_host)


# --------------------------------------------------------------------------- every rule kind, through the kernel

def _normal_form_tasks() -> list[dict]:
    import sys
    sys.path.insert(0, str(ROOT / ".build" / "collections"))
    from ansible_collections.paranoid.netconfine.plugins.module_utils import fields

    def icmp_rules(proto, names):
        out = []
        for name in sorted(names):
            out.append({"protocol": proto, "icmp_type": name, "jump": "ACCEPT"})
            if name != "any":
                out.append({"protocol": proto, "icmp_type": "!" + name, "jump": "DROP"})
        return out

    reasons = ("port-unreachable", "net-unreachable", "host-unreachable", "proto-unreachable", "net-prohibited",
               "host-prohibited", "admin-prohibited", "tcp-reset")
    owners = ([{"uid_owner": u, "jump": "ACCEPT"} for u in ("0", "1000-1999", "!1000-1999", "!root")]
              + [{"gid_owner": g, "jump": "DROP"} for g in ("0", "!0", "100-200")]
              + [{"gid_owner": "root", "suppl_groups": True, "jump": j} for j in ("ACCEPT", "LOG")]
              + [{"gid_owner": "!root", "suppl_groups": True, "jump": j} for j in ("REJECT", "LOG", "RETURN")]
              + [{"socket_exists": True, "jump": "ACCEPT"}, {"socket_exists": False, "jump": "DROP"},
                 {"uid_owner": "0", "gid_owner": "!0", "jump": "ACCEPT"},
                 {"uid_owner": "!0", "gid_owner": "!0", "jump": "REJECT"},
                 {"uid_owner": "!0", "socket_exists": True, "jump": "DROP"},
                 {"uid_owner": "!0", "jump": "RETURN", "limit": "5/min"},
                 {"uid_owner": "!0", "jump": "LOG", "limit": "5/min", "comment": "c1"},
                 {"uid_owner": "0", "jump": "ACCEPT", "comment": "hello world"}])
    merge = ([{"protocol": "udp", "destination_port": str(1000 + i), "uid_owner": str(2000 + i),
               "jump": "ACCEPT" if i % 2 else "DROP"} for i in range(20)]
             + [{"protocol": "tcp", "destination_port": str(p), "uid_owner": "0", "jump": "ACCEPT"}
                for p in (10, 11, 12, 20, 30)]
             + [{"uid_owner": u, "jump": "RETURN"} for u in ("1-5", "6-10", "20", "22")]
             + [{"uid_owner": u, "jump": v} for u, v in (("1-5", "ACCEPT"), ("6-10", "DROP"), ("3", "DROP"))])
    one_rule = [{"uid_owner": "0", "jump": "ACCEPT"}]
    return [
        {"name": "icmp", "rules": icmp_rules("icmp", fields.ICMP_TYPES) + icmp_rules("ipv6-icmp", fields.ICMPV6_TYPES)
         + [{"protocol": "icmp", "icmp_type": x, "jump": "ACCEPT"} for x in ("3/7", "11/0", "5/1", "200", "3/15")]
         + [{"protocol": "ipv6-icmp", "icmp_type": x, "jump": "ACCEPT"} for x in ("1/2", "200", "4/9")]
         + [{"protocol": "icmp", "icmp_type": "!3/3", "jump": "DROP"}]},
        {"name": "reject", "rules": [{"protocol": "tcp", "destination_port": "5", "jump": "REJECT", "reject_with": r}
                                     for r in reasons]
         + [{"protocol": "tcp", "destination": ["10.0.0.0/8", "2001:db8::/32"], "jump": "REJECT", "reject_with": r}
            for r in reasons]},
        {"name": "reject-v4", "ip_version": "ipv4", "rules": [
            {"protocol": "tcp", "jump": "REJECT", "reject_with": r} for r in reasons]},
        {"name": "reject-v6", "ip_version": "ipv6", "rules": [
            {"protocol": "tcp", "uid_owner": "!0", "jump": "REJECT", "reject_with": r} for r in reasons]},
        {"name": "log", "rules": [{"jump": "LOG", "log_level": str(level)} for level in range(8)]
         + [{"jump": "LOG", "log_prefix": "x: ", "log_level": "info"},
            {"jump": "LOG", "log_prefix": "a b(c)[d]=%e@f,g:h/i+j"}]},
        {"name": "limit", "rules": [{"jump": "ACCEPT", "limit": r}
                                    for r in ("5/min", "1/sec", "100/hour", "3/day", "60/min", "10000/sec")]
         + [{"jump": "ACCEPT", "limit": "5/min", "limit_burst": b} for b in (1, 10, 10000)]},
        {"name": "ctstate", "rules": [{"ctstate": s, "jump": "ACCEPT"} for s in (
            ["NEW"], ["ESTABLISHED", "RELATED"], ["INVALID", "NEW", "UNTRACKED"], ["SNAT"], ["DNAT"])]},
        {"name": "ports", "rules": [{"protocol": p, "destination_port": d, "jump": "ACCEPT"}
                                    for p in ("tcp", "udp", "sctp") for d in ("1", "1000:2000", "!22", "!1000:2000",
                                                                              "0:65535")]
         + [{"protocol": "tcp", "source_port": "1024:65535", "destination_port": "443", "jump": "ACCEPT"},
            {"protocol": "udplite", "jump": "ACCEPT"}, {"protocol": "sctp", "jump": "ACCEPT"}]},
        {"name": "addresses", "rules": [{"destination": [a], "jump": "ACCEPT"} for a in (
            "10.0.0.0/8", "192.0.2.1", "::ffff:192.0.2.1", "2001:db8::/32", "!192.0.2.0/24", "!2001:db8::1",
            "0.0.0.0/0", "::/0", "::ffff:0:0/96")] + [{"source": ["127.0.0.1", "::1"], "jump": "ACCEPT"}]},
        {"name": "interfaces", "rules": [{"out_interface": i, "jump": "ACCEPT"}
                                         for i in ("eth0", "eth+", "!lo", "!veth+", "a@b.c-d_e")]},
        {"name": "owners", "rules": owners},
        {"name": "merged", "rules": merge},
        {"name": "policy-v4", "policy": "drop", "ip_version": "ipv4", "rules": one_rule},
        {"name": "policy-v6", "policy": "drop", "ip_version": "ipv6", "rules": one_rule},
        {"name": "policy-accept", "policy": "accept", "rules": one_rule},
        {"name": "last", "position": "last", "rules": one_rule},
        {"name": "mangle-output", "table": "mangle", "chain": "OUTPUT", "rules": one_rule},
        {"name": "mangle-postrouting", "table": "mangle", "chain": "POSTROUTING", "rules": one_rule},
        {"name": "nat-output", "table": "nat", "chain": "OUTPUT", "rules": one_rule},
        {"name": "nat-postrouting", "table": "nat", "chain": "POSTROUTING", "rules": one_rule},
    ]


def test_every_rule_kind_reads_back_in_the_rendered_normal_form(netns_host):
    """Each task applies, reads back equal to what was rendered (else 'did not converge'), and stays."""
    ns = netns_host
    tasks = _normal_form_tasks()
    first = converge(ns, *tasks)
    assert [(r.task, r.failed) for r in first] == [(t["name"], False) for t in tasks], \
        [r.result.get("msg") for r in first if r.failed]
    assert all(r.changed for r in first)
    second = converge(ns, *tasks)
    assert [(r.task, r.changed) for r in second if r.changed or r.failed] == []
    merged = run("nft", "list", "chain", *TABLE, list(first[11].result["chains"])[0], ns=ns).stdout
    assert "vmap {" in merged and "tcp dport { 10-12, 20, 30 } accept" in merged
    # a backup of the whole ruleset restores (names, quoting and sets are valid nft syntax)
    text = ruleset(ns)
    run("nft", "flush", "ruleset", ns=ns)
    run("nft", "-f", "-", ns=ns, input=text)
    assert ruleset(ns) == text


# --------------------------------------------------------------------------- drift
# Drift, state absent, foreign tables and hostile input behave the same on both backends:
# test_owner_rule_both.py. Here what only nftables has: a base chain of our own, whose policy the
# task manages only when it declares one.

def test_a_policy_set_by_hand_on_our_base_chain_is_not_drift_of_a_task_without_policy(netns_host):
    ns = netns_host
    one(ns, STUNNEL)
    run("nft", "add", "chain", "inet", "netconfine", "filter_output", "{ policy drop ; }", ns=ns)
    assert not one(ns, STUNNEL, check=True).changed
    assert not one(ns, STUNNEL).changed
    assert '"policy": "drop"' in json.dumps(ruleset_json(ns))


# --------------------------------------------------------------------------- one transaction

INJECT = textwrap.dedent("""
    import json, subprocess, sys
    sys.path.insert(0, sys.argv[1])
    from ansible_collections.paranoid.netconfine.plugins.module_utils import engine, owner_model
    from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError
    from ansible_collections.paranoid.netconfine.plugins.module_utils.nft_backend import NftablesBackend

    def run(argv, data=None):
        p = subprocess.run(argv, input=data, capture_output=True, text=True)
        return p.returncode, p.stdout, p.stderr

    class LastStatementFails(NftablesBackend):
        # the kernel refuses a jump loop when the batch commits: the last statement fails
        def script(self, tables, current, desired, restore_jumps=None):
            text = super().script(tables, current, desired, restore_jumps)
            if not text or not desired:
                return text
            chain = sorted(dict(desired["inet netconfine"].chains))[0]
            doc = json.loads(text)
            doc["nftables"].append({"add": {"rule": {"family": "inet", "table": "netconfine", "chain": chain,
                                                     "expr": [{"jump": {"target": chain}}]}}})
            return json.dumps(doc)

    policy = owner_model.build_policy(json.loads(sys.argv[2]))
    try:
        engine.converge(policy, [LastStatementFails(run, "nft")], lock_timeout=10)
    except NetconfineError as exc:
        print(json.dumps({"failed": True, "msg": str(exc), "rolled_back": exc.details.get("rolled_back")}))
    else:
        print(json.dumps({"failed": False}))
""")


def test_a_failure_in_the_last_statement_of_a_two_family_change_changes_nothing(netns_host):
    ns = netns_host
    make_foreign_rules(ns)
    one(ns, STUNNEL)
    one(ns, {"name": "other", "rules": [{"uid_owner": "!0", "protocol": "udp", "jump": "REJECT"}]})
    before, before_json = ruleset(ns), ruleset_json(ns)
    # both families change (IPv4 and IPv6 addresses and the port), a drop policy is added
    changed = {"name": "stunnel-992", "policy": "drop", "rules": [
        {"protocol": "tcp", "destination": ["127.0.0.1", "::1"], "destination_port": "993", "uid_owner": "!root",
         "jump": "REJECT"}]}
    out = run(str(ROOT / ".venv" / "bin" / "python"), "-c", INJECT, str(ROOT / ".build" / "collections"),
              json.dumps(changed), ns=ns).stdout
    result = json.loads(out)
    assert result["failed"] and "Too many links" in result["msg"] and "nothing was applied" in result["msg"], result
    assert ruleset(ns) == before
    assert ruleset_json(ns) == before_json


def test_a_statement_nft_refuses_through_the_module_changes_nothing(netns_host):
    """Through ansible: a cgroup path nft cannot resolve here (no cgroup2 under this /sys) fails the batch."""
    ns = netns_host
    one(ns, STUNNEL)
    before = ruleset(ns)
    broken = {"name": "stunnel-992", "rules": STUNNEL["rules"] + [
        {"protocol": "udp", "destination": ["127.0.0.1", "::1"], "jump": "DROP"},
        {"cgroup": "/nct-no-such-cgroup", "jump": "DROP"}]}
    res = converge(ns, broken)[0]
    assert res.failed and res.result["field"] == "backend", res.result
    assert "nothing was applied" in res.msg
    assert ruleset(ns) == before


# --------------------------------------------------------------------------- switching backends

def test_switching_backends_cleans_up_the_other_one_both_ways(netns_host, make_user, listener):
    ns = netns_host
    alice = make_user()
    listener(ns, 992)
    params = dict(STUNNEL, policy="drop", rules=STUNNEL["rules"] + [{"jump": "ACCEPT"}])

    ipt = one(ns, dict(params, backend="iptables"))
    assert ipt.changed and ipt.result["backend"] == "iptables"
    assert ":OUTPUT DROP" in iptables_save(ns, 4) and "NC-stunnel" in iptables_save(ns, 6)
    assert our_table(ns) == ""

    nft = one(ns, dict(params, backend="nftables"))
    assert nft.changed and nft.result["backend"] == "nftables"
    for family in (4, 6):
        save = iptables_save(ns, family)
        assert "NC-" not in save and ":OUTPUT DROP" not in save, save
    assert "policy drop;" in our_table(ns)
    assert reaches(ns, alice) == {"127.0.0.1": "refused", "::1": "refused"}
    assert not one(ns, dict(params, backend="auto")).changed

    back = one(ns, dict(params, backend="iptables"))
    assert back.changed and back.result["backend"] == "iptables" and our_table(ns) == ""
    assert ":OUTPUT DROP" in iptables_save(ns, 4)
    assert reaches(ns, alice) == {"127.0.0.1": "refused", "::1": "refused"}
    assert not one(ns, dict(params, backend="iptables")).changed


def test_nftables_with_a_policy_never_creates_iptables_tables(netns_host):
    ns = netns_host
    one(ns, {"name": "p", "policy": "drop", "rules": [{"jump": "ACCEPT"}]})
    one(ns, {"name": "p", "policy": "drop", "rules": [{"jump": "ACCEPT"}]})
    tables = [i["table"]["name"] for i in ruleset_json(ns) if "table" in i]
    assert tables == ["netconfine"]


# --------------------------------------------------------------------------- rendered

def test_rendered_needs_no_kernel(netns_host):
    res = one(netns_host, dict(STUNNEL, state="rendered"))
    assert not res.changed and res.result["backend"] == "nftables"
    assert list(res.result["rendered"]) == ["nftables ruleset"]
    assert json.loads(res.result["scripts"]["nftables ruleset"])["nftables"][0] == {
        "add": {"table": {"family": "inet", "name": "netconfine"}}}
    assert our_table(netns_host) == ""


# --------------------------------------------------------------------------- cgroup v2

CGROUP2 = "/sys/fs/cgroup/unified" if os.path.ismount("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"


def test_cgroup_v2_path_round_trips_and_matches(netns_host, make_user, listener, cleanup):
    """nft resolves cgroup paths under /sys/fs/cgroup, which 'ip netns exec' (and a cgroup v1 + unified
    host like this one) does not give it: the backend runs nft with cgroup2 mounted there, privately."""
    ns = netns_host
    name = "nct-cg-%s" % ns.split("-", 1)[1]
    path = os.path.join(CGROUP2, name)
    os.mkdir(path)
    cleanup.callback(os.rmdir, path)
    alice = make_user()
    listener(ns, 992)
    params = {"name": "cgroup", "rules": [{"protocol": "tcp", "destination_port": "992", "cgroup": "/" + name,
                                           "jump": "REJECT"}]}
    steps = [one(ns, params, check=True), one(ns, params), one(ns, params, check=True), one(ns, params)]
    assert [s.changed for s in steps] == [True, True, False, False], [s.result for s in steps]
    assert 'socket cgroupv2 level 1 "%s" counter reject' % name in steps[1].result["rendered"]["nftables ruleset"]
    # a process moved into the cgroup is refused; the same user outside it is not
    assert try_connect(ns, alice, "127.0.0.1", 992) == "connected"
    probe = ("import socket\ntry:\n socket.create_connection(('127.0.0.1', 992), 2)\n print('connected')\n"
             "except OSError as e:\n print(e.errno)")
    moved = run("unshare", "-m", "--propagation", "private", "sh", "-c",
                "mount -t cgroup2 none /sys/fs/cgroup && echo $$ > /sys/fs/cgroup/%s/cgroup.procs && "
                "exec runuser -u %s -- python3 -c %s" % (name, alice, _quote(probe)), ns=ns).stdout.strip()
    assert moved == "111", moved     # ECONNREFUSED
    assert one(ns, dict(params, state="absent")).changed and our_table(ns) == ""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
