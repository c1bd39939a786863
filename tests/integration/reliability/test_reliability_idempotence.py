"""Idempotence matrix, per scenario and backend, with the kernel's state hashed between steps:

    check (changed) -> apply (changed) -> check (not changed) -> apply (not changed)   then the behaviour
    check absent (changed) -> absent (changed) -> check absent (not changed) -> absent (not changed)

Check mode never moves the hash and predicts the real run exactly (same diff, same scripts); the second
apply moves nothing; removal brings the hash back to what it was before the first apply.
"""

from __future__ import annotations

import json

import nchelpers
from reliability import kernel, scenarios, tally

STEPS = (  # (label, check mode, state, expect changed)
    ("check", True, "present", True),
    ("apply", False, "present", True),
    ("check again", True, "present", False),
    ("apply again", False, "present", False),
    ("check absent", True, "absent", True),
    ("absent", False, "absent", True),
    ("check absent again", True, "absent", False),
    ("absent again", False, "absent", False),
)


def test_idempotence_matrix(world, scenario):
    tally.add("matrices_tried")
    hashes = [kernel.digest(kernel.snapshot(world.ns))]
    initial = hashes[0]
    results = {}
    for label, check, state, expect_changed in STEPS:
        args = scenario.args(world, 0, state=state)
        result = kernel.run_module(world.ns, scenario.module, args, check=check, diff=True)
        results[label] = result
        hashes.append(kernel.digest(kernel.snapshot(world.ns)))
        assert not result.get("failed"), (label, result.get("msg"))
        assert bool(result.get("changed")) is expect_changed, (label, result)
        if check or not expect_changed:
            assert hashes[-1] == hashes[-2], "%s moved the kernel's state" % label
        else:
            assert hashes[-1] != hashes[-2], "%s reported a change but the kernel is the same" % label
        if label == "apply again" and scenario.behaviour:
            scenario.behaviour(world)
        if label == "absent again" and scenario.undone:
            scenario.undone(world)
    for check_label, real_label in (("check", "apply"), ("check absent", "absent")):
        assert results[check_label]["diff"] == results[real_label]["diff"], "check mode mispredicted the diff"
        assert results[check_label]["scripts"] == results[real_label]["scripts"], "check mode mispredicted"
    assert hashes[-1] == initial, "state: absent left something behind"
    tally.add("matrices_passed")


_HASH = ("{ iptables-save; ip6tables-save; nft list ruleset; } | grep -v '^#' "
         "| sed -E 's/\\[[0-9]+:[0-9]+\\]//; s/packets [0-9]+ bytes [0-9]+//' | sha256sum")


def test_idempotence_matrix_through_ansible_playbook(world):
    """The same matrix as a playbook: check_mode per task, a hash task between the steps."""
    tally.add("matrices_tried")
    scenario = scenarios.scenario("owner_rule-tunnel_guard")
    tasks = [{"name": "hash 0", "ansible.builtin.shell": _HASH, "changed_when": False, "check_mode": False}]
    for index, (label, check, state, _expect) in enumerate(STEPS, start=1):
        tasks.append({"name": label, "check_mode": check, "diff": True,
                      "paranoid.netconfine.owner_rule": scenario.args(world, 0, state=state)})
        tasks.append({"name": "hash %d" % index, "ansible.builtin.shell": _HASH, "changed_when": False,
                      "check_mode": False})
    play = nchelpers.ansible_playbook(json.dumps([{"hosts": "all", "gather_facts": False, "tasks": tasks}],
                                                 indent=1), [world.ns])
    assert play.rc == 0, play.output
    hashes = [play.task(world.ns, "hash %d" % i).result["stdout"] for i in range(len(STEPS) + 1)]
    for index, (label, check, _state, expect_changed) in enumerate(STEPS, start=1):
        result = play.task(world.ns, label)
        assert result.changed is expect_changed, (label, result.result)
        moved = hashes[index] != hashes[index - 1]
        assert moved is (expect_changed and not check), (label, hashes[index - 1], hashes[index])
    assert hashes[-1] == hashes[0]
    tally.add("matrices_passed")
