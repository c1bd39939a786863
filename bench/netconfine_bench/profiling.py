"""Where a converge spends its time: an ANSIBLE_DEBUG timeline and a cProfile of the module.

* :func:`timeline` runs one single-task playbook with ``ANSIBLE_DEBUG=1`` and
  cuts Ansible's own debug log into phases (parse the play, template the
  arguments, build AnsiballZ, run the module on the host, hand the task back).
* :func:`profile_module` runs the module's Python inside a namespace host under
  cProfile, with exactly the arguments the playbook would send, and sums the
  time of its stages (imports, AnsibleModule argument validation, model,
  engine, exit_json).
"""

from __future__ import annotations

import json
import os
import pstats
import re
import subprocess
import tempfile
from pathlib import Path

from netconfine_bench import playbooks

# (phase, debug line that starts it, debug line that ends it; None: the next line)
PHASES = (
    ("parse the play", "Loading data from %(playbook)s", None),
    ("template the task arguments", "calling self._execute()", "Set connection var"),
    ("build AnsiballZ", "ANSIBALLZ: Creating module", "ANSIBALLZ: Done creating module"),
    ("run the module on the host", "opening command with Popen()", "done communicating"),
    ("read the module's result", "done communicating", "_execute() done"),
    ("hand the task back to the controller", "_execute() done", "no more pending results"),
)
_DEBUG_LINE = re.compile(r"^\s*\d+ (\d+\.\d+): (.*)$")


def timeline(hosts, tasks, workdir: str, expect_changed: bool | None = None) -> dict:
    """{phase: seconds} (and 'whole run') for one playbook with one task on one host."""
    with playbooks.PlaybookRun(hosts, tasks, workdir=workdir) as pb:
        timed = pb.run(expect_changed=expect_changed, env={"ANSIBLE_DEBUG": "1"})
        playbook = pb.argv[-1]
    events = [(float(m.group(1)), m.group(2)) for m in map(_DEBUG_LINE.match, timed.output.splitlines()) if m]
    out = {}
    for phase, start, end in PHASES:
        start = start % {"playbook": playbook}
        i = next((k for k, (_t, text) in enumerate(events) if start in text), None)
        if i is None:
            continue
        j = i + 1 if end is None else next((k for k in range(i, len(events)) if end in events[k][1]), None)
        if j is not None and j < len(events):
            out[phase] = events[j][0] - events[i][0]
    out["whole run (debug on)"] = timed.seconds
    return out


_DRIVER = r"""
import cProfile, runpy, sys
module, args, stats = sys.argv[1:4]
sys.argv = [module, args]
profile = cProfile.Profile()
profile.enable()
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    profile.disable()
    profile.dump_stats(stats)
"""

# (stage, file name ending, function name): cumulative time of that function
STAGES = (
    ("AnsibleModule() incl. argument spec validation", "module_utils/basic.py", "__init__"),
    ("  of which: argument spec validation", "common/arg_spec.py", "validate"),
    ("model: build_policy", "module_utils/owner_model.py", "build_policy"),
    ("engine: converge (read, compare, apply, read back)", "module_utils/engine.py", "converge"),
    ("  of which: external commands (run_command)", "module_utils/basic.py", "run_command"),
    ("exit_json (no_log scrub, JSON encode)", "module_utils/basic.py", "exit_json"),
)


def module_name(fqcn: str) -> str:
    namespace, collection, name = fqcn.split(".")
    return "ansible_collections.%s.%s.plugins.modules.%s" % (namespace, collection, name)


def profile_module(ns: str, fqcn: str, args: dict, workdir: str) -> tuple:
    """Run the module once in ``ns`` under cProfile; (stages {name: seconds}, pstats.Stats, result dict)."""
    work = Path(tempfile.mkdtemp(prefix="profile-", dir=workdir))
    (work / "args.json").write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    (work / "driver.py").write_text(_DRIVER)
    env = dict(os.environ, PYTHONPATH=str(playbooks.ROOT / ".build" / "collections"))
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, str(playbooks.ROOT / ".venv" / "bin" / "python"), str(work / "driver.py"),
         module_name(fqcn), str(work / "args.json"), str(work / "stats")],
        capture_output=True, text=True, env=env, timeout=3600, check=False)
    result = {}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            result = json.loads(line)
            break
    if proc.returncode != 0 or result.get("failed"):
        raise RuntimeError("profiling %s failed: rc %d\n%s%s"
                           % (fqcn, proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:]))
    stats = pstats.Stats(str(work / "stats"))
    stages = {"whole module (under cProfile)": max(v[3] for v in stats.stats.values())}
    for stage, filename, function in STAGES:
        # the outermost of same-named functions (a subclass's validate() calls its base's)
        stages[stage] = max((v[3] for (f, _line, fn), v in stats.stats.items()
                             if f.endswith(filename) and fn == function), default=0.0)
    return stages, stats, result
