"""Concurrency: runs of the same task and of different tasks on one host at the same moment.

Three driver processes run in lock-step trials (a file barrier starts each trial at the same moment):
two run the same task with the same parameters, the third a different task. Per trial: all three
succeed; exactly one of the identical runs reports a change (the other found the work done: they
were serialised); the state right after the trial has each task's chain as declared and each jump
exactly once. A few trials go through ansible-playbook with two inventory hosts on one namespace.
"""

from __future__ import annotations

import collections
import json
import tempfile

import nchelpers
from reliability import kernel, scenarios, tally

TRIALS = 50
SAME, OTHER = "owner_rule-tunnel_guard", "owner_rule-mangle_members"


def _declared(results) -> list[str]:
    lines = []
    for result in results:
        for text in result.get("rendered", {}).values():
            lines.extend(line.split("  # ")[0] for line in text.splitlines() if line.startswith("-A "))
    return sorted(lines)


def _owned(state) -> list[str]:
    view = kernel.owned_view({k: v for k, v in state.items() if k != "nft"})
    return sorted(line for text in view.values() for line in text.splitlines() if line.startswith("-A "))


def _jumps_once(state) -> bool:
    """Every tagged jump occurs once per family (iptables views; nft's own table is checked by the module)."""
    jumps = collections.Counter((key, line) for key, text in state.items() if key != "nft"
                                for line in text.splitlines() if "netconfine:" in line)
    return all(count == 1 for count in jumps.values())


def _trial_calls(world, barrier_dir, party, parties):
    same, other = scenarios.scenario(SAME), scenarios.scenario(OTHER)
    calls = []
    for trial in range(TRIALS):
        task = other if party == 2 else same
        calls.append({"op": "barrier", "dir": barrier_dir, "key": "start-%d" % trial, "parties": parties})
        calls.append({"module": task.module, "args": task.args(world, trial)})
        calls.append({"op": "barrier", "dir": barrier_dir, "key": "done-%d" % trial, "parties": parties})
        if party == 0:
            calls.append({"op": "snapshot"})
        calls.append({"op": "barrier", "dir": barrier_dir, "key": "checked-%d" % trial, "parties": parties})
    return calls


def test_same_and_different_tasks_at_once_are_serialised_without_duplicates(world):
    parties = 3
    with tempfile.TemporaryDirectory(prefix="nct-barrier-") as barrier_dir:
        procs = [kernel.start_modules(world.ns, _trial_calls(world, barrier_dir, party, parties))
                 for party in range(parties)]
        results = [kernel.finish_modules(proc, path, timeout=600) for proc, path in procs]
    runs = [[r for r in party if "barrier" not in r and "snapshot" not in r] for party in results]
    snaps = [r["snapshot"] for r in results[0] if "snapshot" in r]
    assert all(len(r) == TRIALS for r in runs) and len(snaps) == TRIALS
    problems, overlapping = [], 0
    for trial in range(TRIALS):
        tally.add("concurrency_trials")
        first, second, other = runs[0][trial], runs[1][trial], runs[2][trial]
        state = kernel.normalise(snaps[trial])
        failed = [r.get("msg") for r in (first, second, other) if r.get("failed")]
        if failed:
            problems.append("trial %d: failed: %s" % (trial, [str(m)[:400] for m in failed]))
            continue
        if [first.get("changed"), second.get("changed")].count(True) != 1:
            problems.append("trial %d: same task twice, changed=%s/%s (not serialised?)"
                            % (trial, first.get("changed"), second.get("changed")))
            continue
        if trial and not other.get("changed"):
            problems.append("trial %d: the other task reported no change" % trial)
            continue
        if world.backend.name == "iptables" and _owned(state) != _declared([first, other]):
            problems.append("trial %d: owned state is not as declared:\n%s" % (trial, "\n".join(_owned(state))))
            continue
        if not _jumps_once(state):
            problems.append("trial %d: a jump occurs more than once" % trial)
            continue
        if first["_start"] < second["_end"] and second["_start"] < first["_end"]:
            overlapping += 1
        tally.add("concurrency_passed")
    assert not problems, "\n".join(problems)
    assert overlapping >= TRIALS // 2, "only %d of %d trials really overlapped" % (overlapping, TRIALS)


def test_two_hosts_on_one_namespace_through_ansible_playbook(world):
    same = scenarios.scenario(SAME)
    hosts = {"alpha": {"ansible_netns": world.ns}, "beta": {"ansible_netns": world.ns}}
    tasks = []
    for trial in range(3):
        tasks.append({"name": "same task %d" % trial, "paranoid.netconfine.owner_rule": same.args(world, trial)})
        args = dict(same.args(world, trial), name="rly-{{ inventory_hostname }}")
        tasks.append({"name": "different tasks %d" % trial, "paranoid.netconfine.owner_rule": args})
    play = nchelpers.ansible_playbook(json.dumps([{"hosts": "all", "gather_facts": False, "tasks": tasks}],
                                                 indent=1), hosts, forks=2)
    assert play.rc == 0, play.output
    for trial in range(3):
        tally.add("concurrency_trials")
        same_runs = [play.task(h, "same task %d" % trial) for h in hosts]
        assert [r.changed for r in same_runs].count(True) == 1, [r.result for r in same_runs]
        assert all(play.task(h, "different tasks %d" % trial).changed for h in hosts)
        tally.add("concurrency_passed")
    state = kernel.snapshot(world.ns)
    assert _jumps_once(state)
    final = [play.task("alpha", "same task 2").result] + [play.task(h, "different tasks 2").result for h in hosts]
    if world.backend.name == "iptables":
        assert _owned(state) == _declared(final)
    same.behaviour(world)
