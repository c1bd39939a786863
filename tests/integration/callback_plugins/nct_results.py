# Test-only callback: one JSON line per task result (and a final stats line) appended to $NCT_RESULTS_FILE,
# read back by tests/integration/nchelpers.py. Enabled with ANSIBLE_CALLBACKS_ENABLED=nct_results.
from __future__ import annotations

DOCUMENTATION = r"""
name: nct_results
type: aggregate
short_description: Write task results as JSON lines for the integration tests
description:
  - Appends one JSON object per task result (host, task, action, status, result) to the file named
    by the E(NCT_RESULTS_FILE) environment variable, and one with the play stats at the end.
requirements:
  - E(NCT_RESULTS_FILE) set to a writable path
"""

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "nct_results"
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, record):
        with open(os.environ["NCT_RESULTS_FILE"], "a", encoding="utf-8") as out:
            out.write(json.dumps(record, default=repr, sort_keys=True) + "\n")

    def _record(self, result, status):
        res = dict(result.result)  # ansible-core >= 2.19: native types, internal keys stripped
        if status == "ok" and res.get("changed"):
            status = "changed"
        self._write({"host": result.host.get_name(), "task": result.task.get_name(),
                     "action": result.task.action, "status": status, "result": res})

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        self._write({"stats": {host: stats.summarize(host) for host in sorted(stats.processed)}})
