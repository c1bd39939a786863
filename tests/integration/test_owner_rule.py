"""paranoid.netconfine.owner_rule, for real: ansible-playbook against namespace hosts, real users and sockets.

Every test runs the module through ansible-playbook (connection paranoid.netconfine.netns) in a
namespace of its own and checks the kernel: iptables-save text and, better, behaviour (a TCP
connection or a ping by a real user, accepted or refused). The iptables backend is named
explicitly because these tests read iptables-save; the nftables backend has tests of its own
(test_owner_rule_nftables.py), and what behaves the same on both is written once in test_owner_rule_both.py.
"""

from __future__ import annotations

import pwd
import re

import yaml

from nchelpers import ansible_playbook, connect_as, iptables_save, load_foreign_xtables, run, try_connect

BOTH = ("127.0.0.1", "::1")
_COUNTERS = re.compile(r" \[\d+:\d+\]$")
_OURS = re.compile(r"^(:NC-|-A NC-)|-[jg] NC-|netconfine:")


# --------------------------------------------------------------------------- helpers

def playbook(*tasks: dict) -> str:
    """A play over all hosts; each task is a dict with ``name``, ``args`` and optional task keywords."""
    body = []
    for task in tasks:
        task = dict(task)
        entry = {"name": task.pop("name"), "paranoid.netconfine.owner_rule": task.pop("args")}
        entry.update(task)
        body.append(entry)
    return yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": body}], sort_keys=False)


def owner_rule(ns: str, args: dict, check: bool = False, diff: bool = False, expect_failure: bool = False,
               **task_keywords):
    """Run one owner_rule task (backend iptables unless given) on ``ns``; return its TaskResult."""
    args = dict({"backend": "iptables"}, **args)
    play = ansible_playbook(playbook(dict(name="owner_rule", args=args, **task_keywords)), [ns],
                            check=check, diff=diff)
    result = play.task(ns, "owner_rule")
    assert result.failed is expect_failure, play
    assert (play.rc != 0) is expect_failure, play
    result.play = play
    return result


def saved(ns: str) -> dict[int, str]:
    """iptables-save of both families (all tables), chain counters blanked: the kernel's whole ruleset."""
    return {family: "\n".join(_COUNTERS.sub("", line) for line in iptables_save(ns, family).splitlines())
            for family in (4, 6)}


def ours(text: str) -> list[str]:
    return [line for line in text.splitlines() if _OURS.search(line)]


def chain_rules(ns: str, family: int, chain: str, table: str = "filter") -> list[str]:
    return [line for line in iptables_save(ns, family, table).splitlines() if line.startswith("-A %s " % chain)]


def ipt(ns: str, family: int, *argv: str, table: str = "filter") -> None:
    """Change the namespace's rules by hand (drift), like an operator or another tool would."""
    run("iptables" if family == 4 else "ip6tables", "-w", "-t", table, *argv, ns=ns)


def rendered_lines(result, family: int, chain: str) -> list[str]:
    return [line for line in result.result["rendered"]["iptables %d" % family].splitlines()
            if line.startswith("-A %s " % chain)]


