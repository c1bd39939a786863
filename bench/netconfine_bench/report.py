"""Medians, ranges, ratios and targets, printed as Markdown tables.

Ratios are between medians of the same run. Where the peer
(``ansible.builtin.iptables``) was not run at a size, its time is a linear
least-squares fit over the sizes it was run at, marked ``~`` and "(est.)".
"""

from __future__ import annotations

import math
import statistics

from netconfine_bench.suite import FLOOR, FLOOR_DATA, PEER, variant_name

# Issue 13 targets.
FLOOR_RATIO_MAX = 1.3       # module / floor at the reference size, converge and rerun
SHARE_MAX = 0.3             # (module - floor+data) / floor at the reference size: the module's own work (issue 22)
FLOOR_RATIO_AT = 1000
LINEAR_MAX = 3.5            # t(3000) / t(1000)
FLEET_RATIO_MAX = 6.0       # fleet wall / one host


class Stat:
    def __init__(self, samples, estimated=False, metric="s"):
        self.seconds = [s.get(metric, 0.0) for s in samples]
        self.rss = max((s["rss"] for s in samples), default=0)
        self.estimated = estimated

    @classmethod
    def estimate(cls, seconds):
        stat = cls([], estimated=True)
        stat.seconds = [seconds]
        return stat

    @property
    def median(self):
        return statistics.median(self.seconds)

    def cell(self):
        if self.estimated:
            return "~%s (est.)" % _s(self.median)
        if len(self.seconds) == 1:
            return "%s (1 run)" % _s(self.median)
        return "%s (%s–%s)" % (_s(self.median), _s(min(self.seconds)), _s(max(self.seconds)))


def _s(seconds):
    return "%.2f" % seconds if seconds < 100 else "%.0f" % seconds


def _stat(results, section, key, phase, metric="s"):
    """Stat of wall seconds (metric "s") or CPU seconds ("cpu"), or None if not measured."""
    samples = results["samples"].get(section, {}).get(key, {}).get(phase)
    return Stat(samples, metric=metric) if samples else None


def _fit(points):
    """Least-squares line through (n, seconds); (intercept, slope)."""
    if len(points) < 2:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def peer_stats(results, phase, metric="s"):
    """{N: Stat} for the peer at every size, measured or estimated."""
    sizes = results["config"]["sizes"]
    measured = dict((n, _stat(results, str(n), PEER, phase, metric)) for n in sizes)
    measured = dict((n, s) for n, s in measured.items() if s)
    fit = _fit([(n, s.median) for n, s in measured.items()])
    out = dict(measured)
    for n in sizes:
        if n not in out and fit:
            out[n] = Stat.estimate(fit[0] + fit[1] * n)
    return out


def _ratio(a, b):
    if a is None or b is None or not b.median:
        return None
    return a.median / b.median


def _r(value):
    return "–" if value is None else "%.2f" % value


