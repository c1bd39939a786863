"""Role paranoid.netconfine.user_egress, for real (seed 002).

The role runs through ansible-playbook against a network namespace; real users then connect,
ping and ``sg`` inside it (``ip netns exec NS runuser -u USER -- ...``). Inside the namespace,
``net.ipv4.ping_group_range`` lets every user ping with ICMP datagram ("ping") sockets, the way
unprivileged ping works on most distributions; the host's setting is not touched.
"""

from __future__ import annotations

import grp
import pwd
import re
import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest

from nchelpers import SYSTEM_PYTHON, account, ansible_playbook, connect_as, iptables_save, new_name, run

ROLE_PLAY = """
- name: Egress by user and group
  hosts: all
  gather_facts: false
  roles:
    - role: paranoid.netconfine.user_egress
"""
OWNER_RULE = "paranoid.netconfine.owner_rule"
GROUP = "ansible.builtin.group"
VALIDATE = "ansible.builtin.validate_argument_spec"

_CONNECT = textwrap.dedent("""
    import errno, socket, sys
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
        print("connected")
    except socket.timeout:
        print("timeout")
    except OSError as e:
        print({errno.ECONNREFUSED: "refused", errno.EPERM: "denied"}.get(e.errno, repr(e)))
""")


@pytest.fixture
def egress_host(netns_host, listener):
    """A namespace where every user may open ping sockets, with a TCP listener on port 8080 (both loopbacks)."""
    run("sysctl", "-q", "-w", "net.ipv4.ping_group_range=0 2147483647", ns=netns_host)
    listener(netns_host, 8080)
    return netns_host


@pytest.fixture
def connect_script(cleanup):
    """A connect script every user can run (sg -c takes one command line)."""
    tmp = Path(tempfile.mkdtemp(prefix="nct-egress-"))
    cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
    tmp.chmod(0o755)
    script = tmp / "connect.py"
    script.write_text(_CONNECT)
    script.chmod(0o644)
    return script


BACKENDS = pytest.mark.parametrize("backend", ["iptables", "nftables"])


def nft_table(ns):
    """``nft list table inet netconfine`` (the nftables backend's own table), or '' when there is none."""
    return run("nft", "list", "table", "inet", "netconfine", ns=ns, check=False).stdout


def nft_chain(ns, chain, counts=False):
    """The rules of one chain of our table as nft prints them; counter values dropped unless ``counts``."""
    text = nft_table(ns)
    match = re.search(r"chain %s \{\n(.*?)\n\t\}" % re.escape(chain), text, re.S)
    assert match, text
    lines = [line.strip() for line in match.group(1).splitlines()]
    return lines if counts else [re.sub(r"counter packets \d+ bytes \d+", "counter", line) for line in lines]


def nothing_owned(ns):
    return "NC-" not in iptables_save(ns, 4) + iptables_save(ns, 6) + nft_table(ns)


def owner_rule_results(result, host):
    return [r for r in result.results.get(host, []) if r.action == OWNER_RULE]


def converge(host, policies, check=False, **role_vars):
    result = ansible_playbook(ROLE_PLAY, [host], extra_vars={"user_egress_policies": policies, **role_vars},
                              check=check, diff=True)
    assert result.rc == 0, result.output
    return result


def sg_run(ns, user, group, command):
    """``runuser -u USER -- sg GROUP -c COMMAND`` inside ``ns``: COMMAND runs as group GROUP."""
    return run("runuser", "-u", user, "--", "sg", group, "-c", command, ns=ns, check=False, timeout=60)


def ping(ns, user, host):
    return run("runuser", "-u", user, "--", "ping", "-v", "-n", "-c", "1", "-W", "2", host, ns=ns, check=False)


def counters(ns, family, chain, needle, backend="iptables"):
    """Packet counter of the (single) rule of ``chain`` that contains ``needle``: iptables-save -c, or the
    ``counter`` of our nftables rule (one inet rule for both families)."""
    if backend == "nftables":
        hits = [line for line in nft_chain(ns, chain, counts=True) if needle in line]
        assert len(hits) == 1, hits
        return int(re.search(r"counter packets (\d+) ", hits[0]).group(1))
    out = run("iptables-save" if family == 4 else "ip6tables-save", "-c", "-t", "filter", ns=ns).stdout
    hits = [line for line in out.splitlines() if f"-A {chain} " in line and needle in line]
    assert len(hits) == 1, out
    return int(re.match(r"^\[(\d+):\d+\]", hits[0]).group(1))


def group_exists(name):
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