def uid(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def ping(ns: str, user: str, host: str = "127.0.0.1") -> bool:
    proc = run("runuser", "-u", user, "--", "ping", "-n", "-c", "1", "-W", "1", host, ns=ns, check=False)
    return proc.returncode == 0


def log_packets(ns: str, family: int, chain: str) -> int:
    """Packet counter of the (only) LOG rule in ``chain``."""
    out = run("iptables-save" if family == 4 else "ip6tables-save", "-c", "-t", "filter", ns=ns).stdout
    counts = [int(m.group(1)) for m in re.finditer(r"^\[(\d+):\d+\] -A %s .*-j LOG" % re.escape(chain), out, re.M)]
    assert len(counts) == 1, out
    return counts[0]


def stunnel_args(name: str = "stunnel-992", **extra) -> dict:
    """Seed 000: only root may use the stunnel client listener on localhost:992 (IPv4 and IPv6)."""
    args = {"name": name, "rules": [{"protocol": "tcp", "destination": ["localhost"], "destination_port": "992",
                                     "uid_owner": "!root", "jump": "REJECT"}]}
    args.update(extra)
    return args


def converged(ns: str, args: dict) -> dict[int, str]:
    """Apply ``args`` (changed), then again (not changed); return the kernel's ruleset."""
    assert owner_rule(ns, args).changed
    state = saved(ns)
    assert not owner_rule(ns, args).changed
    assert saved(ns) == state
    return state


def load_foreign(ns: str) -> dict[int, str]:
    """Docker's, kube-proxy's and fail2ban's rules (nchelpers.FOREIGN_XTABLES); the kernel's ruleset after."""
    load_foreign_xtables(ns)
    state = saved(ns)
    assert "KUBE-SERVICES" in state[4] and "f2b-sshd" in state[6]
    return state


# --------------------------------------------------------------------------- seed 000
# Seed 000's behaviour on both backends (only root through the tunnel, group members, drop policy):
# test_owner_rule_both.py. Here what only iptables shows: the chain text and its one tagged jump.

def test_the_kernel_holds_the_rendered_chain_and_one_tagged_jump_per_family(netns_host):
    ns = netns_host
    applied = owner_rule(ns, stunnel_args())
    assert applied.changed
    chain = applied.result["chains"][0]
    assert re.fullmatch(r"NC-stunnel-992-[0-9a-f]{8}", chain)
    for family in (4, 6):
        assert chain_rules(ns, family, chain) == rendered_lines(applied, family, chain)
        assert chain_rules(ns, family, "OUTPUT") == [
            '-A OUTPUT -m comment --comment "netconfine:stunnel-992" -j %s' % chain]


def test_a_negated_ipv4_address_still_guards_ipv6(netns_host, make_user, listener):
    """'everything but 198.51.100.7' includes all of IPv6: the rule must exist there too (it once did not)."""
    ns = netns_host
    user = make_user()
    listener(ns, 992)
    assert owner_rule(ns, {"name": "all-but-one", "rules": [
        {"destination": ["!198.51.100.7"], "uid_owner": user, "jump": "REJECT"}]}).changed
    for host in BOTH:
        assert try_connect(ns, user, host, 992) == "refused", host
        assert try_connect(ns, "root", host, 992) == "connected", host


# --------------------------------------------------------------------------- seed 002

def test_seed002_noinet_group_applies_only_to_what_runs_as_that_group(netns_host, make_user, make_group, listener):
    ns = netns_host
    noinet = make_group()
    member = make_user(groups=[noinet])
    listener(ns, 8080)
    for host in BOTH:
        assert connect_as(ns, member, host, 8080, group=noinet), "control: no rules yet"
    converged(ns, {"name": "noinet", "rules": [{"gid_owner": noinet, "jump": "REJECT"}]})
    for host in BOTH:
        assert try_connect(ns, member, host, 8080) == "connected", "a normal session keeps the network"
        assert try_connect(ns, member, host, 8080, group=noinet) == "refused", "sg noinet -c CMD loses it"
        assert try_connect(ns, "root", host, 8080) == "connected"


def test_seed002_ping_only_for_one_user(netns_host, make_user):
    ns = netns_host
    run("sysctl", "-q", "-w", "net.ipv4.ping_group_range=0 2147483647", ns=ns)
    alice, bob = make_user(), make_user()
    assert ping(ns, alice) and ping(ns, bob), "control: both may ping before the rules"
    converged(ns, {"name": "ping-alice", "rules": [
        {"protocol": "icmp", "icmp_type": "echo-request", "uid_owner": alice, "jump": "ACCEPT"},
        {"protocol": "icmp", "icmp_type": "echo-request", "jump": "REJECT"}]})
    assert ping(ns, alice)
    assert not ping(ns, bob)
    assert not ping(ns, "root")


def test_seed002_log_roots_traffic_and_only_roots(netns_host, make_user):
    ns = netns_host
    user = make_user()
    args = {"name": "log-root", "rules": [{"uid_owner": "root", "jump": "LOG", "log_prefix": "root-egress: "}]}
    first = owner_rule(ns, args)
    assert first.changed
    chain = first.result["chains"][0]
    start = log_packets(ns, 4, chain)
    assert ping(ns, "root")
    assert log_packets(ns, 4, chain) == start + 1, "root's echo request is logged"
    assert ping(ns, user)
    assert log_packets(ns, 4, chain) == start + 1, "another user's traffic is not"
    assert not owner_rule(ns, args).changed, "counters are not state"


# --------------------------------------------------------------------------- result contract

def test_diff_mode_shows_the_rule_lines(netns_host):
    ns = netns_host
    first = owner_rule(ns, stunnel_args(), check=True, diff=True)
    chain = first.result["chains"][0]
    v4 = "-A %s -d 127.0.0.1/32 -p tcp -m tcp --dport 992 -m owner ! --uid-owner 0 -j REJECT " \
         "--reject-with icmp-port-unreachable" % chain
    v6 = v4.replace("127.0.0.1/32", "::1/128").replace("icmp-port", "icmp6-port")
    diff = first.result["diff"]
    assert v4 in diff["after"].splitlines() and v6 in diff["after"].splitlines()
    assert "-A " not in diff["before"]
    assert "+" + v4 in first.play.output, "ansible-playbook --diff prints the added rule"

    owner_rule(ns, stunnel_args(), diff=True)
    changed = owner_rule(ns, stunnel_args(rules=[{
        "protocol": "tcp", "destination": ["localhost"], "destination_port": "993", "uid_owner": "!root",
        "jump": "REJECT"}]), diff=True)
    assert v4 in changed.result["diff"]["before"].splitlines()
    assert v4.replace("--dport 992", "--dport 993") in changed.result["diff"]["after"].splitlines()
    assert "diff" not in owner_rule(ns, stunnel_args()).result


def test_state_rendered_as_an_unprivileged_user_changes_nothing(netns_host, make_user):
    ns = netns_host
    alice = make_user()
    before = saved(ns)
    tasks = [
        {"name": "who", "ansible.builtin.command": "id -u", "become": True, "become_user": alice,
         "become_method": "su", "changed_when": False},
        {"name": "owner_rule",
         "paranoid.netconfine.owner_rule": dict(stunnel_args(), state="rendered", backend="iptables"),
         "become": True, "become_user": alice, "become_method": "su"},
    ]
    play = ansible_playbook(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": tasks}]), [ns])
    assert play.rc == 0, play
    assert play.task(ns, "who").result["stdout"] == str(uid(alice))
    result = play.task(ns, "owner_rule")
    assert not result.changed
    rendered = result.result["rendered"]
    chain = result.result["chains"][0]
    assert any(line.startswith("-A %s -d 127.0.0.1/32 " % chain) for line in rendered["iptables 4"].splitlines())
    assert any(line.startswith("-A %s -d ::1/128 " % chain) for line in rendered["iptables 6"].splitlines())
    assert "-I OUTPUT 1 " in result.result["scripts"]["iptables 4"]
    assert saved(ns) == before

    # and what it rendered is exactly what a real run puts into the kernel
    applied = owner_rule(ns, stunnel_args())
    for family in (4, 6):
        assert chain_rules(ns, family, chain) == rendered_lines(result, family, chain)
        assert applied.result["rendered"]["iptables %d" % family] == rendered["iptables %d" % family]


# --------------------------------------------------------------------------- drift
# Drift of the chain and its jump, foreign rules, state absent and bad input behave the same on both
# backends: test_owner_rule_both.py. Here the built-in chain policy, which iptables keeps outside our chain.

def test_managed_policy_reset_by_hand_is_repaired(netns_host):
    ns = netns_host
    args = {"name": "drop-all", "policy": "drop", "rules": [{"uid_owner": "root", "jump": "ACCEPT"}]}
    owner_rule(ns, args)
    good = saved(ns)
    ipt(ns, 6, "-P", "OUTPUT", "ACCEPT")
    assert owner_rule(ns, args).changed
    assert saved(ns) == good
    assert not owner_rule(ns, args).changed


def test_a_policy_the_task_set_is_released_by_absent_and_by_dropping_policy(netns_host, make_user, listener):
    ns = netns_host
    bob = make_user()
    listener(ns, 993)
    args = {"name": "drop-all", "policy": "drop", "rules": [{"uid_owner": "root", "jump": "ACCEPT"}]}
    owner_rule(ns, args)
    assert try_connect(ns, bob, "127.0.0.1", 993, timeout=1) == "timeout"
    # the module's own "remove" example: name and state only, no policy
    assert owner_rule(ns, {"name": "drop-all", "state": "absent"}).changed
    for family in (4, 6):
        assert ":OUTPUT DROP" not in saved(ns)[family]   # released, and the table our run made is gone
    assert try_connect(ns, bob, "127.0.0.1", 993) == "connected"

    owner_rule(ns, args)
    without_policy = {"name": "drop-all", "rules": args["rules"]}
    assert owner_rule(ns, without_policy).changed
    for family in (4, 6):
        assert ":OUTPUT ACCEPT" in saved(ns)[family]
    assert not owner_rule(ns, without_policy).changed
    assert try_connect(ns, bob, "::1", 993) == "connected"


def test_a_foreign_drop_policy_is_never_released(netns_host):
    ns = netns_host
    args = {"name": "no-policy", "rules": [{"uid_owner": "root", "jump": "ACCEPT"}]}
    owner_rule(ns, args)
    ipt(ns, 4, "-P", "OUTPUT", "DROP")
    assert not owner_rule(ns, args).changed
    assert owner_rule(ns, dict(args, state="absent")).changed
    assert ":OUTPUT DROP" in saved(ns)[4]


# --------------------------------------------------------------------------- families and position

def test_ip_version_ipv4_leaves_ip6tables_untouched(netns_host, make_user, listener):
    ns = netns_host
    user = make_user()
    listener(ns, 992)
    before = load_foreign(ns)
    v4_only = stunnel_args(ip_version="ipv4")
    state = converged(ns, v4_only)
    assert state[6] == before[6]
    assert try_connect(ns, user, "127.0.0.1", 992) == "refused"
    assert try_connect(ns, user, "::1", 992) == "connected", "the seed's v4-only rule leaves [::1]:992 open"

    converged(ns, stunnel_args())
    assert try_connect(ns, user, "::1", 992) == "refused"

    assert owner_rule(ns, v4_only).changed, "going back to ipv4 removes what the task owned in IPv6"
    assert saved(ns)[6] == before[6]


def test_position_last_is_honoured_and_enforced(netns_host, make_user, listener):
    ns = netns_host
    user = make_user()
    listener(ns, 992)
    for family in (4, 6):
        ipt(ns, family, "-A", "OUTPUT", "-p", "tcp", "--dport", "992", "-j", "ACCEPT")
    last = stunnel_args(position="last")
    converged(ns, last)
    for family in (4, 6):
        output = chain_rules(ns, family, "OUTPUT")
        assert len(output) == 2 and "netconfine:stunnel-992" in output[-1]
    for host in BOTH:
        assert try_connect(ns, user, host, 992) == "connected", "a foreign ACCEPT before the jump decides first"

    ipt(ns, 4, "-A", "OUTPUT", "-p", "udp", "-j", "ACCEPT")    # something appended after our jump
    assert owner_rule(ns, last).changed
    assert "netconfine:stunnel-992" in chain_rules(ns, 4, "OUTPUT")[-1]
    assert not owner_rule(ns, last).changed

    assert owner_rule(ns, stunnel_args()).changed    # position first: before every foreign rule
    for family in (4, 6):
        assert "netconfine:stunnel-992" in chain_rules(ns, family, "OUTPUT")[0]
    for host in BOTH:
        assert try_connect(ns, user, host, 992) == "refused"


# --------------------------------------------------------------------------- round trip and rollback

EVERY_KIND = [
    {"protocol": "tcp", "destination": ["localhost"], "destination_port": "992", "uid_owner": "!root",
     "jump": "REJECT", "reject_with": "tcp-reset", "comment": "seed 000: only root"},
    {"protocol": "udp", "source_port": "!53", "destination_port": "1000:2000", "out_interface": "!lo",
     "uid_owner": "1000-1999", "jump": "DROP"},
    {"protocol": "sctp", "destination_port": "3868", "ctstate": ["new", "related"], "jump": "ACCEPT"},
    {"protocol": "tcp", "destination_port": "0:65535", "source": ["!192.0.2.0/24", "!fd00:1::/64"],
     "jump": "RETURN"},
    {"gid_owner": "root", "suppl_groups": True, "socket_exists": True, "jump": "ACCEPT"},
    {"uid_owner": "0", "socket_exists": False, "out_interface": "veth+", "jump": "ACCEPT"},
    {"protocol": "icmp", "icmp_type": "port-unreachable", "jump": "ACCEPT"},
    {"protocol": "icmp", "icmp_type": "!08", "jump": "ACCEPT"},
    {"protocol": "icmp", "icmp_type": "any", "jump": "ACCEPT"},
    {"protocol": "ipv6-icmp", "icmp_type": "neighbour-solicitation", "jump": "ACCEPT"},
    {"destination": ["::ffff:192.0.2.1", "::2:3", "0.0.0.0/0", "fd00::/8"], "jump": "REJECT",
     "reject_with": "admin-prohibited"},
    {"destination": ["!198.51.100.7"], "uid_owner": "nobody", "jump": "REJECT", "reject_with": "host-unreachable"},
    {"uid_owner": "root", "jump": "LOG", "log_prefix": "root-egress: ", "log_level": "info", "limit": "60/min",
     "limit_burst": 10},
    {"jump": "LOG", "log_level": "0", "limit": "24/day"},
    {"jump": "LOG", "limit": "3000/second"},
    {"cgroup": "/", "jump": "RETURN"},
    {"cgroup": "!/", "comment": "a  b,c:d/e@f+g=h%i(j)[k]-l", "jump": "REJECT", "reject_with": "net-unreachable"},
]


def test_every_match_and_target_round_trips_through_the_kernel(netns_host):
    """What the renderer prints is what the kernel prints back: the run converges, and a second one is quiet."""
    ns = netns_host
    args = {"name": "every-kind", "rules": EVERY_KIND}
    result = owner_rule(ns, args)
    assert result.changed
    chain = result.result["chains"][0]
    for family in (4, 6):
        got = chain_rules(ns, family, chain)
        assert got == rendered_lines(result, family, chain)
        assert len(got) >= 12
    assert not owner_rule(ns, args).changed


HOOKS = [("nat", "OUTPUT"), ("nat", "POSTROUTING"), ("mangle", "OUTPUT"), ("mangle", "POSTROUTING")]


def test_other_tables_and_hooks(netns_host):
    ns = netns_host

    def tasks(state):
        return playbook(*({"name": "%s %s" % hook, "args": {
            "name": "t-%s-%s" % (hook[0], hook[1].lower()), "table": hook[0], "chain": hook[1], "state": state,
            "backend": "iptables", "rules": [{"uid_owner": "!root", "destination": ["localhost"], "jump": "RETURN"},
                                             {"jump": "ACCEPT"}]}} for hook in HOOKS))

    for expect_changed in (True, False):
        play = ansible_playbook(tasks("present"), [ns])
        assert play.rc == 0, play
        assert [play.task(ns, "%s %s" % hook).changed for hook in HOOKS] == [expect_changed] * len(HOOKS), play
    for table, chain in HOOKS:
        for family in (4, 6):
            first = chain_rules(ns, family, chain, table=table)[0]
            assert "netconfine:t-%s-%s" % (table, chain.lower()) in first, (table, chain, family)
    play = ansible_playbook(tasks("absent"), [ns])
    assert play.rc == 0, play
    assert all(ours(text) == [] for text in saved(ns).values())


def test_a_failing_second_family_rolls_the_first_back(netns_host):
    """IPv6 refuses to delete a chain that a foreign rule still reaches (goto); the IPv4 removal is undone."""
    ns = netns_host
    load_foreign(ns)
    args = stunnel_args()
    chain = owner_rule(ns, args).result["chains"][0]
    ipt(ns, 4, "-I", "OUTPUT", "1", "-p", "udp", "-j", "ACCEPT")
    ipt(ns, 4, "-I", "OUTPUT", "1", "-p", "udp", "-j", "ACCEPT")  # our jump now sits third (and misplaced)
    ipt(ns, 6, "-A", "OUTPUT", "-p", "tcp", "-g", chain)
    before = saved(ns)

    failed = owner_rule(ns, dict(args, state="absent"), expect_failure=True)
    assert "ip6tables-restore" in failed.msg
    assert failed.result["field"] == "backend"
    assert failed.result["rolled_back"] == ["iptables 4", "iptables 6"]
    assert failed.result["rollback_errors"] == []
    assert saved(ns) == before, "the IPv4 half was not put back exactly"
