"""tunnel_guard converged on crueller: the kernel's rules and who may reach the tunnel listeners."""

import pytest
from netns_listeners import CONNECT, listening


@pytest.fixture(scope="module")
def listeners(host):
    """Stand-ins for stunnel's listeners on 127.0.0.1 and [::1], ports 992 and 273."""
    with listening(host, 992, 273):
        yield


def connect(host, user, address, port):
    cmd = host.run("runuser -u %s -- python3 -c %s %s %s", user, CONNECT, address, str(port))
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


def owned(host):
    """The role's rules as the kernel holds them, from whichever backend converged them."""
    return host.check_output("nft list table inet netconfine 2>/dev/null; iptables-save; ip6tables-save")


def test_the_role_owns_one_chain_behind_a_tagged_jump(host):
    rules = owned(host)
    assert "netconfine:tunnel_guard" in rules
    assert "NC-tunnel-guard-" in rules
    for comment in ("tunnel_guard telnet-over-stunnel: user root",
                    "tunnel_guard telnet-over-stunnel: user nctmol_tg_alice",
                    "tunnel_guard telnet-over-stunnel: everyone else",
                    "tunnel_guard rsync-attic: members of nctmol_tg_wheel",
                    "tunnel_guard rsync-attic: everyone else"):
        assert comment in rules
    assert "daemon to remote" not in rules  # output policy accept: the remote needs no rule
    assert "policy drop" not in rules and ":OUTPUT DROP" not in rules


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_only_root_and_alice_reach_the_stunnel_listener(host, listeners, address):
    assert connect(host, "root", address, 992) == "connected"
    assert connect(host, "nctmol_tg_alice", address, 992) == "connected"
    assert connect(host, "nctmol_tg_plebian", address, 992) == "ConnectionRefusedError"
    assert connect(host, "nctmol_tg_admin", address, 992) == "ConnectionRefusedError"


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_only_wheel_members_reach_the_rsync_listener(host, listeners, address):
    assert connect(host, "nctmol_tg_admin", address, 273) == "connected"   # wheel is a supplementary group
    assert connect(host, "nctmol_tg_plebian", address, 273) == "ConnectionRefusedError"
    assert connect(host, "root", address, 273) == "ConnectionRefusedError"  # root is not implied
