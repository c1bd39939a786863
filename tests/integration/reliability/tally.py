"""Counts the reliability suite reports at the end of the run (see conftest.pytest_terminal_summary)."""

from __future__ import annotations

import collections

COUNTS: collections.Counter = collections.Counter()
BACKENDS_COVERED: set[str] = set()

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
    ("replacements under flood", "replacements", None),
    ("packets leaked", "packets_leaked", None),
    ("idempotence matrices passed", "matrices_tried", "matrices_passed"),
)


def add(key: str, n: int = 1) -> None:
    COUNTS[key] += n


def summary() -> str:
    parts = []
    for label, tried, passed in LABELS:
        if passed is None:
            parts.append("%s %d" % (label, COUNTS[tried]))
        else:
            parts.append("%s %d/%d" % (label, COUNTS[passed], COUNTS[tried]))
    return "reliability: %s; backends: %s" % (", ".join(parts), ", ".join(sorted(BACKENDS_COVERED)) or "none")
