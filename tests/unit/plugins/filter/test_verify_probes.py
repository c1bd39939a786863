"""verify_probes.py: probes derived from what tunnel_guard and user_egress declare."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.paranoid.netconfine.plugins.filter.verify_probes import tunnel_guard_probes, user_egress_probes


def brief(probes):
    return [(p["user"], p.get("group"), p["protocol"], p["host"], p.get("port"), p["expect"]) for p in probes]


def test_tunnel_guard_allowed_users_and_the_denied_user_on_both_families():
    tunnels = [{"name": "telnet", "port": 992, "allow_users": ["root"]},
               {"name": "rsync", "port": "273", "allow_users": ["root", "1000-1999"], "allow_groups": ["wheel"]},
               {"name": "dns", "port": 53, "protocol": "udp", "address": "192.0.2.53", "allow_users": ["named"]}]
    assert brief(tunnel_guard_probes(tunnels, "plebian")) == [
        ("root", None, "tcp", "127.0.0.1", 992, "allowed"), ("plebian", None, "tcp", "127.0.0.1", 992, "refused"),
        ("root", None, "tcp", "::1", 992, "allowed"), ("plebian", None, "tcp", "::1", 992, "refused"),
        ("root", None, "tcp", "127.0.0.1", 273, "allowed"), ("plebian", None, "tcp", "127.0.0.1", 273, "refused"),
        ("root", None, "tcp", "::1", 273, "allowed"), ("plebian", None, "tcp", "::1", 273, "refused"),
        ("named", None, "udp", "192.0.2.53", 53, "allowed"), ("plebian", None, "udp", "192.0.2.53", 53, "denied"),
    ]
    names = [p["name"] for p in tunnel_guard_probes(tunnels[:1], "plebian", "ipv6")]
    assert names == ["tunnel_guard: root -> [::1]:992/tcp", "tunnel_guard: plebian -> [::1]:992/tcp"]


def test_tunnel_guard_never_probes_an_allowed_user_as_denied():
    assert brief(tunnel_guard_probes([{"name": "t", "port": 1, "allow_users": ["nobody"]}], "nobody", "ipv4")) == [
        ("nobody", None, "tcp", "127.0.0.1", 1, "allowed")]


SEED_002 = [
    {"name": "log-root", "users": ["root"], "jump": "LOG", "log_prefix": "root-egress: "},
    {"name": "noinet", "groups": ["noinet"], "jump": "REJECT"},
    {"name": "ping-allowed", "users": ["vagrant", "root"], "protocol": "icmp", "icmp_type": "echo-request",
     "jump": "ACCEPT"},
    {"name": "no-ping", "protocol": "icmp", "icmp_type": "echo-request", "jump": "REJECT"},
    {"name": "no-smtp", "protocol": "tcp", "destination_port": "25", "jump": "REJECT"},
    {"name": "elsewhere", "destination": ["192.0.2.0/24"], "jump": "DROP"},
]


def test_user_egress_first_match_decides():
    got = brief(user_egress_probes(SEED_002, ["127.0.0.1"], "plebian"))
    assert got == [
        ("root", None, "icmp", "127.0.0.1", None, "allowed"),             # LOG goes on, ping-allowed decides
        ("root", None, "tcp", "127.0.0.1", 25, "denied"),
        ("plebian", "noinet", "icmp", "127.0.0.1", None, "denied"),       # sg noinet: no network at all
        ("plebian", "noinet", "tcp", "127.0.0.1", 25, "denied"),
        ("vagrant", None, "icmp", "127.0.0.1", None, "allowed"),
        ("vagrant", None, "tcp", "127.0.0.1", 25, "denied"),
        ("plebian", None, "icmp", "127.0.0.1", None, "denied"),
        ("plebian", None, "tcp", "127.0.0.1", 25, "denied"),
    ]


def test_user_egress_targets_default_to_both_loopbacks():
    probes = user_egress_probes([{"name": "p", "users": ["root"], "protocol": "icmp", "jump": "ACCEPT"}])
    assert [p["host"] for p in probes] == ["127.0.0.1", "::1", "127.0.0.1", "::1"]
    assert probes[1]["name"] == "user_egress: root -> [::1]/icmp"


@pytest.mark.parametrize("filt", [tunnel_guard_probes, user_egress_probes])
def test_not_a_list(filt):
    with pytest.raises(AnsibleFilterError, match="expected the list"):
        filt({"port": 1})
