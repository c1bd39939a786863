"""Counts the reliability suite reports at the end of the run (see conftest.pytest_terminal_summary)."""

from __future__ import annotations

import collections

COUNTS: collections.Counter = collections.Counter()       # what tests in this process counted
BACKENDS_COVERED: set[str] = set()
REPORTED: collections.Counter = collections.Counter()     # summed from test reports (all workers)
REPORTED_BACKENDS: set[str] = set()

LABELS = (
    # (line label, tried key, passed key or None)
    ("cases tried", "cases_tried", None),
    ("rejected", "cases_rejected", None),
    ("accepted and rendered safely", "cases_accepted_safe", None),
    ("through ansible-playbook", "cases_playbook", None),
    ("faults survived", "faults_tried", "faults_survived"),
    ("foreign chains intact", "foreign_checked", "foreign_intact"),
    ("flushes repaired", "flushes_tried", "flushes_repaired"),
    ("concurrency trials passed", "concurrency_trials", "concurrency_passed"),
    ("runs beside a re-syncing tool converged", "resync_runs", "resync_converged"),
    ("replacements under flood", "replacements", None),
    ("packets leaked", "packets_leaked", None),
    ("idempotence matrices passed", "matrices_tried", "matrices_passed"),
)


def add(key: str, n: int = 1) -> None:
    COUNTS[key] += n


def snapshot() -> tuple[collections.Counter, set[str]]:
    return collections.Counter(COUNTS), set(BACKENDS_COVERED)


def since(before: tuple[collections.Counter, set[str]]) -> dict:
    """What was counted since ``before`` (a ``snapshot()``), as a test report's user property."""
    counts = {key: COUNTS[key] - before[0][key] for key in COUNTS if COUNTS[key] != before[0][key]}
    return {"counts": counts, "backends": sorted(BACKENDS_COVERED - before[1])}


def merge_reported(value: dict) -> None:
    REPORTED.update(value.get("counts", {}))
    REPORTED_BACKENDS.update(value.get("backends", ()))


def summary(counts=None, backends=None) -> str:
    counts = COUNTS if counts is None else counts
    backends = BACKENDS_COVERED if backends is None else backends
    parts = []
    for label, tried, passed in LABELS:
        if passed is None:
            parts.append("%s %d" % (label, counts[tried]))
        else:
            parts.append("%s %d/%d" % (label, counts[passed], counts[tried]))
    return "reliability: %s; backends: %s" % (", ".join(parts), ", ".join(sorted(backends)) or "none")
