"""Profile a converge (issue 13): where do the seconds above the floor go?

    .venv/bin/python bench/profile.py                     # N=10,1000,3000, backend iptables
    .venv/bin/python bench/profile.py --sizes 1000 --top 30 --backend nftables

Two views, both on fresh namespace hosts, run as root from the checkout:

1. Ansible's own ANSIBLE_DEBUG timeline of one playbook per variant (trivial
   task, a do-nothing module carrying the N rules, the module converging from
   empty, the no-change rerun), cut into phases.
2. cProfile of the module's Python run directly inside the namespace with the
   arguments the playbook sends (converge from empty, then rerun), summed per
   stage, plus the top functions by own time at the largest N.

Times under cProfile are inflated (roughly 1.5x); compare stages, not totals.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from netconfine_bench import namespaces, playbooks, profiling  # noqa: E402
from netconfine_bench.scenarios import SCENARIOS  # noqa: E402


def _sizes(text):
    return tuple(int(x) for x in text.split(",") if x.strip())


def _table(columns, rows):
    """Markdown table: rows are (label, {column: seconds})."""
    lines = ["| phase | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    labels = []
    for _col, data in rows:
        labels += [k for k in data if k not in labels]
    for label in labels:
        cells = ["%.3f" % data[label] if label in data else "–" for _col, data in rows]
        lines.append("| %s | %s |" % (label, " | ".join(cells)))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    p.add_argument("--scenario", default="owner_rule", choices=sorted(SCENARIOS))
    p.add_argument("--sizes", type=_sizes, default=(10, 1000, 3000))
    p.add_argument("--backend", default="iptables")
    p.add_argument("--top", type=int, default=20, help="functions listed at the largest size")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("profile.py: run as root", file=sys.stderr)
        return 2
    scenario = SCENARIOS[args.scenario]
    namespaces.sweep()
    timelines, stages, top = [], [], ""
    try:
        with tempfile.TemporaryDirectory(prefix="ncb-") as workdir:
            for n in args.sizes:
                params = dict(scenario.params(n), backend=args.backend)
                carry = {scenario.data_key: params[scenario.data_key]}
                with namespaces.hosts(1) as hosts:
                    timelines.append(("trivial N=%d" % n, profiling.timeline(hosts, [playbooks.trivial_task()],
                                                                             workdir)))
                    timelines.append(("carry N=%d" % n, profiling.timeline(hosts, [playbooks.carry_task(carry)],
                                                                           workdir)))
                    task = [playbooks.module_task(scenario.module, params)]
                    timelines.append(("converge N=%d" % n, profiling.timeline(hosts, task, workdir, True)))
                    timelines.append(("rerun N=%d" % n, profiling.timeline(hosts, task, workdir, False)))
                    print("timeline N=%d done" % n, file=sys.stderr)
                with namespaces.hosts(1) as hosts:
                    for phase in ("converge", "rerun"):
                        found, stats, result = profiling.profile_module(hosts[0], scenario.module, params, workdir)
                        if result.get("changed") != (phase == "converge"):
                            raise RuntimeError("%s N=%d: changed=%s" % (phase, n, result.get("changed")))
                        stages.append(("%s N=%d" % (phase, n), found))
                        if n == max(args.sizes) and phase == "converge":
                            out = io.StringIO()
                            stats.stream = out
                            stats.sort_stats("tottime").print_stats(args.top)
                            top = out.getvalue()
                    print("cProfile N=%d done" % n, file=sys.stderr)
    finally:
        namespaces.sweep(own=True)
    print("## Profile: %s, backend %s\n" % (scenario.module, args.backend))
    print("### ANSIBLE_DEBUG timeline, seconds (one run each)\n")
    print(_table([c for c, _d in timelines], timelines))
    print("\n### Module under cProfile, cumulative seconds per stage\n")
    print(_table([c for c, _d in stages], stages))
    print("\n### Top functions by own time, converge at N=%d\n\n```\n%s```" % (max(args.sizes), top.strip("\n") + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