@BACKENDS
def test_seed_scenarios_noinet_ping_for_one_user_and_root_logged(
        egress_host, make_user, connect_script, cleanup, backend):
    ns = egress_host
    noinet = new_name("_")                     # created by the role (create_group: true)
    cleanup.callback(account, "groupdel", noinet, check=False)
    alice, bob, carol = make_user(), make_user(), make_user()
    policies = [
        {"name": "noinet", "groups": [noinet], "create_group": True, "jump": "REJECT"},
        {"name": "ping-bob", "users": [bob], "protocol": "icmp", "icmp_type": "echo-request", "jump": "ACCEPT"},
        {"name": "no-ping-for-others", "protocol": "icmp", "icmp_type": "echo-request", "jump": "REJECT"},
        {"name": "log-root", "users": ["root"], "jump": "LOG", "log_prefix": "root-egress: "},
    ]

    # check mode: the group would be created; owner_rule warns that it does not exist yet and predicts a change.
    result = converge(ns, policies, check=True, user_egress_backend=backend)
    groups = [r for r in result.results[ns] if r.action == GROUP]
    assert groups and groups[-1].changed, result.output
    (res,) = owner_rule_results(result, ns)
    assert res.changed and f"group '{noinet}' does not exist yet" in " ".join(res.result["warnings"]), res.result
    assert not group_exists(noinet)
    assert nothing_owned(ns)

    result = converge(ns, policies, user_egress_backend=backend)
    res = owner_rule_results(result, ns)[-1]
    assert res.changed and res.result["backend"] == backend and group_exists(noinet), result.output
    result = converge(ns, policies, check=True, user_egress_backend=backend)
    assert result.stats[ns]["changed"] == 0, result.output
    assert not owner_rule_results(result, ns)[-1].changed, result.output
    result = converge(ns, policies, user_egress_backend=backend)
    assert result.stats[ns]["changed"] == 0, result.output

    # The kernel: effective-group match (no --suppl-groups), icmp and ipv6-icmp, LOG for uid 0.
    gid, uid_bob = grp.getgrnam(noinet).gr_gid, pwd.getpwnam(bob).pw_uid
    chain = owner_rule_results(result, ns)[-1].result["chains"][0]
    if backend == "iptables":
        for family, (reject, icmp) in ((4, ("icmp-port-unreachable", "-p icmp -m icmp --icmp-type 8")),
                                       (6, ("icmp6-port-unreachable", "-p ipv6-icmp -m icmp6 --icmpv6-type 128"))):
            save = iptables_save(ns, family, "filter")
            assert [line for line in save.splitlines() if line.startswith(f"-A {chain} ")] == [
                f'-A {chain} -m owner --gid-owner {gid} -m comment --comment "user_egress noinet" '
                f"-j REJECT --reject-with {reject}",
                f'-A {chain} {icmp} -m owner --uid-owner {uid_bob} -m comment --comment "user_egress ping-bob" '
                f"-j ACCEPT",
                f'-A {chain} {icmp} -m comment --comment "user_egress no-ping-for-others" '
                f"-j REJECT --reject-with {reject}",
                f'-A {chain} -m owner --uid-owner 0 -m comment --comment "user_egress log-root" '
                f'-j LOG --log-prefix "root-egress: "',
            ], save
            assert f'-A OUTPUT -m comment --comment "netconfine:user_egress" -j {chain}' in save.splitlines()
        assert "NC-" not in nft_table(ns)
    else:
        rules = nft_chain(ns, chain)
        assert rules[0] == f'meta skgid {gid} counter reject comment "user_egress noinet"', rules
        assert f'icmp type echo-request meta skuid {uid_bob} accept comment "user_egress ping-bob"' in rules, rules
        assert f'icmpv6 type echo-request meta skuid {uid_bob} accept comment "user_egress ping-bob"' in rules, rules
        assert rules[-1] == 'meta skuid 0 counter log prefix "root-egress: " comment "user_egress log-root"', rules
        assert "suppl" not in "".join(rules) and "skuid {" not in rules[0]   # the group the process runs as
        assert f'jump {chain} comment "netconfine:user_egress"' in nft_chain(ns, "filter_output")
        assert "NC-" not in iptables_save(ns, 4) + iptables_save(ns, 6)

    # noinet: alice is a member, yet keeps the network in her normal session...
    account("usermod", "--append", "--groups", noinet, alice)
    assert noinet in run("runuser", "-u", alice, "--", "id", "-Gn", ns=ns).stdout.split()
    assert run("runuser", "-u", alice, "--", "id", "-gn", ns=ns).stdout.strip() == alice
    for host in ("127.0.0.1", "::1"):
        assert connect_as(ns, alice, host, 8080)
    # ...and loses it only for what runs as group noinet (sg noinet -c CMD).
    assert sg_run(ns, alice, noinet, "id -gn").stdout.strip() == noinet
    for host in ("127.0.0.1", "::1"):
        got = sg_run(ns, alice, noinet, f"{SYSTEM_PYTHON} {connect_script} {host} 8080")
        assert got.stdout.strip() == "refused", (host, got.stdout, got.stderr)
        assert run("runuser", "-u", alice, "--", SYSTEM_PYTHON, str(connect_script), host, "8080",
                   ns=ns).stdout.strip() == "connected"

    # ping: only bob, over both families, with ping (datagram) sockets, matched by the owner rules all the same.
    for host in ("127.0.0.1", "::1"):
        got = ping(ns, bob, host)
        assert got.returncode == 0 and "1 received" in got.stdout, got.stdout + got.stderr
        assert "socktype: SOCK_DGRAM" in got.stdout + got.stderr, got.stdout + got.stderr
        for other in (carol, alice, "root"):
            got = ping(ns, other, host)
            assert got.returncode != 0 and "0 received" in got.stdout, (other, got.stdout + got.stderr)

    # root's traffic is logged and still flows. In a namespace the kernel prints no LOG line (unless
    # net.netfilter.nf_log_all_netns=1), so the LOG rule's counter proves it matched, on both backends.
    for family, host in ((4, "127.0.0.1"), (6, "::1")):
        before = counters(ns, family, chain, "user_egress log-root", backend)
        assert connect_as(ns, "root", host, 8080)
        assert counters(ns, family, chain, "user_egress log-root", backend) > before

    # state absent: the chain and jump go, the group stays, sg noinet has the network again.
    result = converge(ns, policies, user_egress_state="absent", user_egress_backend=backend)
    assert owner_rule_results(result, ns)[-1].changed, result.output
    assert nothing_owned(ns)
    assert group_exists(noinet)
    assert sg_run(ns, alice, noinet, f"{SYSTEM_PYTHON} {connect_script} ::1 8080").stdout.strip() == "connected"


