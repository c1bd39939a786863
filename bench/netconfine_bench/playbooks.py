"""Playbooks and inventories for namespace hosts, and timed ansible-playbook runs.

Every play has ``gather_facts: false`` and runs through the collection's
``paranoid.netconfine.netns`` connection with the system Python and
pipelining, so the module under test, the peer and the floor's trivial task
all pay the same per-task transport cost.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from netconfine_bench.processes import Timed, timed

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"
LIBRARY = ROOT / "bench" / "library"
SYSTEM_PYTHON = "/usr/bin/python3"
_RECAP_RE = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def inventory(hosts) -> dict:
    return {"all": {
        "vars": {"ansible_connection": "paranoid.netconfine.netns",
                 "ansible_python_interpreter": SYSTEM_PYTHON,
                 "ansible_pipelining": True},
        "hosts": {h: {} for h in hosts},
    }}


def play(tasks) -> list:
    return [{"name": "bench", "hosts": "all", "gather_facts": False, "tasks": list(tasks)}]


# How the tasks get their rules: "inline" (in the play, as YAML/JSON data) or "json" (a JSON file read by
# ``lookup('file', ...) | from_json``, as a real inventory would keep 1,000 rules). Set by converge.py
# --rules-from. Ansible pays differently for the two: inline data is parsed with the play and templated
# per task; a lookup is one template call returning the parsed list.
RULES_FROM = {"mode": "inline"}
_RULES_DIR = []


def rules_value(value):
    """``value`` as the task receives it under RULES_FROM (a lookup of a JSON file written once)."""
    if RULES_FROM["mode"] == "inline":
        return value
    if not _RULES_DIR:
        _RULES_DIR.append(tempfile.TemporaryDirectory(prefix="ncb-rules-"))
    fd, path = tempfile.mkstemp(suffix=".json", dir=_RULES_DIR[0].name)
    with os.fdopen(fd, "w") as handle:
        json.dump(value, handle)
    return "{{ lookup('file', %r) | from_json }}" % path


def _with_rules(args: dict, data_key: str) -> dict:
    return dict(args, **{data_key: rules_value(args[data_key])}) if data_key in args else args


def module_task(fqcn: str, args: dict, data_key: str = "rules") -> dict:
    """One task: the module with all its rules."""
    return {"name": "module", fqcn: _with_rules(args, data_key)}


def peer_task(items: list) -> dict:
    """One ansible.builtin.iptables task looping over one argument dict per rule."""
    keys = sorted(set(k for item in items for k in item))
    return {"name": "peer",
            "ansible.builtin.iptables": dict((k, "{{ item.%s | default(omit) }}" % k) for k in keys),
            "loop": items}


def carry_task(data: dict, data_key: str = "rules") -> dict:
    """The same rules handed to a module that does nothing (bench/library/ncb_carry.py), the same way."""
    return {"name": "carry", "ncb_carry": _with_rules(data, data_key)}


def trivial_task() -> dict:
    """Ansible's cost for one task through the same connection."""
    return {"name": "trivial", "ansible.builtin.command": {"cmd": "true"}}


class Recap(dict):
    """host -> {ok, changed, unreachable, failed} from the PLAY RECAP."""

    @classmethod
    def parse(cls, output: str) -> "Recap":
        return cls((m.group(1), dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups()[1:]))))
                   for m in _RECAP_RE.finditer(output))


class PlaybookRun:
    """A playbook and inventory on disk, run (and timed) as many times as wanted."""

    def __init__(self, hosts, tasks, forks: int = 5, workdir: str | None = None):
        self.hosts = list(hosts)
        self.forks = forks
        self._dir = tempfile.TemporaryDirectory(prefix="ncb-play-", dir=workdir)
        path = Path(self._dir.name)
        # JSON is YAML: no quoting surprises, fast to write for thousands of rules.
        (path / "inventory.json").write_text(json.dumps(inventory(self.hosts)))
        (path / "playbook.json").write_text(json.dumps(play(tasks)))
        self.argv = [str(ANSIBLE_PLAYBOOK), "-i", str(path / "inventory.json"), "--forks", str(forks),
                     str(path / "playbook.json")]

    def run(self, expect_changed: bool | None = None, timeout: float = 7200, env: dict | None = None) -> Timed:
        """Run once. Fails unless every host is ok (and changed as expected)."""
        extra_env = env or {}
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_FORCE_COLOR="0", ANSIBLE_DEPRECATION_WARNINGS="0", ANSIBLE_STDOUT_CALLBACK="default",
                   ANSIBLE_LIBRARY=str(LIBRARY))
        for var in ("ANSIBLE_KEEP_REMOTE_FILES", "ANSIBLE_DEBUG", "ANSIBLE_VERBOSITY"):
            env.pop(var, None)
        env.update(extra_env)
        result: Timed = timed(self.argv, env=env, cwd=str(ROOT), timeout=timeout)
        recap = Recap.parse(result.output)
        problems = []
        if result.rc != 0:
            problems.append("rc %d" % result.rc)
        for host in self.hosts:
            stats = recap.get(host)
            if stats is None:
                problems.append("%s missing from the recap" % host)
            elif stats["failed"] or stats["unreachable"]:
                problems.append("%s failed" % host)
            elif expect_changed is not None and bool(stats["changed"]) != expect_changed:
                problems.append("%s changed=%d, expected %s" % (host, stats["changed"], expect_changed))
        if problems:
            raise RuntimeError("%s: %s\n%s" % (" ".join(self.argv), "; ".join(problems), result.output[-6000:]))
        return result

    def close(self) -> None:
        self._dir.cleanup()

    def __enter__(self) -> "PlaybookRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
