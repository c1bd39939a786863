"""Coexistence: netconfine converges 50 times while another tool keeps changing the same tables.

A churn loop (foreign_churn.py) adds and removes Docker-, kube-proxy-, firewalld- and fail2ban-style
chains and rules - and nft tables of its own - in filter, nat and mangle of both families, checking
before every step that nothing of its own changed since its last step. Afterwards every foreign chain
is byte-identical to what the loop left, and ours are exactly as declared. A flush of a whole table by
another tool is detected and repaired by the next run.
"""

from __future__ import annotations

import json

import nchelpers
from reliability import foreign_tools, kernel, scenarios, tally

RUNS = 50
PLAYBOOK_RUNS = 2
TASKS = ("owner_rule-tunnel_guard", "owner_rule-mangle_members")


def _owned_rule_lines(state):
    view = kernel.owned_view({k: v for k, v in state.items() if k != "nft"})
    return sorted(line for text in view.values() for line in text.splitlines() if line.startswith("-A "))


def _declared_rule_lines(results):
    lines = []
    for result in results:
        for text in result["rendered"].values():
            lines.extend(line.split("  # ")[0] for line in text.splitlines() if line.startswith("-A "))
    return sorted(lines)


def test_fifty_runs_while_other_tools_churn(world):
    tasks = [scenarios.scenario(t) for t in TASKS]
    calls = [{"module": tasks[i % 2].module, "args": tasks[i % 2].args(world, i // 2), "pause": 0.05}
             for i in range(RUNS - PLAYBOOK_RUNS)]
    with foreign_tools.churn(world.ns, seed_value=world.port) as loop:
        results = kernel.run_modules(world.ns, calls)
        for i in range(PLAYBOOK_RUNS):
            scenario = tasks[i % 2]
            play = nchelpers.ansible_playbook(json.dumps([{"hosts": "all", "gather_facts": False, "tasks": [
                {"name": "converge", "paranoid.netconfine.owner_rule": scenario.args(world, 100 + i)}]}],
                indent=1), [world.ns])
            assert play.rc == 0, play.output
            results.append(play.task(world.ns, "converge").result)
        report = loop.stop()
    failed = ["run %d: %s" % (i, r.get("msg")) for i, r in enumerate(results) if r.get("failed")]
    assert not failed, "\n".join(failed)
    assert len(results) == RUNS
    assert report["steps"] >= 20, report
    assert not report["errors"], "the other tool's own steps failed:\n" + "\n".join(report["errors"])
    assert not report["violations"], "netconfine touched foreign state:\n" + "\n\n".join(report["violations"])

    # ours, exactly as declared (and a second run has nothing to do)
    final = kernel.run_modules(world.ns, [{"module": t.module, "args": t.args(world, 200)} for t in tasks] * 2)
    assert not any(r.get("failed") for r in final), final
    assert not any(r.get("changed") for r in final[len(tasks):]), final[len(tasks):]
    state = kernel.snapshot(world.ns)
    if world.backend.name == "iptables":
        assert _owned_rule_lines(state) == _declared_rule_lines(final[:len(tasks)])
    tasks[0].behaviour(world)

    # theirs, byte-identical to what the loop left
    left = kernel.chains(report["last_view"])
    now = kernel.chains(kernel.foreign_view(state))
    tally.add("foreign_checked", len(left))
    tally.add("foreign_intact", sum(1 for key, text in left.items() if now.get(key) == text))
    assert now == left, kernel.diff_text(report["last_view"], kernel.foreign_view(state))


def test_another_tool_flushing_a_whole_table_is_repaired_by_the_next_run(world):
    guard, mangle = scenarios.scenario("owner_rule-tunnel_guard"), scenarios.scenario("owner_rule-mangle_members")
    calls = [{"module": s.module, "args": s.args(world)} for s in (guard, mangle)]
    for label, argv, destroys in foreign_tools.FLUSHES:
        first = kernel.run_modules(world.ns, calls)
        assert not any(r.get("failed") for r in first), first
        nchelpers.run(*argv, ns=world.ns)
        repair = kernel.run_modules(world.ns, calls * 2)
        assert not any(r.get("failed") for r in repair), (label, repair)
        assert not any(r.get("changed") for r in repair[2:]), (label, repair[2:])
        if world.backend.name in destroys:
            tally.add("flushes_tried")
            assert any(r.get("changed") for r in repair[:2]), "%s went unnoticed" % label
        else:   # another tool's flush that does not reach our state: nothing to do
            assert not any(r.get("changed") for r in repair[:2]), (label, repair[:2])
        guard.behaviour(world)
        if world.backend.name in destroys:
            tally.add("flushes_repaired")