@BACKENDS
def test_icmp_follows_the_families_of_the_role_and_of_the_destinations(egress_host, make_user, backend):
    ns = egress_host
    bob = make_user()
    policies = [
        {"name": "ping-bob-loopback", "users": [bob], "protocol": "icmp", "icmp_type": "echo-request",
         "destination": ["127.0.0.1", "::1"], "jump": "ACCEPT"},
        {"name": "no-ping", "protocol": "icmp", "icmp_type": "echo-request", "jump": "REJECT"},
    ]
    # Each address goes to the rule of its family.
    result = converge(ns, policies, user_egress_backend=backend)
    chain = owner_rule_results(result, ns)[-1].result["chains"][0]
    if backend == "iptables":
        assert f"-A {chain} -d 127.0.0.1/32 -p icmp -m icmp --icmp-type 8 " in iptables_save(ns, 4)
        assert f"-A {chain} -d ::1/128 -p ipv6-icmp -m icmp6 --icmpv6-type 128 " in iptables_save(ns, 6)
    else:
        rules = nft_chain(ns, chain)
        assert any(r.startswith("ip daddr 127.0.0.1 icmp type echo-request meta skuid") for r in rules), rules
        assert any(r.startswith("ip6 daddr ::1 icmpv6 type echo-request meta skuid") for r in rules), rules
    assert ping(ns, bob, "::1").returncode == 0
    assert ping(ns, bob, "127.0.0.1").returncode == 0

    # IPv4 only: no ipv6-icmp rule is rendered (owner_rule would refuse a rule for no family), IPv6 is free.
    result = converge(ns, policies, user_egress_ip_version="ipv4", user_egress_backend=backend)
    assert owner_rule_results(result, ns)[-1].changed, result.output
    if backend == "iptables":
        assert chain not in iptables_save(ns, 6)
        assert f"-A {chain} -p icmp -m icmp --icmp-type 8 -m comment" in iptables_save(ns, 4)
    else:
        assert not [r for r in nft_chain(ns, chain) if "icmpv6" in r or "ip6 " in r]
    carol = make_user()
    assert ping(ns, carol, "::1").returncode == 0
    assert ping(ns, carol, "127.0.0.1").returncode != 0

    # A negated destination ("all but 127.0.0.1") leaves the other family entirely covered, not open.
    result = converge(ns, [{"name": "no-ping-but-lo4", "protocol": "icmp", "icmp_type": "echo-request",
                            "destination": ["!127.0.0.1"], "jump": "REJECT"}], user_egress_backend=backend)
    assert owner_rule_results(result, ns)[-1].changed, result.output
    assert ping(ns, carol, "127.0.0.1").returncode == 0
    assert ping(ns, carol, "::1").returncode != 0


