"""user_egress converged: the kernel's rules, sg noinet, ping for bob only, root's packets logged."""

import re

import pytest
from netns_listeners import CONNECT, listening

ADDRESSES = ["127.0.0.1", "::1"]


@pytest.fixture(scope="module")
def listener(host):
    with listening(host, 8080):
        yield


def as_user(host, user, command):
    return host.run("runuser -u %s -- sh -c %s", user, command)


def connect_cmd(address):
    return "python3 -c %s %s 8080" % (shell_quote(CONNECT), address)


def shell_quote(text):
    return "'" + text.replace("'", "'\\''") + "'"


@pytest.mark.parametrize(("save", "reject", "icmp"), [
    ("iptables-save", "icmp-port-unreachable", "-p icmp -m icmp --icmp-type 8"),
    ("ip6tables-save", "icmp6-port-unreachable", "-p ipv6-icmp -m icmp6 --icmpv6-type 128"),
])
def test_kernel_rules_in_order(host, save, reject, icmp):
    gid = host.group("nctmol_ue_noinet").gid
    uid_bob = host.user("nctmol_ue_bob").uid
    lines = host.check_output(save + " -t filter").splitlines()
    chain = next(line[1:].split()[0] for line in lines if line.startswith(":NC-user-egress-"))
    assert [line for line in lines if line.startswith("-A %s " % chain)] == [
        '-A %s -m owner --gid-owner %d -m comment --comment "user_egress noinet" -j REJECT --reject-with %s'
        % (chain, gid, reject),
        '-A %s %s -m owner --uid-owner %d -m comment --comment "user_egress ping-bob" -j ACCEPT'
        % (chain, icmp, uid_bob),
        '-A %s %s -m comment --comment "user_egress no-ping-for-others" -j REJECT --reject-with %s'
        % (chain, icmp, reject),
        '-A %s -m owner --uid-owner 0 -m comment --comment "user_egress log-root" -j LOG --log-prefix "root-egress: "'
        % chain,
    ]
    assert '-A OUTPUT -m comment --comment "netconfine:user_egress" -j %s' % chain in lines


@pytest.mark.parametrize("address", ADDRESSES)
def test_noinet_member_keeps_the_network_except_under_sg(host, listener, address):
    assert "nctmol_ue_noinet" in as_user(host, "nctmol_ue_alice", "id -Gn").stdout.split()
    assert as_user(host, "nctmol_ue_alice", connect_cmd(address)).stdout.strip() == "connected"
    under_sg = as_user(host, "nctmol_ue_alice", "sg nctmol_ue_noinet -c " + shell_quote(connect_cmd(address)))
    assert under_sg.stdout.strip() == "ConnectionRefusedError", under_sg.stderr


@pytest.mark.parametrize("address", ADDRESSES)
def test_only_bob_may_ping(host, address):
    bob = as_user(host, "nctmol_ue_bob", "ping -n -c1 -W2 " + address)
    assert bob.rc == 0, bob.stdout + bob.stderr
    for user in ("nctmol_ue_carol", "nctmol_ue_alice"):
        assert as_user(host, user, "ping -n -c1 -W2 " + address).rc != 0


@pytest.mark.parametrize(("save", "address"), [("iptables-save", "127.0.0.1"), ("ip6tables-save", "::1")])
def test_roots_traffic_is_logged(host, listener, save, address):
    def hits():
        line = next(line for line in host.check_output(save + " -c -t filter").splitlines()
                    if "user_egress log-root" in line and line.startswith("["))
        return int(re.match(r"^\[(\d+):", line).group(1))

    before = hits()
    assert host.run(connect_cmd(address)).stdout.strip() == "connected"
    assert hits() > before
