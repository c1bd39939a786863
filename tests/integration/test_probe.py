"""Module paranoid.netconfine.probe, for real: ansible-playbook on a namespace host with real listeners
(TCP on 127.0.0.1/::1, a UDP echo) and real refusals from owner_rule REJECT rules, probing as root and as
unprivileged users (also with the module itself running as an unprivileged user), IPv4 and IPv6.
"""

from __future__ import annotations

import textwrap

import pytest

from nchelpers import SYSTEM_PYTHON, ansible_playbook, daemon, iptables_save, run

PROBE = "paranoid.netconfine.probe"

_UDP_ECHO = textwrap.dedent("""
    import select, socket, sys
    socks = []
    for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind((addr, int(sys.argv[1])))
        socks.append(s)
    print("ready", flush=True)
    while True:
        for s in select.select(socks, [], [])[0]:
            data, peer = s.recvfrom(2048)
            s.sendto(b"echo:" + data, peer)
""")

POLICY_AND_PROBES = """
- name: Policy, then probes
  hosts: all
  gather_facts: false
  tasks:
    - name: policy
      paranoid.netconfine.owner_rule:
        name: probe-test
        backend: "{{ backend }}"
        rules:
          - {protocol: tcp, destination: localhost, destination_port: "992", uid_owner: "!root", jump: REJECT,
             reject_with: tcp-reset}
          - {protocol: tcp, destination: localhost, destination_port: "273", gid_owner: "{{ wheel }}",
             suppl_groups: true, jump: ACCEPT}
          - {protocol: tcp, destination: localhost, destination_port: "273", jump: REJECT}
          - {protocol: udp, destination: localhost, destination_port: "5353", uid_owner: "{{ bob }}", jump: DROP}
          - {protocol: udp, destination: localhost, destination_port: "5353", gid_owner: "{{ noinet }}", jump: REJECT}
          - {protocol: icmp, uid_owner: "{{ bob }}", ip_version: ipv4, jump: REJECT}
          - {protocol: ipv6-icmp, uid_owner: "{{ bob }}", ip_version: ipv6, jump: REJECT}
          - {protocol: icmp, gid_owner: "{{ noinet }}", ip_version: ipv4, jump: DROP}
      when: not ansible_check_mode
    - name: probes
      paranoid.netconfine.probe:
        probes: "{{ probes }}"
      register: probed
"""


def matrix(alice, bob, wheel, noinet, backend):
    """(probe, expected outcome) for both families; alice is a (supplementary) member of wheel and noinet.

    Membership (suppl_groups) is the process's groups on iptables, but the members listed in the group
    database when the task ran on nftables (docs/backends.md): there a probe's own supplementary groups
    do not count.
    """
    kernel_groups = backend == "iptables"
    rows = []
    for host in ("127.0.0.1", "::1"):
        rows += [
            ({"user": "root", "host": host, "port": 992}, "connected"),
            ({"user": alice, "host": host, "port": 992}, "refused"),
            ({"user": alice, "host": host, "port": 273}, "connected"),
            ({"user": alice, "host": host, "port": 273, "supplementary_groups": []},
             "refused" if kernel_groups else "connected"),
            ({"user": bob, "host": host, "port": 273}, "refused"),
            ({"user": bob, "host": host, "port": 273, "supplementary_groups": [wheel]},
             "connected" if kernel_groups else "refused"),
            ({"user": bob, "host": host, "port": 4444}, "refused"),          # nothing listens there
            ({"user": alice, "host": host, "protocol": "udp", "port": 5353}, "connected"),
            ({"user": bob, "host": host, "protocol": "udp", "port": 5353}, "permission-denied"),
            ({"user": alice, "group": noinet, "host": host, "protocol": "udp", "port": 5353}, "refused"),
            ({"user": alice, "host": host, "protocol": "icmp"}, "connected"),
            ({"user": bob, "host": host, "protocol": "icmp"}, "refused"),
        ]
    rows += [
        ({"user": alice, "group": noinet, "host": "127.0.0.1", "protocol": "icmp", "timeout": 1}, "timeout"),
        ({"user": alice, "group": noinet, "host": "::1", "protocol": "icmp"}, "connected"),
        ({"user": alice, "host": "192.0.2.99", "port": 80}, "unreachable"),      # no route in the namespace
    ]
    return rows


@pytest.fixture
def probe_host(netns_host, make_user, make_group):
    wheel, noinet = make_group(), make_group()
    alice, bob = make_user(groups=[wheel, noinet]), make_user()
    return netns_host, {"alice": alice, "bob": bob, "wheel": wheel, "noinet": noinet}


