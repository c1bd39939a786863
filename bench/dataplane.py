"""Dataplane benchmark (issue 12): packets per second through loopback with 1,000 owner rules loaded.

Run as root from the checkout, with the pinned tools:

    .venv/bin/python bench/dataplane.py                 # 1,000 rules, 7 rounds of 2 s per variant (~1 min)
    .venv/bin/python bench/dataplane.py --rules 3000 --runs 7 --seconds 5
    .venv/bin/python bench/dataplane.py --legacy        # also iptables-legacy, where the kernel has it

Variants, each in a fresh network namespace (``ncb-<pid>-<n>``, deleted afterwards; the host's
own firewall is never touched):

    empty      no ruleset at all
    iptables   the owner_rule policy converged by the iptables backend (iptables-nft): N rules per family
    nftables   the same policy converged by the nftables backend: one verdict-map lookup
    nftables-1 the nftables backend with a policy of 1 owner rule (the cost of any rule at all)
    legacy     (--legacy) the iptables backend on iptables-legacy

The policy is N rules ``{protocol: udp, destination_port: 20000+i, uid_owner: 20000+i,
jump: ACCEPT or DROP}`` (alternating, so nft needs a verdict map, not a set), converged by
the collection's own engine and backends, exactly as the module would. The sender is a
Python loop on a connected UDP socket, run as a user that matches no rule (``nobody``),
sending to 127.0.0.1:20000 for the given time; every one of its packets walks the whole
OUTPUT path. What reached the receiving socket is counted by the kernel (``Udp:
InDatagrams`` + ``RcvbufErrors`` of the namespace's /proc/net/snmp: the receiver binds
the port and never reads, so nothing is sent back and no receiver competes for a CPU).

Each round measures every variant once, back to back, in a rotating order; the medians over
the rounds are printed, and each variant's ratio to ``empty`` is the median of its per-round
ratios (which cancels most of the drift of a shared machine). Target: nftables within 10% of empty (ratio >= 0.90).
Writes bench/results/dataplane-<time>.json. Exit status 1 if --fail-on-miss and the target
is missed, 2 on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from netconfine_bench import namespaces, udp_load  # noqa: E402

RESULTS_DIR = BENCH / "results"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
COLLECTIONS = str(ROOT / ".build" / "collections")
PORT = 20000
SENDER_USER = "nobody"
TARGET = 0.90

# Runs inside the namespace: converge the policy with one backend of the collection's engine.
_LOAD = udp_load.CONVERGE_PRELUDE + textwrap.dedent("""
    from ansible_collections.paranoid.netconfine.plugins.module_utils import engine, owner_model
    from ansible_collections.paranoid.netconfine.plugins.module_utils.iptables_backend import IptablesBackend
    from ansible_collections.paranoid.netconfine.plugins.module_utils.nft_backend import NftablesBackend

    kind = sys.argv[3]
    if kind == "nftables":
        backend = NftablesBackend(run, "nft")
    else:
        prefix = "-legacy" if kind == "legacy" else "-nft"
        backend = IptablesBackend(run, {4: ("iptables%s-save" % prefix, "iptables%s-restore" % prefix),
                                        6: ("ip6tables%s-save" % prefix, "ip6tables%s-restore" % prefix)})
    policy = owner_model.build_policy(json.loads(sys.argv[2]))
    result = engine.converge(policy, [backend], lock_timeout=60)
    print(json.dumps({"changed": result["changed"]}))
