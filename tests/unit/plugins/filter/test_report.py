"""report.py: the audit's verdict per policy, for a single module result and for a looped task's result."""

from __future__ import annotations

import pytest

from ansible_collections.paranoid.netconfine.plugins.filter.report import _policy_state

RULES = "-A NC-x -j ACCEPT\n-A NC-x -j DROP\n"
DRIFT = {"changed": True, "diff": [{"before": "-A NC-x -j ACCEPT\n", "after": RULES, "before_header": "iptables 4"}]}


@pytest.mark.parametrize("result, expected", [
    ({}, ("not run", [])),
    ({"skipped": True}, ("not run", [])),
    ({"changed": False}, ("in sync", [])),
    (DRIFT, ("drifted", ["# iptables 4", "+-A NC-x -j DROP"])),
    ({"failed": True, "msg": "boom"}, ("failed", ["boom"])),
    # a looped task (netns_confine: one netns_service call per namespace)
    ({"changed": False, "results": [{"changed": False}, {"changed": False}]}, ("in sync", [])),
    ({"changed": True, "results": [{"changed": False}, DRIFT]}, ("drifted", ["# iptables 4", "+-A NC-x -j DROP"])),
    ({"failed": True, "results": [DRIFT, {"failed": True, "msg": "no such user"}]}, ("failed", ["no such user"])),
    ({"skipped": True, "results": [{"skipped": True}]}, ("not run", [])),
    ({"changed": False, "results": []}, ("in sync", [])),
])
def test_policy_state(result, expected):
    assert _policy_state({"role": "r", "result": result}) == expected
