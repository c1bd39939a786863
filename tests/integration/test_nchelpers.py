"""The fixture layer itself: real namespaces, users, listeners, cleanup and the leftover sweep."""

from __future__ import annotations

import fcntl
import grp
import os
import pwd

import pytest

import nchelpers
from nchelpers import connect_as, iptables_save, nft_json, run, try_connect


def netns_exists(name):
    return os.path.exists(f"/run/netns/{name}")


def user_exists(name):
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def test_listener_and_connect_as_on_both_loopbacks(netns_host, make_user, listener):
    user = make_user()
    listener(netns_host, 8080)
    assert connect_as(netns_host, user, "127.0.0.1", 8080)
    assert connect_as(netns_host, user, "::1", 8080)
    assert try_connect(netns_host, user, "127.0.0.1", 8081) == "refused"
    assert try_connect(netns_host, user, "192.0.2.1", 8080) == "unreachable"  # no route in a bare namespace


def test_netfilter_readers_see_the_namespace_kernel_state(netns_host, make_user, listener):
    user = make_user()
    uid = pwd.getpwnam(user).pw_uid
    listener(netns_host, 8080)
    run("iptables", "-A", "OUTPUT", "-p", "tcp", "-m", "owner", "--uid-owner", str(uid), "-j", "DROP", ns=netns_host)
    rules = iptables_save(netns_host, 4, "filter")
    assert f"-A OUTPUT -p tcp -m owner --uid-owner {uid} -j DROP" in rules.splitlines()
    assert not rules.startswith("#")
    assert "--uid-owner" not in iptables_save(netns_host, 6)
    assert try_connect(netns_host, user, "127.0.0.1", 8080, timeout=1) == "timeout"  # SYN dropped on OUTPUT
    assert connect_as(netns_host, user, "::1", 8080)
    assert "nftables" in nft_json(netns_host)


def test_user_with_primary_and_supplementary_groups(make_group, make_user):
    primary, extra = make_group(), make_group()
    user = make_user(group=primary, groups=[extra])
    assert pwd.getpwnam(user).pw_gid == grp.getgrnam(primary).gr_gid
    assert user in grp.getgrnam(extra).gr_mem
    assert user.startswith("nct_") and primary.startswith("nct_")
    assert run("runuser", "-u", user, "-g", extra, "--", "id", "-gn").stdout.strip() == extra


def test_context_managers_clean_up_when_the_body_fails():
    seen = {}
    with pytest.raises(RuntimeError, match="boom"):
        with nchelpers.netns() as ns, nchelpers.local_group() as group, \
                nchelpers.local_user(group=group) as user, nchelpers.tcp_listener(ns, 8080):
            seen.update(ns=ns, group=group, user=user)
            raise RuntimeError("boom")
    assert not netns_exists(seen["ns"])
    assert not user_exists(seen["user"])
    with pytest.raises(KeyError):
        grp.getgrnam(seen["group"])


def test_sweep_removes_dead_sessions_only(tmp_path):
    dead = "nct-0dea-0001"  # no lock file for session 0dea: a killed run
    live_sid = "0a1e"
    live = f"nct-{live_sid}-0001"
    assert live_sid != nchelpers.session_id() != "0dea"
    nchelpers.SESSION_DIR.mkdir(exist_ok=True)
    with open(nchelpers.SESSION_DIR / live_sid, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another live session (flock conflicts across open files)
        try:
            run("ip", "netns", "add", dead)
            run("ip", "netns", "add", live)
            removed = nchelpers.sweep()
            assert f"netns {dead}" in removed
            assert not netns_exists(dead)
            assert netns_exists(live)
        finally:
            run("ip", "netns", "del", live, check=False)
            run("ip", "netns", "del", dead, check=False)
            (nchelpers.SESSION_DIR / live_sid).unlink()