def run_matrix(ns, names, backend, check=False):
    rows = matrix(names["alice"], names["bob"], names["wheel"], names["noinet"], backend)
    probes = [dict(p, expect=e) for p, e in rows]
    play = ansible_playbook(POLICY_AND_PROBES, [ns], dict(names, backend=backend, probes=probes), check=check)
    assert play.rc == 0, play.output
    return play, rows


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_probe_matrix_as_root(probe_host, listener, cleanup, backend):
    ns, names = probe_host
    listener(ns, 992)
    listener(ns, 273)
    cleanup.enter_context(daemon(ns, SYSTEM_PYTHON, "-c", _UDP_ECHO, "5353", ready="ready"))

    play, rows = run_matrix(ns, names, backend)
    res = play.task(ns, "probes")
    assert res.status == "ok" and res.changed is False, play.output
    got = [(p["name"], p["outcome"]) for p in res.result["probes"]]
    want = [(r["name"], e) for r, (_p, e) in zip(res.result["probes"], rows)]
    assert got == want, play.output
    assert res.result["mismatches"] == 0
    by_name = {p["name"]: p for p in res.result["probes"]}
    udp = by_name[f"{names['alice']} -> 127.0.0.1:5353/udp"]
    assert udp["received"] == "echo:netconfine probe\n" and udp["allowed"] is True
    assert by_name[f"{names['bob']} -> [::1]:273/tcp"]["error"] == "Connection refused"
    assert all(p["elapsed"] < 4 for p in res.result["probes"])
    assert res.result["outcomes"]["connected"] == sum(1 for _p, e in rows if e == "connected")

    # the probes changed nothing: the kernel's rules are the same, and check mode gives the same answers
    before = iptables_save(ns, 4) + iptables_save(ns, 6) + run("nft", "list", "ruleset", ns=ns).stdout
    check, _rows = run_matrix(ns, names, backend, check=True)
    assert check.task(ns, "policy").status == "skipped"
    assert [(p["name"], p["outcome"]) for p in check.task(ns, "probes").result["probes"]] == want
    after = iptables_save(ns, 4) + iptables_save(ns, 6) + run("nft", "list", "ruleset", ns=ns).stdout
    assert without_counters(before) == without_counters(after)


def test_ping_socket_path_and_mismatch(netns_host, make_user, listener):
    """With net.ipv4.ping_group_range open, ICMP goes through a ping socket (no ping binary); expectations count."""
    ns = netns_host
    bob = make_user()
    run("sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647", ns=ns)
    listener(ns, 992)
    play = ansible_playbook("""
        - hosts: all
          gather_facts: false
          tasks:
            - name: reject bob's pings
              paranoid.netconfine.owner_rule:
                name: probe-ping
                backend: iptables
                rules:
                  - {protocol: icmp, uid_owner: "{{ bob }}", ip_version: ipv4, jump: REJECT}
            - name: probes
              paranoid.netconfine.probe:
                probes:
                  - {user: "{{ bob }}", host: 127.0.0.1, protocol: icmp, expect: refused}
                  - {user: "{{ bob }}", host: "::1", protocol: icmp, expect: allowed}
                  - {user: "{{ bob }}", host: 127.0.0.1, port: 992, expect: denied}
            - name: failing probes
              paranoid.netconfine.probe:
                fail_on_mismatch: true
                probes:
                  - {user: "{{ bob }}", host: 127.0.0.1, port: 992, expect: denied}
              ignore_errors: true
        """, [ns], {"bob": bob})
    assert play.rc == 0, play.output
    res = play.task(ns, "probes").result
    assert [p["outcome"] for p in res["probes"]] == ["refused", "connected", "connected"], play.output
    assert [p["as_expected"] for p in res["probes"]] == [True, True, False]
    assert res["mismatches"] == 1
    failing = play.task(ns, "failing probes")
    assert failing.status == "failed" and "expected denied, got connected" in failing.msg
    assert failing.result["probes"][0]["outcome"] == "connected"


def without_counters(text):
    return "\n".join(line for line in text.splitlines()
                     if not line.startswith(("#", ":")) and "counter packets" not in line)


UNPRIVILEGED = """
- hosts: all
  gather_facts: false
  become: true
  become_user: "{{ alice }}"
  tasks:
    - name: as myself
      paranoid.netconfine.probe:
        probes:
          - {host: 127.0.0.1, port: 992}
          - {host: "::1", port: 992}
          - {host: "::1", protocol: icmp}
          - {host: 127.0.0.1, port: 4444}
    - name: as someone else
      paranoid.netconfine.probe:
        probes:
          - {host: 127.0.0.1, port: 992}
          - {user: "{{ bob }}", host: 127.0.0.1, port: 992}
      ignore_errors: true
"""


def test_module_running_as_an_unprivileged_user(netns_host, make_user, listener):
    ns = netns_host
    alice, bob = make_user(), make_user()
    listener(ns, 992)
    play = ansible_playbook(UNPRIVILEGED, {ns: {"ansible_become_method": "su", "ansible_become_exe": "runuser"}},
                            {"alice": alice, "bob": bob})
    assert play.rc == 0, play.output
    res = play.task(ns, "as myself").result
    assert [p["user"] for p in res["probes"]] == [alice] * 4
    assert [p["outcome"] for p in res["probes"]] == ["connected", "connected", "connected", "refused"], play.output
    other = play.task(ns, "as someone else")
    assert other.status == "failed"
    assert other.result["field"] == "probes[1].user" and "needs root" in other.msg


def test_bad_input_names_the_field(netns_host):
    play = ansible_playbook("""
        - hosts: all
          gather_facts: false
          tasks:
            - name: bad
              paranoid.netconfine.probe:
                probes:
                  - {host: 127.0.0.1, port: 1}
                  - {host: 127.0.0.1, protocol: udp}
              ignore_errors: true
            - name: unknown user
              paranoid.netconfine.probe:
                probes:
                  - {host: 127.0.0.1, port: 1, user: nct_no_such_user}
              ignore_errors: true
        """, [netns_host])
    assert play.rc == 0, play.output
    bad = play.task(netns_host, "bad")
    assert bad.status == "failed" and bad.result["field"] == "probes[1].port", play.output
    unknown = play.task(netns_host, "unknown user")
    assert unknown.status == "failed" and "probes[0].user: unknown user" in unknown.msg
