"""A tool that keeps re-syncing its own rule at the top of a chain we hook must never fail a good run (issue 23).

kube-proxy, Docker and fail2ban re-insert their jump first in OUTPUT at any moment. A loop in the
namespace does that the whole time while one task is converged 50 times, its comment alternating so
that every run commits a change: every run must succeed (a failure would be "did not converge" and a
rollback of a correct change). Three loops, each against both backends:

* ``kube-jump``: the issue's loop (a chain created, hooked first in OUTPUT, unhooked, deleted), one per family;
* ``same-rule``: a rule that was in OUTPUT before the run, deleted and re-inserted first with the same text,
  so that the pre-apply read and the read-back hold the very same foreign rules;
* ``nft-base-chain``: another tool's nftables base chain at our hook, created, hooked, flushed, deleted.

OUTPUT also holds the jumps of three other netconfine tasks (the issue saw failures more often then).
Afterwards the task converges again (reporting and repairing what the loop moved), a second run has
nothing to do, and a user is still refused while root connects.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

import nchelpers
from reliability import kernel, scenarios, tally

RUNS = 50
NEIGHBOURS = 3

# Each loop prints "ready", then counts its iterations into the file named by $1.
LOOPS = {
    "kube-jump": r"""
        kube() {  # the issue's loop, for one family ($1: iptables or ip6tables, $2: address prefix)
          while true; do
            $1 -N KUBE-X 2>/dev/null; $1 -A KUBE-X -d $2$((RANDOM%200)) -j RETURN
            $1 -I OUTPUT 1 -j KUBE-X; $1 -D OUTPUT -j KUBE-X; $1 -F KUBE-X; $1 -X KUBE-X
            [ "$1" = iptables ] && i=$((i+1)) && echo $i > "$3"
          done
        }
        echo ready; i=0
        kube iptables 192.0.2. "$1" & kube ip6tables fd00:: /dev/null & wait""",
    "same-rule": r"""
        echo ready; i=0
        while true; do
          for f in iptables ip6tables; do
            $f -D OUTPUT -p tcp -m tcp --dport 7 -j ACCEPT; $f -I OUTPUT 1 -p tcp -m tcp --dport 7 -j ACCEPT
          done
          i=$((i+1)); echo $i > "$1"
        done""",
    "nft-base-chain": r"""
        nft add table inet nct_kx
        echo ready; i=0
        while true; do
          nft add chain inet nct_kx out '{ type filter hook output priority -1; policy accept; }'
          nft add chain inet nct_kx KUBE-X
          nft add rule inet nct_kx KUBE-X ip daddr 192.0.2.$((RANDOM%200)) return
          nft insert rule inet nct_kx out jump KUBE-X
          nft flush chain inet nct_kx out; nft delete chain inet nct_kx out
          nft flush chain inet nct_kx KUBE-X; nft delete chain inet nct_kx KUBE-X
          i=$((i+1)); echo $i > "$1"
        done""",
}


def _task(world, variant):
    return {"name": "churn", "backend": world.backend.name, "rules": [
        {"protocol": "tcp", "destination": ["localhost"], "destination_port": str(world.port),
         "uid_owner": world.user, "jump": "REJECT", "reject_with": "tcp-reset", "comment": "c%d" % (variant % 2)}]}


def _neighbour(world, n):
    return {"name": "neighbour-%d" % n, "backend": world.backend.name,
            "rules": [{"protocol": "udp", "destination_port": str(5400 + n), "jump": "DROP"}]}


def _calls(tasks):
    return [{"module": "owner_rule", "args": args} for args in tasks]


# which loops each backend meets: iptables the two, nftables another tool's base chain at its hook
LOOPS_OF = {"iptables": ("kube-jump", "same-rule"), "nftables": ("nft-base-chain",)}


CASES = [(b, loop) for b in scenarios.backends() for loop in LOOPS_OF[b.name]]


@pytest.mark.parametrize("resync_backend,loop", CASES, ids=["%s-%s" % c for c in CASES])
def test_fifty_runs_beside_a_tool_that_resyncs_its_rule_first(make_world, resync_backend, loop):
    world = make_world(resync_backend)
    setup = kernel.run_modules(world.ns, _calls([_neighbour(world, n) for n in range(NEIGHBOURS)]))
    assert not any(r.get("failed") for r in setup), setup

    with tempfile.TemporaryDirectory(prefix="nct-resync-") as tmp:
        steps = Path(tmp) / "steps"
        with nchelpers.daemon(world.ns, "bash", "-c", LOOPS[loop], "resync", str(steps), ready="ready"):
            # the runs start only once the loop is really churning (its first iteration is done)
            deadline = time.monotonic() + 60
            while not (steps.exists() and steps.read_text().strip()) and time.monotonic() < deadline:
                time.sleep(0.05)
            started = int(steps.read_text() or 0) if steps.exists() else 0
            assert started >= 1, "the loop did not complete one iteration in 60 s"
            results = kernel.run_modules(world.ns, _calls([_task(world, i) for i in range(RUNS)]))
            looped = int(steps.read_text() or 0) if steps.exists() else 0
    tally.add("resync_runs", len(results))
    tally.add("resync_converged", sum(1 for r in results if not r.get("failed")))
    failed = ["run %d: %s" % (i, r.get("msg")) for i, r in enumerate(results) if r.get("failed")]
    assert not failed, "\n".join(failed)
    assert all(r.get("changed") for r in results), [r.get("changed") for r in results]
    assert looped >= 20, "the loop ran only %d iterations during the runs" % looped

    # with the loop gone: the next run repairs what the loop moved, the one after has nothing to do
    again = kernel.run_modules(world.ns, _calls([_task(world, 0)] * 2))
    assert not any(r.get("failed") for r in again), again
    assert not again[1]["changed"], again[1]
    assert world.outcome(world.user, "127.0.0.1") == "refused"
    assert world.outcome(world.user, "::1") == "refused"
    assert world.outcome("root", "127.0.0.1") == "connected"