def size_table(results, metric="s"):
    """Per N and variant: converge and rerun (wall or CPU seconds), peak RSS, ratios to the floor."""
    cfg = results["config"]
    backends = cfg["backends"]
    peers = {phase: peer_stats(results, phase, metric) for phase in ("converge", "rerun")}
    unit = "s" if metric == "s" else "CPU s"
    lines = [
        "| N | variant | converge %s, median (min–max) | rerun %s, median (min–max) | peak RSS MB | "
        "÷ floor converge | ÷ floor rerun |" % (unit, unit),
        "|---:|---|---|---|---:|---:|---:|",
    ]
    for n in cfg["sizes"]:
        sec = str(n)
        rows = []
        for backend in backends:
            floor = {p: _stat(results, sec, variant_name(FLOOR, backend), p, metric) for p in ("converge", "rerun")}
            rows.append(("floor %s" % backend, floor, floor))
            data = {p: _stat(results, sec, variant_name(FLOOR_DATA, backend), p, metric)
                    for p in ("converge", "rerun")}
            rows.append(("floor+data %s" % backend, data, floor))
            module = {p: _stat(results, sec, variant_name("module", backend), p, metric)
                      for p in ("converge", "rerun")}
            rows.append(("%s %s" % (cfg["scenario"], backend), module, floor))
        if "iptables" in backends and n in peers["converge"]:
            floor = {p: _stat(results, sec, variant_name(FLOOR, "iptables"), p, metric)
                     for p in ("converge", "rerun")}
            rows.append(("peer ansible.builtin.iptables", {p: peers[p].get(n) for p in peers}, floor))
        for label, stat, floor in rows:
            if not stat["converge"]:
                continue
            rss = max(s.rss for s in stat.values() if s)
            lines.append("| %d | %s | %s | %s | %s | %s | %s |" % (
                n, label, stat["converge"].cell(), stat["rerun"].cell() if stat["rerun"] else "–",
                "%d" % (rss // 1024) if rss else "–",
                _r(_ratio(stat["converge"], floor["converge"])), _r(_ratio(stat["rerun"], floor["rerun"]))))
    return "\n".join(lines)


def cost_split(results):
    """Per N and backend: floor, what Ansible adds to carry the rules, what the module adds on top."""
    cfg = results["config"]
    lines = ["| N | backend | phase | floor s | + Ansible carrying the N rules s | + module's own work s | "
             "= %s s | ÷ floor | ÷ floor+data |" % cfg["scenario"],
             "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for n in cfg["sizes"]:
        for backend in cfg["backends"]:
            for phase in ("converge", "rerun"):
                floor = _stat(results, str(n), variant_name(FLOOR, backend), phase)
                data = _stat(results, str(n), variant_name(FLOOR_DATA, backend), phase)
                module = _stat(results, str(n), variant_name("module", backend), phase)
                if not (floor and data and module):
                    continue
                lines.append("| %d | %s | %s | %.2f | %+.2f | %+.2f | %.2f | %s | %s |" % (
                    n, backend, phase, floor.median, data.median - floor.median, module.median - data.median,
                    module.median, _r(_ratio(module, floor)), _r(_ratio(module, data))))
    return "\n".join(lines)


def floor_breakdown(results):
    cfg = results["config"]
    lines = ["| N | floor | trivial task s | task carrying the rules s | read (empty) s | apply s | read (loaded) s |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for n in cfg["sizes"]:
        for backend in cfg["backends"]:
            key = variant_name(FLOOR, backend)
            parts = [_stat(results, str(n), key, "ansible"),
                     _stat(results, str(n), variant_name(FLOOR_DATA, backend), "ansible")]
            parts += [_stat(results, str(n), key, p) for p in ("read", "apply", "read_full")]
            if all(parts):
                lines.append("| %d | %s | %s |" % (n, backend, " | ".join("%.3f" % p.median for p in parts)))
    return "\n".join(lines)


def fleet_table(results):
    cfg = results["config"]
    if "fleet" not in results["samples"]:
        return ""
    hosts = cfg["fleet_hosts"]
    lines = ["| %d hosts × %d rules, forks %d | converge s, median (min–max) | rerun s, median (min–max) | "
             "converge CPU s | peak RSS MB |" % (hosts, cfg["fleet_rules"], cfg["fleet_forks"]),
             "|---|---|---|---:|---:|"]
    for key in ("floor one host", "module one host", "floor fleet", "module fleet"):
        conv, rerun = _stat(results, "fleet", key, "converge"), _stat(results, "fleet", key, "rerun")
        cpu = _stat(results, "fleet", key, "converge", "cpu")
        if conv:
            label = key.replace("module", cfg["scenario"]).replace("floor", "trivial task")
            lines.append("| %s | %s | %s | %.2f | %d |" % (
                label, conv.cell(), rerun.cell() if key.startswith("module") else "–", cpu.median,
                max(conv.rss, rerun.rss) // 1024))
    for kind, label in (("floor", "trivial task"), ("module", cfg["scenario"])):
        one = _stat(results, "fleet", "%s one host" % kind, "converge", "cpu")
        fleet = _stat(results, "fleet", "%s fleet" % kind, "converge", "cpu")
        wall = _ratio(_stat(results, "fleet", "%s fleet" % kind, "converge"),
                      _stat(results, "fleet", "%s one host" % kind, "converge"))
        if one and fleet and hosts > 1:
            lines.append("")
            per_host = (fleet.median - one.median) / (hosts - 1)
            lines.append("%s: fleet ÷ one host %s (wall); each further host costs %.2f CPU s "
                         "(one host alone: %.2f CPU s)" % (label, _r(wall), per_host, one.median))
    return "\n".join(lines)


def _share(results, section, backend, phase, metric):
    """The module's own share at one size: (median of the rounds' shares, share of the variants' medians).

    Each round runs every variant once, back to back, so a round's (module − floor+data) ÷ floor is
    measured under one machine state: on a shared machine whose speed drifts by tens of percent
    between rounds, the median of those is the steadier figure.
    """
    samples = results["samples"].get(section, {})
    runs = [samples.get(variant_name(kind, backend), {}).get(phase) for kind in ("module", FLOOR_DATA, FLOOR)]
    if not all(runs):
        return None, None
    rounds = [(m.get(metric, 0.0) - d.get(metric, 0.0)) / f[metric] for m, d, f in zip(*runs) if f.get(metric)]
    module, data, floor = (Stat(r, metric=metric) for r in runs)
    if not rounds or not floor.median:
        return None, None, None
    return statistics.median(rounds), (module.median - data.median) / floor.median, median_interval(rounds)


def median_interval(values, confidence=0.90):
    """(low, high): an interval that holds the median of what the rounds sample with at least ``confidence``,
    or None for fewer than 5 values (4 cannot reach 90 %).

    Distribution-free (no assumption on the shape of the noise): the order statistics x(k) and
    x(n + 1 - k) of the n sorted values, k the largest with 1 - 2 P(Binomial(n, 1/2) <= k - 1) >=
    ``confidence`` (the sign-test interval, Conover, *Practical Nonparametric Statistics*, 3rd ed.,
    section 3.2). With 9 rounds that is the 2nd and 8th value (96 %), with 25 the 8th and 18th (95.7 %).
    """
    xs, n = sorted(values), len(values)
    best, tail = None, 0.0
    for k in range(1, n // 2 + 1):
        tail += math.comb(n, k - 1) / 2.0 ** n  # P(B <= k - 1)
        if 1 - 2 * tail < confidence:
            break
        best = k
    return None if best is None else (xs[best - 1], xs[n - best])


def targets(results):
    """[(description, measured, limit, met or None)]."""
    cfg = results["config"]
    out = []
    ref = FLOOR_RATIO_AT if FLOOR_RATIO_AT in cfg["sizes"] else max(cfg["sizes"], default=0)
    for backend in cfg["backends"]:
        for phase in ("converge", "rerun"):
            module = _stat(results, str(ref), variant_name("module", backend), phase)
            floor = _stat(results, str(ref), variant_name(FLOOR, backend), phase)
            ratio = _ratio(module, floor)
            out.append(("%s %s %s ÷ floor at N=%d" % (cfg["scenario"], backend, phase, ref), ratio,
                        FLOOR_RATIO_MAX, None if ratio is None else ratio <= FLOOR_RATIO_MAX))
    for backend in cfg["backends"]:
        for phase in ("converge", "rerun"):
            ratio = _ratio(_stat(results, str(ref), variant_name("module", backend), phase, "cpu"),
                           _stat(results, str(ref), variant_name(FLOOR, backend), phase, "cpu"))
            if ratio is not None:
                out.append(("(info) %s %s %s ÷ floor at N=%d, CPU time" % (cfg["scenario"], backend, phase, ref),
                            ratio, FLOOR_RATIO_MAX, None))
    for backend in cfg["backends"]:
        for phase in ("converge", "rerun"):
            for measure, label in (("s", ""), ("cpu", ", CPU time")):
                share, medians, interval = _share(results, str(ref), backend, phase, measure)
                if share is None:
                    continue
                out.append(("%s%s %s %s: its own share, (module − floor+data) ÷ floor at N=%d%s"
                            % ("(info) " if label else "", cfg["scenario"], backend, phase, ref, label), share,
                            SHARE_MAX, None if label else share <= SHARE_MAX))
                if interval:
                    out.append(("(info) 90 %% interval of that median over the rounds: %.2f–%.2f%s"
                                % (interval[0], interval[1], label), interval[1], SHARE_MAX, None))
                out.append(("(info) the same from the medians of each variant%s" % label, medians, SHARE_MAX, None))
    for backend in cfg["backends"]:
        for phase in ("converge", "rerun"):
            module = _stat(results, str(ref), variant_name("module", backend), phase)
            data = _stat(results, str(ref), variant_name(FLOOR_DATA, backend), phase)
            ratio = _ratio(module, data)
            if ratio is not None:
                out.append(("(info) %s %s %s ÷ floor+data at N=%d" % (cfg["scenario"], backend, phase, ref), ratio,
                            FLOOR_RATIO_MAX, None))
    if 1000 in cfg["sizes"] and 3000 in cfg["sizes"]:
        for backend in cfg["backends"]:
            for phase in ("converge", "rerun"):
                key = variant_name("module", backend)
                t1, t3 = _stat(results, "1000", key, phase), _stat(results, "3000", key, phase)
                ratio = _ratio(t3, t1)
                out.append(("%s %s %s t(3000) ÷ t(1000)" % (cfg["scenario"], backend, phase), ratio, LINEAR_MAX,
                            None if ratio is None else ratio <= LINEAR_MAX))
    for phase in ("converge", "rerun"):
        fleet, one = _stat(results, "fleet", "module fleet", phase), _stat(results, "fleet", "module one host", phase)
        ratio = _ratio(fleet, one)
        if ratio is not None:
            what = "fleet %d×%d forks %d %s ÷ one host" % (
                cfg["fleet_hosts"], cfg["fleet_rules"], cfg["fleet_forks"], phase)
            out.append((what, ratio, FLEET_RATIO_MAX, ratio <= FLEET_RATIO_MAX))
    return out


def targets_table(results):
    lines = ["| target | measured | limit | met |", "|---|---:|---:|---|"]
    for what, value, limit, met in targets(results):
        verdict = "n/a" if met is None else ("yes" if met else "**NO**")
        lines.append("| %s | %s | ≤ %.1f | %s |" % (what, _r(value), limit, verdict))
    return "\n".join(lines)


def marginal_table(results):
    """Cost per added rule between consecutive sizes: linear means flat."""
    cfg = results["config"]
    sizes = cfg["sizes"]
    lines = ["| variant | phase | " + " | ".join("ms/rule %d→%d" % (a, b) for a, b in zip(sizes, sizes[1:])) + " |",
             "|---|---|" + "---:|" * (len(sizes) - 1)]
    keys = [variant_name(k, b) for b in cfg["backends"] for k in (FLOOR, FLOOR_DATA, "module")]
    for key in keys:
        for phase in ("converge", "rerun"):
            stats = [_stat(results, str(n), key, phase) for n in sizes]
            if not all(stats):
                continue
            cells = ["%.3f" % (1000 * (b.median - a.median) / (nb - na))
                     for (a, na), (b, nb) in zip(zip(stats, sizes), zip(stats[1:], sizes[1:]))]
            lines.append("| %s | %s | %s |" % (key.replace("module", cfg["scenario"]), phase, " | ".join(cells)))
    peer = peer_stats(results, "converge")
    measured = [n for n in sizes if n in peer and not peer[n].estimated]
    if len(measured) >= 2:
        fit = _fit([(n, peer[n].median) for n in measured])
        lines.append("| peer ansible.builtin.iptables | converge | %.1f ms/rule (fit over N=%s) |%s" % (
            1000 * fit[1], ",".join(map(str, measured)), " |" * (len(sizes) - 2)))
    return "\n".join(lines)


def peer_ratios(results):
    cfg = results["config"]
    if "iptables" not in cfg["backends"]:
        return ""
    lines = ["| N | peer ÷ %s converge | peer ÷ %s rerun |" % (cfg["scenario"], cfg["scenario"]), "|---:|---:|---:|"]
    peers = {phase: peer_stats(results, phase) for phase in ("converge", "rerun")}
    for n in cfg["sizes"]:
        cells = []
        for phase in ("converge", "rerun"):
            peer, module = peers[phase].get(n), _stat(results, str(n), variant_name("module", "iptables"), phase)
            ratio = _ratio(peer, module)
            cells.append("–" if ratio is None else ("~%.0f (est.)" if peer.estimated else "%.1f") % ratio)
        lines.append("| %d | %s |" % (n, " | ".join(cells)))
    return "\n".join(lines)


def _has_cpu(results):
    return any("cpu" in sample for section in results["samples"].values() for key in section.values()
               for samples in key.values() for sample in samples)


def render(results):
    env = results["environment"]
    cfg = results["config"]
    notes = results.get("notes", [])
    parts = [
        "## Converge benchmark: %s (%s)" % (cfg["scenario"], env["date"]),
        "",
        "`%s` — kernel %s, %s CPUs, load %s → %s; %s; %s; %s; commit %s." % (
            " ".join(cfg["argv"]), env["kernel"], env["cpus"],
            "/".join("%.1f" % x for x in env["loadavg_at_start"]),
            "/".join("%.1f" % x for x in env.get("loadavg_at_end", env["loadavg_at_start"])),
            env["ansible"], env["iptables"], env["nft"], env["commit"]),
        "",
        "Medians of %d runs (peer: %d runs at N=%s), whole `ansible-playbook` processes, fresh namespace hosts. "
        "Floor converge = one trivial task + one read + one apply of the same ruleset; floor rerun = one trivial "
        "task + one read of the loaded ruleset. Peak RSS: largest process of the run's tree."
        % (cfg["runs"], cfg["peer_runs"], ",".join(map(str, cfg["peer_sizes"])) or "none"),
        "",
        size_table(results),
        "",
    ]
    if _has_cpu(results):
        parts += [
            "### CPU time (user + system of the whole process tree; steadier than wall time on a busy machine)",
            "",
            size_table(results, "cpu"),
            "",
        ]
    parts += [
        "### Targets",
        "",
        targets_table(results),
        "",
        "### Where the time goes (medians)",
        "",
        "floor+data: the floor with its trivial task replaced by a do-nothing module (bench/library/ncb_carry.py) "
        "that receives the same N rules, i.e. what Ansible alone costs to parse, template, send, echo back and "
        "return one task holding them.",
        "",
        cost_split(results),
        "",
        "### Peer (ansible.builtin.iptables, one task looping over the rules)",
        "",
        peer_ratios(results),
        "",
        "### Cost per added rule",
        "",
        marginal_table(results),
        "",
        "### Floor breakdown (medians)",
        "",
        floor_breakdown(results),
    ]
    fleet = fleet_table(results)
    if fleet:
        parts += ["", "### Fleet", "", fleet]
    if notes:
        parts += ["", "### Notes", ""] + ["- %s" % n for n in notes]
    return "\n".join(parts) + "\n"
