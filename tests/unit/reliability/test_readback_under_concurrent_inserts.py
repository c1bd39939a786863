"""The read-back after apply excuses only what another tool did after our read (iptables backend).

Found by the reliability suite's coexistence test: a Docker/kube-proxy-style ``-I OUTPUT 1`` landing
between our commit and our read-back made a good run fail "did not converge" and roll back.
"""

from __future__ import annotations

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils.iptables_backend import IptablesBackend, parse_save

JUMP = '-A OUTPUT -m comment --comment "netconfine:t" -j NC-t-1'
RULE = "-A NC-t-1 -j DROP"
OLD = "-A OUTPUT -p tcp -m tcp --dport 7 -j ACCEPT"
NEW = '-A OUTPUT -p udp -m udp --dport 53 -m comment --comment fw-top -j ACCEPT'


def save(*output_rules, chain_rules=(RULE,)):
    return parse_save("*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:NC-t-1 - [0:0]\n%s\nCOMMIT\n"
                      % "\n".join(list(output_rules) + list(chain_rules)))


class _Policy:
    name = "t"
    chain_names = frozenset(["NC-t-1"])
    chains = ()
    families = (4,)
    present = True


def owned(backend, tables):
    return backend.owned(tables, _Policy(), 4)


@pytest.fixture
def backend():
    return IptablesBackend(run=None, bins={4: ("s", "r")})


def desired(backend):
    return backend._freeze({"filter": {"chains": [("NC-t-1", (RULE,))], "jumps": [("OUTPUT", JUMP, "first")],
                                       "policies": []}})


@pytest.mark.parametrize("read,now,excused", [
    (save(OLD), save(NEW, JUMP, OLD), True),            # a rule inserted after our read: excused
    (save(OLD), save(NEW, NEW, JUMP, OLD), True),
    (save(OLD), save(OLD, JUMP), False),                # misplaced relative to a rule that was there
    (save(NEW, OLD), save(NEW, JUMP, OLD), False),      # NEW was there when we read: our apply is wrong
    (save(OLD), save(NEW, OLD), False),                 # jump missing
    (save(OLD), save(NEW, JUMP, JUMP, OLD), False),     # jump doubled
    (save(OLD), save(NEW, JUMP, OLD, chain_rules=("-A NC-t-1 -j ACCEPT",)), False),   # content differs
])
def test_only_concurrent_inserts_excuse_a_misplaced_jump(backend, read, now, excused):
    after = owned(backend, now)
    want = desired(backend)
    assert after != want
    assert backend.moved_by_others(read, now, after, want) is excused
