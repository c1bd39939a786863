"""Injected faults: every one ends in a clear failure with the previous state intact or fully restored.

Each case converges a scenario (variant 0), takes a snapshot of both families (and nft, and legacy
xtables where used), then asks for variant 1 (or removal) while a wrapper binary first on PATH fails,
dies, or lies in one chosen way - or a lock is held, a cgroup or chain disappears between read and
apply. Afterwards the module must have failed with a message that says what happened, the kernel
must be byte-identical to the snapshot (never half-applied), and a clean run must converge again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import secrets
import subprocess
from pathlib import Path
from typing import Callable

import pytest

import nchelpers
from reliability import kernel, scenarios, tally
from reliability.fault_injection import (FAIL, FAIL_READ, KILL_AFTER, KILL_BEFORE, KILL_MIDWAY, KILL_RACE,
                                         WrapperDir, Wrap, after, before, filter_input, filter_output,
                                         legacy_links)

CGROUP2 = Path("/sys/fs/cgroup/unified") if Path("/sys/fs/cgroup/unified/cgroup.controllers").exists() \
    else Path("/sys/fs/cgroup")


@dataclasses.dataclass
class Ctx:
    world: scenarios.World
    chain: str = ""              # the owned chain of the scenario, once applied
    tag: str = ""
    cgroup: str = ""             # a cgroup made for the case (as rules name it): variant 1 matches it
    cgroup_old: str = ""         # another one, matched by variant 0


def _cgroup_params(ctx):
    def params(world, variant):
        return {"name": "rly-cgroup", "rules": [
            {"cgroup": ctx.cgroup if variant else ctx.cgroup_old, "protocol": "tcp", "destination_port": str(world.port), "jump": "REJECT",
             "comment": "cgroup v%d" % variant}]}
    return params


@dataclasses.dataclass(frozen=True)
class Fault:
    id: str
    backends: tuple[str, ...]
    wraps: Callable[[Ctx], list[Wrap]]
    expect: str                                  # regex the failure message must match
    scenario: str = "owner_rule-mangle_members"
    target: dict = dataclasses.field(default_factory=dict)   # overrides for the failing run (state, position)
    variant: int = 1                             # the scenario variant the failing run asks for
    drift: Callable[[Ctx], None] | None = None   # something another tool did before the snapshot
    legacy: bool = False                         # use the legacy xtables variant (via PATH)
    hold: str | None = None                      # "xtables": /run/xtables.lock; "host": the module's own lock
    cgroup: bool = False                         # the scenario matches a cgroup made for the case
    restored: bool = True                        # False: a double fault, reported in rollback_errors
    rolled_back: tuple[str, ...] = ()            # units the result must list as rolled back


IPT = ("iptables",)
NFT = ("nftables",)


def _rmdir_cgroup(ctx):
    # "ip netns exec" gives the module a /sys without cgroup mounts: remove it in the test's mount namespace
    return "nsenter --mount=/proc/%d/ns/mnt rmdir %s%s" % (os.getpid(), CGROUP2, ctx.cgroup)


def _rmdir_both_cgroups(ctx):
    return "%s && nsenter --mount=/proc/%d/ns/mnt rmdir %s%s" % (_rmdir_cgroup(ctx), os.getpid(), CGROUP2,
                                                                 ctx.cgroup_old)


def _delete_jump(ctx, table="mangle", chain="POSTROUTING", family=4):
    tool = "iptables" if family == 4 else "ip6tables"
    return '%s -w -t %s -D %s -m comment --comment "%s" -j %s' % (tool, table, chain, ctx.tag, ctx.chain)


# killed before it reads: the module sees rc -9, or, when the process was gone before the module wrote its
# input, the failed write (EPIPE): either way the task fails naming it and the previous state stays
KILLED_BEFORE_READING = r"rejected the change[^(]*\(rc=(-9\)|-1\): \S+ ended before it read all its input)"

FAULTS = [
    # --- a restore fails
    Fault("second-family-restore-fails", IPT, lambda c: [Wrap("ip6tables-restore", FAIL)],
          r"rejected the change.*netconfine-fault", rolled_back=("iptables 4", "iptables 6")),
    Fault("first-family-restore-fails", IPT, lambda c: [Wrap("iptables-restore", FAIL)],
          r"rejected the change.*netconfine-fault", rolled_back=("iptables 4",)),
    Fault("second-family-restore-fails-while-removing", IPT, lambda c: [Wrap("ip6tables-restore", FAIL)],
          r"rejected the change.*netconfine-fault", target={"state": "absent"},
          rolled_back=("iptables 4", "iptables 6")),
    Fault("second-family-restore-fails-moving-the-jump", IPT, lambda c: [Wrap("ip6tables-restore", FAIL)],
          r"rejected the change", scenario="owner_rule-tunnel_guard", target={"position": "last"}),
    # --- the restore process is killed
    Fault("restore-killed-before-reading-v4", IPT, lambda c: [Wrap("iptables-restore", KILL_BEFORE)],
          KILLED_BEFORE_READING),
    Fault("restore-killed-after-commit-v4", IPT, lambda c: [Wrap("iptables-restore", KILL_AFTER)],
          r"rejected the change \(rc=-9\)"),
    Fault("restore-killed-after-commit-v6", IPT, lambda c: [Wrap("ip6tables-restore", KILL_AFTER)],
          r"rejected the change \(rc=-9\)", rolled_back=("iptables 4", "iptables 6")),
    Fault("restore-killed-midway-through-its-input-v6", IPT, lambda c: [Wrap("ip6tables-restore", KILL_MIDWAY)],
          r"rejected the change \(rc=-9\)"),
    Fault("restore-killed-racing-v4", IPT, lambda c: [Wrap("iptables-restore", KILL_RACE)],
          r"rejected the change \(rc=-9\)"),
    Fault("restore-killed-racing-v6", IPT, lambda c: [Wrap("ip6tables-restore", KILL_RACE)],
          r"rejected the change \(rc=-9\)"),
    # --- locks held longer than the wait
    Fault("xtables-lock-held-legacy", IPT, lambda c: [], r"xtables lock|holding", legacy=True, hold="xtables",
          target={"xtables_wait": 1}),
    Fault("host-lock-held", IPT + NFT, lambda c: [], r"another netconfine run still holds .*lock_timeout|"
          r"lock_timeout.*another netconfine run", hold="host", target={"lock_timeout": 1}),
    # --- accepted by the model and a dry run, refused by the real apply
    Fault("cgroup-removed-between-read-and-apply", IPT + NFT,
          lambda c: [Wrap("iptables-save", before(_rmdir_cgroup(c)))] if c.world.backend.name == "iptables"
          else [Wrap("nft", before(_rmdir_cgroup(c)), when="list table")],
          r"rejected the change|failed", cgroup=True),
    Fault("cgroup-removed-after-the-first-family", IPT,
          lambda c: [Wrap("iptables-restore", after(_rmdir_cgroup(c)))],
          r"rejected the change", cgroup=True, rolled_back=("iptables 4", "iptables 6")),
    Fault("cgroups-of-both-states-removed-after-the-first-family", IPT,
          lambda c: [Wrap("iptables-restore", after(_rmdir_both_cgroups(c)))],
          r"rejected the change", cgroup=True, restored=False),
    Fault("own-jump-deleted-concurrently", IPT,
          lambda c: [Wrap("iptables-restore", before(_delete_jump(c)))],
          r"rejected the change", target={"position": "first"}),
    Fault("jump-target-chain-deleted-concurrently", IPT,
          lambda c: [Wrap("iptables-restore",
                          before("iptables -w -t mangle -F %s && iptables -w -t mangle -X %s" % (c.chain, c.chain)))],
          r"rejected the change", variant=0, drift=lambda c: nchelpers.run("sh", "-c", _delete_jump(c), ns=c.world.ns)),
    # --- a kernel (or restore) that silently drops part of a rule: the read-back must notice
    Fault("kernel-drops-suppl-groups", IPT, lambda c: [Wrap("iptables-restore", filter_input("s/ --suppl-groups//g"))],
          r"did not converge", rolled_back=("iptables 4", "iptables 6")),
    Fault("kernel-drops-a-negation", IPT,
          lambda c: [Wrap("ip6tables-restore", filter_input("s/! --gid-owner/--gid-owner/g"))], r"did not converge"),
    Fault("kernel-drops-the-jump-tag", IPT,
          lambda c: [Wrap("iptables-restore", filter_input('/^-[IA] /s/-m comment --comment "netconfine:[^"]*" //'))],
          r"did not converge", target={"position": "first"}),
    Fault("restore-appends-a-jump-meant-first", IPT,          # text alone cannot tell this from a re-sync: the
          lambda c: [Wrap("iptables-restore", filter_input(r"s/^-I \([A-Z]*\) 1 /-A \1 /"))],   # handles can
          r"did not converge", target={"position": "first"}, rolled_back=("iptables 4", "iptables 6")),
    Fault("kernel-drops-a-rule", IPT, lambda c: [Wrap("ip6tables-restore", filter_input("/--log-prefix/d"))],
          r"did not converge"),
    Fault("kernel-changes-a-verdict", IPT,
          lambda c: [Wrap("iptables-restore", filter_input("s/-j RETURN/-j ACCEPT/"))], r"did not converge"),
    # --- the reader fails or lies
    Fault("save-hides-owned-rules-on-read-back", IPT,
          lambda c: [Wrap("ip6tables-save", filter_output("/^-A NC-/d"), call=2)], r"did not converge"),
    Fault("save-fails-on-read", IPT, lambda c: [Wrap("iptables-save", FAIL_READ)], r"iptables-save failed"),
    Fault("save-fails-on-read-back", IPT, lambda c: [Wrap("ip6tables-save", FAIL_READ, call=2)],
          r"ip6tables-save failed", rolled_back=("iptables 4", "iptables 6")),
    # --- a double fault: the rollback itself fails; the result must say what is left half-applied
    Fault("rollback-restore-fails-too", IPT,
          lambda c: [Wrap("ip6tables-restore", FAIL), Wrap("iptables-restore", FAIL, call=2)],
          r"rejected the change", restored=False),
    # --- nftables: one transaction per run
    Fault("nft-apply-fails", NFT, lambda c: [Wrap("nft", FAIL, when="-f")], r"netconfine-fault"),
    Fault("nft-killed-before-reading", NFT, lambda c: [Wrap("nft", KILL_BEFORE, when="-f")], KILLED_BEFORE_READING),
    Fault("nft-killed-after-commit", NFT, lambda c: [Wrap("nft", KILL_AFTER, when="-f")], r"rc=-9"),
    Fault("nft-killed-midway-through-its-input", NFT, lambda c: [Wrap("nft", KILL_MIDWAY, when="-f")], r"rc=-9"),
    Fault("nft-drops-comments", NFT,
          lambda c: [Wrap("nft", filter_input('s/, *"comment": *"[^"]*"//g'), when="-f")], r"did not converge",
          scenario="owner_rule-tunnel_guard"),
    # the read before the apply comes from the ruleset the shadowing check lists (nft_backend.read_shared) where
    # it can; the read-back after it is always "list table inet" of its own
    Fault("nft-list-hides-comments-on-read-back", NFT,
          lambda c: [Wrap("nft", filter_output('s/, *"comment": *"[^"]*"//g'), when="list table inet", call=None)],
          r"did not converge", scenario="owner_rule-tunnel_guard"),
    Fault("nft-list-fails-on-read", NFT,       # no ruleset to share: the backend's own read fails, nothing applied
          lambda c: [Wrap("nft", FAIL_READ, when="list ruleset", call=None),
                     Wrap("nft", FAIL_READ, when="list table inet")], r"failed"),
]


def test_at_least_20_faults_per_backend():
    for backend in scenarios.backends():
        cases = [f for f in FAULTS if backend.name in f.backends]
        assert len(cases) >= (20 if backend.name == "iptables" else 8), backend.name


@contextlib.contextmanager
def lock_held(path: str):
    """Hold an flock on ``path`` in another process until the block ends."""
    proc = subprocess.Popen(["flock", "-x", path, "sleep", "120"], start_new_session=True)
    try:
        def taken():
            with open(path, "a") as probe:
                try:
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(probe, fcntl.LOCK_UN)
                return False
        assert kernel.wait_for(taken, 10), "could not take %s" % path
        yield
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def host_lock_path(ns: str) -> str:
    inode = os.stat("/run/netns/%s" % ns).st_ino
    inside = nchelpers.run("stat", "-L", "-c", "%i", "/proc/self/ns/net", ns=ns).stdout.strip()
    assert str(inode) == inside, (inode, inside)
    return "/run/netconfine/netns-%d.lock" % inode


@contextlib.contextmanager
def cgroup_dir():
    name = "/nct-rly-%s" % secrets.token_hex(3)
    (CGROUP2 / name[1:]).mkdir()
    try:
        yield name
    finally:
        with contextlib.suppress(OSError):
            (CGROUP2 / name[1:]).rmdir()


FAULT_CASES = [(b, f) for b in scenarios.backends() for f in FAULTS if b.name in f.backends]


@pytest.mark.parametrize("fault_backend,fault", FAULT_CASES, ids=lambda x: getattr(x, "id", str(x)))
def test_injected_fault_fails_clearly_and_leaves_the_previous_state(fault_backend, fault, make_world, cleanup):
    world = make_world(fault_backend, light=True)
    ctx = Ctx(world)
    scenario = scenarios.scenario(fault.scenario)
    if fault.cgroup:
        ctx.cgroup = cleanup.enter_context(cgroup_dir())
        ctx.cgroup_old = cleanup.enter_context(cgroup_dir())
        scenario = dataclasses.replace(scenario, params=_cgroup_params(ctx), behaviour=None)
    base = None
    if fault.legacy:
        base = WrapperDir(links=legacy_links())
        cleanup.callback(base.remove)
    applied = kernel.run_module(world.ns, scenario.module, scenario.args(world, 0),
                                path_prefix=base.path if base else None)
    assert not applied.get("failed"), applied
    ctx.chain, ctx.tag = applied["chains"][0], "netconfine:%s" % scenario.args(world, 0)["name"]
    if fault.drift:
        fault.drift(ctx)
    before = kernel.snapshot(world.ns, legacy=fault.legacy)

    wrappers = WrapperDir(fault.wraps(ctx), links=legacy_links() if fault.legacy else None)
    cleanup.callback(wrappers.remove)
    target = scenario.args(world, fault.variant, **fault.target)
    if fault.cgroup and fault_backend.name == "iptables":
        # the change is valid as far as anyone can check beforehand: the dry run of the real restore accepts it
        predicted = kernel.run_module(world.ns, scenario.module, target, check=True)
        for label, script in predicted["scripts"].items():
            tool = "iptables-restore" if label.endswith("4") else "ip6tables-restore"
            nchelpers.run(tool, "--test", "--noflush", ns=world.ns, input=script)
    with contextlib.ExitStack() as holds:
        if fault.hold == "xtables":
            holds.enter_context(lock_held("/run/xtables.lock"))
        elif fault.hold == "host":
            holds.enter_context(lock_held(host_lock_path(world.ns)))
        result = kernel.run_module(world.ns, scenario.module, target, path_prefix=wrappers.path)
    after = kernel.snapshot(world.ns, legacy=fault.legacy)
    tally.add("faults_tried")

    assert result.get("failed"), "the fault went unnoticed: %s" % result
    assert re.search(fault.expect, result.get("msg", ""), re.S), result.get("msg")
    for binary in {w.binary for w in fault.wraps(ctx)}:
        assert wrappers.log(binary), "%s on PATH was not used (get_bin_path ignored PATH?)" % binary
    for unit in fault.rolled_back:
        assert unit in result.get("rolled_back", []), result
    if fault.restored:
        assert not result.get("rollback_errors"), result.get("rollback_errors")
        assert after == before, "not the previous state:\n" + kernel.diff_text(before, after)
    else:
        # a double fault: neither the new nor the old state can be applied any more; the result must name
        # every unit left as it is, and the other units must be back where they were
        assert result.get("rollback_errors"), "a failed rollback must be reported: %s" % result
        broken = {error.split(":", 1)[0] for error in result["rollback_errors"]}
        for key, family_unit in (("iptables", "iptables 4"), ("ip6tables", "iptables 6")):
            if family_unit not in broken:
                assert after[key] == before[key], \
                    "%s not restored:\n%s" % (family_unit, kernel.diff_text(before, after))

    # the host is not wedged: a clean run converges, and a second one changes nothing
    for name in (ctx.cgroup, ctx.cgroup_old) if fault.cgroup else ():
        (CGROUP2 / name[1:]).mkdir(exist_ok=True)     # the service came back
    clean = dict(target, lock_timeout=60, xtables_wait=10)
    path = base.path if base else None
    again = kernel.run_modules(world.ns, [{"module": scenario.module, "args": clean}] * 2, path_prefix=path)
    assert not again[0].get("failed"), again[0]
    assert not again[1].get("failed") and not again[1].get("changed"), again[1]
    tally.add("faults_survived")


# --------------------------------------------------------------------------- the namespace disappears

def _rendered_rules(result: dict) -> set[str]:
    """The rule lines (chains and jumps) a module result says it applied."""
    lines = set()
    for text in result.get("rendered", {}).values():
        lines.update(line.split("  # ")[0] for line in text.splitlines() if line.startswith("-A "))
    return lines


def _owned_rules(state: dict) -> set[str]:
    view = kernel.owned_view({k: v for k, v in state.items() if k != "nft"})
    return {line for text in view.values() for line in text.splitlines() if line.startswith("-A ")}


def _disappearing_wrap(backend, ns):
    command = "ip netns del %s" % ns
    if backend.name == "iptables":
        return [Wrap("ip6tables-restore", before(command))]
    return [Wrap("nft", before(command), when="-f")]


def test_namespace_disappears_mid_run(backend, make_world, cleanup):
    world = make_world(backend, light=True)
    scenario = scenarios.scenario("owner_rule-mangle_members")
    assert not kernel.run_module(world.ns, scenario.module, scenario.args(world, 0)).get("failed")
    holder = subprocess.Popen(["ip", "netns", "exec", world.ns, "sleep", "300"], start_new_session=True)
    cleanup.callback(lambda: (os.killpg(holder.pid, 9), holder.wait()))
    kernel.wait_for(lambda: nchelpers.run("ip", "netns", "pids", world.ns, check=False).stdout.strip() != "")
    pid = int(nchelpers.run("ip", "netns", "pids", world.ns).stdout.split()[0])
    before = kernel.snapshot_of_pid(pid)
    wrappers = WrapperDir(_disappearing_wrap(backend, world.ns))
    cleanup.callback(wrappers.remove)

    result = kernel.run_module(world.ns, scenario.module, scenario.args(world, 1), path_prefix=wrappers.path)
    tally.add("faults_tried")
    after = kernel.snapshot_of_pid(pid)
    assert not os.path.exists("/run/netns/%s" % world.ns)
    assert kernel.foreign_view(after) == kernel.foreign_view(before), kernel.diff_text(before, after)
    if result.get("failed"):
        assert after == before, kernel.diff_text(before, after)
    elif backend.name == "iptables":
        assert _owned_rules(after) == _rendered_rules(result), (sorted(_owned_rules(after)),
                                                                sorted(_rendered_rules(result)))
    # the next run cannot enter the namespace, and says so
    with pytest.raises(RuntimeError, match="Cannot open network namespace"):
        kernel.run_module(world.ns, scenario.module, scenario.args(world, 1))
    tally.add("faults_survived")


PLAYBOOK_FAULTS = ("second-family-restore-fails", "restore-killed-after-commit-v6", "kernel-drops-suppl-groups",
                   "save-fails-on-read-back", "nft-apply-fails", "nft-drops-comments")


def test_faults_through_ansible_playbook_environment_path(backend, make_world, cleanup, tmp_path):
    """The same wrappers, put first on PATH by the play's ``environment:`` keyword: get_bin_path honours it,
    the failure reaches the play with its message, the state is the previous one. Then a missing
    namespace: the next task is unreachable, naming it."""
    faults = [f for f in FAULTS if f.id in PLAYBOOK_FAULTS and backend.name in f.backends]
    hosts, worlds, befores, wrappers, keys = {}, {}, {}, {}, set()
    for fault in faults:
        world = make_world(backend, light=True)
        scenario = scenarios.scenario(fault.scenario)
        assert not kernel.run_module(world.ns, scenario.module, scenario.args(world, 0)).get("failed")
        wrap = WrapperDir(fault.wraps(Ctx(world)))
        cleanup.callback(wrap.remove)
        target = scenario.args(world, 1)
        keys.update(target)
        hosts[world.ns] = {"fault_path": str(wrap.path), "fault_params": target}
        worlds[fault.id], befores[fault.id], wrappers[fault.id] = world, kernel.snapshot(world.ns), wrap
    gone = make_world(backend, light=True)
    nchelpers.run("ip", "netns", "del", gone.ns)
    hosts[gone.ns] = {"fault_path": "/nonexistent",
                      "fault_params": scenarios.scenario("owner_rule-tunnel_guard").args(gone, 1)}
    task = {"name": "converge under a fault",
            "environment": {"PATH": "{{ fault_path }}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
            "paranoid.netconfine.owner_rule": {key: "{{ fault_params['%s'] | default(omit) }}" % key
                                               for key in sorted(keys)},
            "ignore_errors": True}
    play = nchelpers.ansible_playbook(json.dumps([{"hosts": "all", "gather_facts": False, "tasks": [task]}],
                                                 indent=1), hosts, forks=4)
    for fault in faults:
        world = worlds[fault.id]
        tally.add("faults_tried")
        res = play.task(world.ns, "converge under a fault")
        assert res.failed, (fault.id, res.result, play.output[-2000:])
        assert re.search(fault.expect, res.msg, re.S), (fault.id, res.msg)
        assert any(wrappers[fault.id].log(w.binary) for w in fault.wraps(Ctx(world))), fault.id
        after = kernel.snapshot(world.ns)
        assert after == befores[fault.id], "%s:\n%s" % (fault.id, kernel.diff_text(befores[fault.id], after))
        tally.add("faults_survived")
    tally.add("faults_tried")
    res = play.task(gone.ns, "converge under a fault")
    assert res.status == "unreachable" and gone.ns in res.msg and "does not exist" in res.msg, res
    tally.add("faults_survived")
