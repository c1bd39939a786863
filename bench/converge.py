"""Converge benchmark (issue 13, part 1): a module vs the floor vs ansible.builtin.iptables.

Run as root from the checkout, with the pinned tools:

    .venv/bin/python bench/converge.py            # default: N=10,100,1000,3000, 3 runs, fleet 50x200 (~15 min)
    .venv/bin/python bench/converge.py --quick    # N=10,100,1000, small fleet (~4 min)
    .venv/bin/python bench/converge.py --smoke    # N=10,100, 1 run, tiny fleet (~1-2 min); also bench/smoke
    .venv/bin/python bench/converge.py --full     # 5 runs, the peer measured up to N=1000 (~1 hour)
    .venv/bin/python bench/converge.py --share    # N=1000 only, 25 rounds, no fleet: the module's own
                                                  # share with a 90 % interval (~5 min; add --rules-from json)
    .venv/bin/python bench/converge.py --report bench/results/converge-....json   # re-print a saved run

Every host is a fresh network namespace (``ncb-<pid>-<n>``), deleted afterwards;
the host's own firewall is never touched. Prints Markdown tables to stdout,
progress to stderr, and writes bench/results/converge-<time>.{json,md}.
Exit status: 0, 1 if a target was missed and --fail-on-miss was given, 2 on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from netconfine_bench import namespaces, playbooks, report, suite  # noqa: E402
from netconfine_bench.scenarios import SCENARIOS  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"

MODES = {
    "default": dict(sizes=(10, 100, 1000, 3000), runs=3, peer_sizes=(10, 100), peer_runs=3,
                    fleet_hosts=50, fleet_rules=200, fleet_forks=10, fleet_runs=3),
    "quick": dict(sizes=(10, 100, 1000), runs=3, peer_sizes=(10,), peer_runs=3,
                  fleet_hosts=10, fleet_rules=200, fleet_forks=10, fleet_runs=1),
    "smoke": dict(sizes=(10, 100), runs=1, peer_sizes=(10,), peer_runs=1,
                  fleet_hosts=4, fleet_rules=20, fleet_forks=2, fleet_runs=1),
    "full": dict(sizes=(10, 100, 1000, 3000), runs=5, peer_sizes=(10, 100, 1000), peer_runs=3,
                 fleet_hosts=50, fleet_rules=200, fleet_forks=10, fleet_runs=5),
    # the module's own share at N=1000 (issue 22): enough rounds that the interval of the rounds' median
    # is about +-0.03-0.07 on this 2-core machine (+-0.1-0.2 with 9); the peer is not what it is for
    "share": dict(sizes=(1000,), runs=25, peer_sizes=(10,), peer_runs=1,
                  fleet_hosts=0, fleet_rules=200, fleet_forks=10, fleet_runs=1),
}


def _sizes(text):
    return tuple(int(x) for x in text.split(",") if x.strip())


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    for name in ("quick", "smoke", "full", "share"):
        mode.add_argument("--" + name, dest="mode", action="store_const", const=name,
                          help="preset: %s" % MODES[name])
    p.set_defaults(mode="default")
    p.add_argument("--scenario", default="owner_rule", choices=sorted(SCENARIOS))
    p.add_argument("--sizes", type=_sizes, help="rule counts N, comma-separated")
    p.add_argument("--runs", type=int, help="runs per size (median, min-max)")
    p.add_argument("--peer-sizes", type=_sizes, help="sizes at which the peer is measured (others: estimated)")
    p.add_argument("--peer-runs", type=int)
    p.add_argument("--backends", help="comma-separated; default: iptables, plus nftables when the module accepts it")
    p.add_argument("--fleet-hosts", type=int, help="0 skips the fleet")
    p.add_argument("--fleet-rules", type=int)
    p.add_argument("--fleet-forks", type=int)
    p.add_argument("--fleet-runs", type=int)
    p.add_argument("--rules-from", choices=("inline", "json"), default="inline",
                   help="the rules inline in the play (default) or from a JSON file lookup")
    p.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--report", metavar="JSON", help="print the tables of a saved run and exit")
    return p.parse_args(argv)


def _terminate(signum, _frame):
    raise SystemExit(128 + signum)  # unwinds through the context managers that delete the namespaces


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.report:
        print(report.render(json.loads(Path(args.report).read_text())), end="")
        return 0
    if os.geteuid() != 0:
        print("converge.py: run as root (network namespaces, netfilter inside them)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    preset = dict(MODES[args.mode])
    for key in preset:
        value = getattr(args, key, None)
        if value is not None:
            preset[key] = value
    scenario = SCENARIOS[args.scenario]
    playbooks.RULES_FROM["mode"] = args.rules_from
    for name in namespaces.sweep():
        print("removed leftover namespace %s" % name, file=sys.stderr)
    notes = []
    try:
        if args.backends:
            backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
        else:
            backends = []
            for backend in scenario.backends:
                usable, why = suite.backend_available(scenario, backend)
                if usable:
                    backends.append(backend)
                else:
                    notes.append("backend %s not measured: %s" % (backend, why))
                    print("backend %s not measured: %s" % (backend, why), file=sys.stderr)
            backends = tuple(backends)
        config = suite.Config(scenario=scenario, backends=backends, **preset)
        started = time.monotonic()
        results = suite.run_suite(config).as_dict()
        notes.append("wall time of the whole benchmark: %.0f s" % (time.monotonic() - started))
        results["notes"] = notes
    finally:
        namespaces.sweep(own=True)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = report.render(results)
    (RESULTS_DIR / ("converge-%s.json" % stamp)).write_text(json.dumps(results, indent=1))
    (RESULTS_DIR / ("converge-%s.md" % stamp)).write_text(text)
    print(text, end="")
    print("saved bench/results/converge-%s.{json,md}" % stamp, file=sys.stderr)
    missed = [t for t in report.targets(results) if t[3] is False]
    return 1 if missed and args.fail_on_miss else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, OSError) as exc:
        print("converge.py: %s" % exc, file=sys.stderr)
        sys.exit(2)
