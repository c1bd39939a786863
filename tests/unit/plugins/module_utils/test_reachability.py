"""reachability.py: probe params -> probes (validation, identities), outcome mapping, running in children."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import socket

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils import reachability
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError

NOBODY = pwd.getpwnam("nobody")
NOGROUP = grp.getgrnam("nogroup")


def build(**item):
    return reachability.build_probes([item], 3)[0]


@pytest.mark.parametrize("item,field,text", [
    ({"host": "127.0.0.1"}, "probes[0].port", "needs a port"),
    ({"host": "127.0.0.1", "protocol": "udp"}, "probes[0].port", "needs a port"),
    ({"host": "127.0.0.1", "port": 0}, "probes[0].port", "1-65535"),
    ({"host": "127.0.0.1", "port": 70000}, "probes[0].port", "1-65535"),
    ({"host": "127.0.0.1", "protocol": "icmp", "port": 7}, "probes[0].port", "no port"),
    ({"host": "", "port": 7}, "probes[0].host", "address or a host name"),
    ({"host": "a b", "port": 7}, "probes[0].host", "address or a host name"),
    ({"host": "x\n", "port": 7}, "probes[0].host", "address or a host name"),
    ({"host": "127.0.0.1", "port": 7, "timeout": 0}, "probes[0].timeout", "more than 0"),
    ({"host": "127.0.0.1", "port": 7, "timeout": 301}, "probes[0].timeout", "at most 300"),
    ({"host": "127.0.0.1", "port": 7, "protocol": "udp", "receive": True}, "probes[0].receive", "tcp probes only"),
    ({"host": "127.0.0.1", "port": 7, "expect": "maybe"}, "probes[0].expect", "must be one of"),
    ({"host": "127.0.0.1", "port": 7, "user": "nct_no_such_user"}, "probes[0].user", "unknown user"),
    ({"host": "127.0.0.1", "port": 7, "group": "nct_no_such_group"}, "probes[0].group", "unknown group"),
    ({"host": "127.0.0.1", "port": 7, "supplementary_groups": ["root", "nct_no_such_group"]},
     "probes[0].supplementary_groups[1]", "unknown group"),
])
def test_bad_probe_names_the_field(item, field, text):
    with pytest.raises(NetconfineError) as err:
        reachability.build_probes([{"host": "192.0.2.1", "port": 1}, item], 3)
    assert err.value.field == field.replace("probes[0]", "probes[1]")
    assert text in str(err.value)


def test_selinux_type_is_a_type_name_and_needs_selinux(tmp_path, monkeypatch):
    monkeypatch.setattr(reachability, "SELINUX_ENFORCE", str(tmp_path / "enforce"))
    for bad in ("nctest_a_t:s0", "a b", ""):
        with pytest.raises(NetconfineError) as err:
            build(host="192.0.2.80", port=80, selinux_type=bad)
        assert err.value.field == "probes[0].selinux_type" and "SELinux type name" in str(err.value)
    with pytest.raises(NetconfineError) as err:
        build(host="192.0.2.80", port=80, selinux_type="nctest_a_t")
    assert err.value.field == "probes[0].selinux_type" and "SELinux is not enabled" in str(err.value)
    (tmp_path / "enforce").write_text("1")
    probe = build(host="192.0.2.80", port=80, selinux_type="nctest_a_t")
    assert probe.selinux_type == "nctest_a_t"
    assert probe.name == "%s (in nctest_a_t) -> 192.0.2.80:80/tcp" % probe.identity.user
    assert reachability.describe(probe, {"outcome": "connected"}, 0.1)["selinux_type"] == "nctest_a_t"
    assert "selinux_type" not in reachability.describe(build(host="::1", port=1), {"outcome": "connected"}, 0.1)


def test_defaults_are_the_module_identity_and_tcp():
    probe = build(host="127.0.0.1", port=992)
    assert probe.identity.uid == os.geteuid()
    assert probe.identity.gid == os.getegid()
    assert set(probe.identity.groups) == set(os.getgroups())
    assert (probe.protocol, probe.timeout, probe.receive, probe.family) == ("tcp", 3.0, False, socket.AF_UNSPEC)
    assert probe.name == "%s -> 127.0.0.1:992/tcp" % probe.identity.user


@pytest.mark.parametrize("item,name", [
    ({"host": "::1", "port": 273, "user": "nobody"}, "nobody -> [::1]:273/tcp"),
    ({"host": "192.0.2.2", "protocol": "icmp", "user": "nobody"}, "nobody -> 192.0.2.2/icmp"),
    ({"host": "localhost", "protocol": "udp", "port": 53, "user": "0"}, "root -> localhost:53/udp"),
    ({"host": "::1", "port": 1, "name": "my label"}, "my label"),
    ({"host": "::1", "port": 1, "user": "nobody", "group": "0"}, "nobody (as root) -> [::1]:1/tcp"),
    ({"host": "::1", "port": 1, "user": "nobody", "supplementary_groups": []}, "nobody (no groups) -> [::1]:1/tcp"),
    ({"host": "::1", "port": 1, "user": "nobody", "supplementary_groups": ["root", "nogroup"]},
     "nobody (groups root,nogroup) -> [::1]:1/tcp"),
])
def test_default_names(item, name):
    assert build(**item).name == name


@pytest.mark.parametrize("item,expected", [
    # a user alone: its primary group, its groups from the group database (as a login gives)
    ({"user": "nobody"}, (NOBODY.pw_uid, NOBODY.pw_gid, set(os.getgrouplist("nobody", NOBODY.pw_gid)))),
    # running as a group (sg G): that gid, the user's groups plus G
    ({"user": "nobody", "group": "root"}, (NOBODY.pw_uid, 0, set(os.getgrouplist("nobody", NOBODY.pw_gid)) | {0})),
    # exactly these supplementary groups: membership only
    ({"user": "nobody", "supplementary_groups": ["root"]}, (NOBODY.pw_uid, NOBODY.pw_gid, {0})),
    ({"user": "nobody", "supplementary_groups": []}, (NOBODY.pw_uid, NOBODY.pw_gid, set())),
    ({"user": str(NOBODY.pw_uid), "group": str(NOGROUP.gr_gid), "supplementary_groups": []},
     (NOBODY.pw_uid, NOGROUP.gr_gid, set())),
])
def test_identities(item, expected):
    ident = build(host="127.0.0.1", port=1, **item).identity
    assert (ident.uid, ident.gid, set(ident.groups)) == expected
    assert ident.user == "nobody"


@pytest.mark.parametrize("returncode,output,outcome", [
    (0, "PING 127.0.0.1 (127.0.0.1) 56(84) bytes of data.\n64 bytes from 127.0.0.1: icmp_seq=1 ttl=64\n", "connected"),
    (1, "PING 127.0.0.1 (127.0.0.1) 56(84) bytes of data.\nFrom 127.0.0.1 icmp_seq=1 Destination Port Unreachable\n"
        "/usr/bin/ping: sendmsg: Operation not permitted\n\n--- 127.0.0.1 ping statistics ---\n"
        "1 packets transmitted, 0 received, +1 errors, 100% packet loss, time 0ms\n", "refused"),
    (1, "From 192.0.2.1 icmp_seq=1 Destination Host Unreachable\n", "unreachable"),
    (1, "From ::1 icmp_seq=1 Destination unreachable: Port unreachable\n", "refused"),
    (1, "From fd00::1 icmp_seq=1 Destination unreachable: Administratively prohibited\n", "unreachable"),
    (1, "From 192.0.2.1 icmp_seq=1 Packet filtered\nDestination Host Prohibited\n", "unreachable"),
    (2, "ping: connect: Network is unreachable\n", "unreachable"),
    (1, "ping: sendmsg: Operation not permitted\n", "permission-denied"),
    (1, "PING 127.0.0.1 (127.0.0.1) 56(84) bytes of data.\n\n--- 127.0.0.1 ping statistics ---\n"
        "1 packets transmitted, 0 received, 100% packet loss, time 0ms\n", "timeout"),
    (2, "ping: unknown iden\n", None),
])
def test_ping_outcome(returncode, output, outcome):
    got, text = reachability.ping_outcome(returncode, output)
    assert got == outcome
    assert "packets transmitted" not in text and "PING" not in text


@pytest.mark.parametrize("exc,outcome", [
    (socket.timeout(), "timeout"),
    (OSError(errno.ECONNREFUSED, "x"), "refused"),
    (OSError(errno.ECONNRESET, "x"), "reset"),
    (OSError(errno.EPIPE, "x"), "reset"),
    (OSError(errno.EHOSTUNREACH, "x"), "unreachable"),
    (OSError(errno.ENETUNREACH, "x"), "unreachable"),
    (OSError(errno.EPERM, "x"), "permission-denied"),
    (OSError(errno.EACCES, "x"), "permission-denied"),
    (OSError(errno.ETIMEDOUT, "x"), "timeout"),
])
def test_classify(exc, outcome):
    assert reachability.classify(exc)[0] == outcome


@pytest.mark.parametrize("expect,outcome,ok", [
    ("allowed", "connected", True), ("allowed", "refused", False),
    ("denied", "refused", True), ("denied", "timeout", True), ("denied", "connected", False),
    ("refused", "refused", True), ("refused", "timeout", False), ("timeout", "timeout", True),
])
def test_matches(expect, outcome, ok):
    assert reachability.matches(expect, outcome) is ok


# ---------------------------------------------------------------- running for real, on loopback, as this process

@pytest.fixture
def loopback_listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


def free_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_run_probes_in_children(loopback_listener):
    closed = free_port()
    probes = reachability.build_probes([
        {"host": "127.0.0.1", "port": loopback_listener, "expect": "allowed"},
        {"host": "127.0.0.1", "port": closed, "expect": "allowed"},
        {"host": "127.0.0.1", "port": closed, "expect": "refused", "name": "closed"},
        {"host": "127.0.0.1", "port": loopback_listener, "receive": True, "timeout": 0.3},
    ], 2)
    results = reachability.run_probes(probes, concurrency=2)
    assert [r["outcome"] for r in results] == ["connected", "refused", "refused", "timeout"]
    assert [r["as_expected"] for r in results] == [True, False, True, None]
    assert [r["allowed"] for r in results] == [True, False, False, False]
    assert results[2]["name"] == "closed" and results[1]["error"] == os.strerror(errno.ECONNREFUSED)
    assert all(r["address"] == "127.0.0.1" and not r["failed"] and r["elapsed"] < 2 for r in results)
    counts, mismatches = reachability.summarise(results)
    assert (counts["connected"], counts["refused"], counts["timeout"], mismatches) == (1, 2, 1, 1)


def test_unresolvable_name_is_unreachable():
    result = reachability.run_probes(reachability.build_probes([{"host": "nct-no-such-host.invalid", "port": 1}], 1))
    assert result[0]["outcome"] == "unreachable" and "cannot resolve" in result[0]["error"]


def test_a_child_that_hangs_is_killed(monkeypatch):
    monkeypatch.setattr(reachability, "GRACE", 0.2)
    monkeypatch.setattr(reachability, "attempt", lambda probe: __import__("time").sleep(30))
    result = reachability.run_probes(reachability.build_probes([{"host": "127.0.0.1", "port": 1, "timeout": 0.1}], 1))
    assert result[0]["outcome"] == "timeout" and "did not finish" in result[0]["error"]
    assert result[0]["elapsed"] < 5