""")


def policy(rules: int) -> dict:
    return {"name": "bench-dataplane", "rules": [
        {"protocol": "udp", "destination_port": str(PORT + i), "uid_owner": str(20000 + i),
         "jump": "ACCEPT" if i % 2 == 0 else "DROP"} for i in range(rules)]}


def load(ns: str, kind: str, rules: int) -> str:
    """Converge the policy in ``ns``; return a one-line description of what the kernel holds."""
    if kind == "empty":
        return "no ruleset"
    if kind == "nftables-1":
        kind, rules = "nftables", 1
        out = namespaces.run(PYTHON, "-c", _LOAD, COLLECTIONS, json.dumps(policy(1)), kind, ns=ns)
        listed = json.loads(namespaces.run("nft", "-j", "list", "table", "inet", "netconfine", ns=ns))["nftables"]
        return "the same policy with 1 owner rule: %d nft rules" % sum(1 for r in listed if "rule" in r)
    out = namespaces.run(PYTHON, "-c", _LOAD, COLLECTIONS, json.dumps(policy(rules)), kind, ns=ns)
    if not json.loads(out)["changed"]:
        raise RuntimeError("%s: converging the policy changed nothing" % kind)
    if kind == "nftables":
        listed = json.loads(namespaces.run("nft", "-j", "list", "table", "inet", "netconfine", ns=ns))["nftables"]
        lookups = [r for r in listed if "rule" in r and any("vmap" in e for e in r["rule"]["expr"])]
        elements = sum(len(e["vmap"]["data"]["set"]) for r in lookups for e in r["rule"]["expr"] if "vmap" in e)
        count = sum(1 for r in listed if "rule" in r)
        if elements != rules:
            raise RuntimeError("nftables: expected one lookup of %d elements, found %d" % (rules, elements))
        return "%d nft rules in table inet netconfine, %d verdict map(s) of %d elements" % (
            count, len(lookups), elements)
    save = namespaces.run("iptables-legacy-save" if kind == "legacy" else "iptables-nft-save", ns=ns)
    owner = sum(1 for line in save.splitlines() if "--uid-owner" in line)
    if owner != rules:
        raise RuntimeError("%s: expected %d owner rules, found %d" % (kind, rules, owner))
    return "%d IPv4 owner rules in one chain (and as many for IPv6)" % owner


def measure(ns: str, seconds: float) -> dict:
    got = udp_load.send(ns, ns, "127.0.0.1", PORT, seconds, user=SENDER_USER)
    if got["errors"] or got["received"] < got["sent"] * 0.9:
        raise RuntimeError("packets were refused or lost (sent %(sent)d, errors %(errors)d, received %(received)d): "
                           "the sender must match no rule" % got)
    return got


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rules", type=int, default=1000, help="owner rules in the policy (default 1000)")
    parser.add_argument("--runs", type=int, default=7, help="rounds; medians over them (default 7, at least 3)")
    parser.add_argument("--seconds", type=float, default=2.0, help="sending time per measurement (default 2)")
    parser.add_argument("--legacy", action="store_true", help="also measure the iptables backend on iptables-legacy")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when nftables is below the target")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("dataplane: run as root (network namespaces, netfilter)", file=sys.stderr)
        return 2
    if args.runs < 3:
        parser.error("--runs must be at least 3 (medians)")
    variants = ["empty", "iptables", "nftables", "nftables-1"] + (["legacy"] if args.legacy else [])
    namespaces.sweep()
    sinks = []
    names = namespaces.create(len(variants))
    try:
        hosts = dict(zip(variants, names))
        loaded = {}
        for kind, ns in hosts.items():
            t0 = time.monotonic()
            loaded[kind] = load(ns, kind, args.rules)
            print("%-9s %s (converged in %.1f s)" % (kind, loaded[kind], time.monotonic() - t0), file=sys.stderr)
            sinks.append(udp_load.start_sink(ns, "127.0.0.1", PORT))
        measured = udp_load.rounds(variants, args.runs, lambda kind: measure(hosts[kind], args.seconds),
                                   lambda text: print(text, file=sys.stderr))
    finally:
        udp_load.stop_sinks(sinks)
        namespaces.delete(names)

    samples, per_cpu = measured["pps"], measured["per_cpu_second"]
    summary = udp_load.summarise(measured)
    ratios, cpu_ratios = summary["ratios"], summary["per_cpu_ratios"]
    ratio_to = udp_load.ratio_to
    print()
    print("Dataplane: UDP packets from a user matching none of %d owner rules, loopback, %d rounds of %.0f s"
          % (args.rules, args.runs, args.seconds))
    print()
    print(udp_load.table(variants, loaded, measured, summary))
    print()
    print("ratios are medians of the per-round ratios; per CPU-second counts only the time the sender ran")
    print("(its user + system time: the OUTPUT path runs in its syscalls), so other load on the machine")
    print("moves it much less than packets per wall-clock second.")
    print("nftables / iptables: %.2fx (per CPU-second %.2fx)" % (
        ratio_to(samples["nftables"], samples["iptables"]), ratio_to(per_cpu["nftables"], per_cpu["iptables"])))
    print("nftables with %d owners / with 1 owner: %.2fx (per CPU-second %.2fx): the lookup is flat in N" % (
        args.rules, ratio_to(samples["nftables"], samples["nftables-1"]),
        ratio_to(per_cpu["nftables"], per_cpu["nftables-1"])))
    # judged per CPU-second: on a shared machine packets per wall-clock second move by tens of percent
    met = cpu_ratios["nftables"] >= TARGET
    verdict = "met" if met else "MISSED"
    print("target (nftables at %d owners within 10%% of empty, per CPU-second ratio >= %.2f): %s (%.2f; "
          "packets/s ratio %.2f)" % (args.rules, TARGET, verdict, cpu_ratios["nftables"], ratios["nftables"]))
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / ("dataplane-%s.json" % time.strftime("%Y%m%d-%H%M%S"))
    path.write_text(json.dumps(dict({"rules": args.rules, "runs": args.runs, "seconds": args.seconds,
                                     "loaded": loaded, "samples": samples, "per_cpu_second": per_cpu,
                                     "target": TARGET, "met": met}, **summary), indent=1))
    print("raw results: %s" % path.relative_to(ROOT))
    return 1 if args.fail_on_miss and not met else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as exc:
        print("dataplane: %s" % exc, file=sys.stderr)
        sys.exit(2)