@pytest.mark.parametrize(("policies", "expected"), [
    ([{"name": "x", "users": ["root"], "groups": ["root"], "jump": "LOG"}],
     "parameters are mutually exclusive: users|groups found in user_egress_policies"),
    ([{"name": "x", "users": ["root"]}],
     "missing required arguments: jump found in user_egress_policies"),
    ([{"name": "x", "jump": "ALLOW"}],
     "value of jump must be one of: ACCEPT, DROP, REJECT, LOG, RETURN, got: ALLOW found in user_egress_policies"),
    ([{"name": "x", "protocol": "gre", "jump": "DROP"}],
     "value of protocol must be one of"),
    ([{"name": "x", "groups": ["noinet"], "create_group": "perhaps", "jump": "REJECT"}],
     "create_group"),
    ("noinet", "user_egress_policies"),
], ids=["users-and-groups", "jump-missing", "bad-jump", "bad-protocol", "create-group-not-bool", "not-a-list"])
def test_bad_variables_fail_argument_validation_naming_the_variable(netns_host, policies, expected):
    result = ansible_playbook(ROLE_PLAY, [netns_host], extra_vars={"user_egress_policies": policies})
    assert result.rc != 0, result.output
    validation = [r for r in result.results[netns_host] if r.action == VALIDATE][-1]
    assert validation.failed and expected in validation.msg, validation.msg
    assert not owner_rule_results(result, netns_host)
    assert not [r for r in result.results[netns_host] if r.action == GROUP]
    assert nothing_owned(netns_host)


README_PLAY = """
- name: Egress by user and group
  hosts: all
  gather_facts: false
  tasks:
    - name: Egress policies
      ansible.builtin.import_role:
        name: paranoid.netconfine.user_egress
      vars:
        user_egress_backend: "{{ backend }}"
        user_egress_policies:
          - name: noinet
            groups: ["{{ noinet }}"]
            create_group: true
            jump: REJECT
          - name: ping-vagrant
            users: ["{{ vagrant }}"]
            protocol: icmp
            icmp_type: echo-request
            jump: ACCEPT
          - name: no-ping-for-others
            protocol: icmp
            icmp_type: echo-request
            jump: REJECT
          - name: log-root
            users: [root]
            jump: LOG
            log_prefix: "root-egress: "
            limit: 10/min

    - name: alice may switch to the noinet group with sg (the role created the group)
      ansible.builtin.user:
        name: "{{ alice }}"
        groups: ["{{ noinet }}"]
        append: true
"""


@BACKENDS
def test_readme_example_under_check_mode_on_a_fresh_host_then_for_real(egress_host, make_user, connect_script,
                                                                       cleanup, backend):
    """Issue 16.3: the group (and the user) an earlier task creates do not exist in check mode."""
    ns = egress_host
    noinet, alice = new_name("_"), new_name("_")        # created by the play itself
    cleanup.callback(account, "groupdel", noinet, check=False)
    cleanup.callback(account, "userdel", "-r", alice, check=False)
    names = {"backend": backend, "noinet": noinet, "alice": alice, "vagrant": make_user()}

    check = ansible_playbook(README_PLAY, [ns], extra_vars=names, check=True, diff=True)
    assert check.rc == 0, check.output
    (res,) = owner_rule_results(check, ns)
    assert res.changed and not res.failed, res.result
    assert res.result["warnings"] == [
        f"rules[0].gid_owner: group '{noinet}' does not exist yet; assuming an earlier task creates it (check "
        "mode: the rules show id 4294967295 in its place, and the real run fails if it still does not exist)"]
    assert not group_exists(noinet) and nothing_owned(ns)              # check mode changed nothing

    real = ansible_playbook(README_PLAY, [ns], extra_vars=names)
    assert real.rc == 0, real.output
    (res,) = owner_rule_results(real, ns)
    assert res.changed and not res.result.get("warnings"), res.result
    again = ansible_playbook(README_PLAY, [ns], extra_vars=names, check=True)
    assert again.rc == 0 and again.stats[ns]["changed"] == 0, again.output
    assert not owner_rule_results(again, ns)[0].result.get("warnings")
    got = sg_run(ns, alice, noinet, f"{SYSTEM_PYTHON} {connect_script} 127.0.0.1 8080")
    assert got.stdout.strip() == "refused", got.stdout + got.stderr
    assert connect_as(ns, alice, "::1", 8080)

    # a real run still fails hard on a name that nothing creates, and changes nothing
    account("groupdel", noinet)
    failed = ansible_playbook(README_PLAY.replace("create_group: true", "create_group: false"), [ns],
                              extra_vars=names)
    assert failed.rc != 0, failed.output
    (res,) = owner_rule_results(failed, ns)
    assert res.failed and res.result["field"] == "rules[0].gid_owner" and "unknown group" in res.msg, res.result
