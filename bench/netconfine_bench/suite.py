"""The measurements: per size N, and the fleet.

Each round measures every variant at every size once, in a fixed order, so
that noise from other work on the machine spreads over all variants alike;
ratios are taken between medians of the same run. Every measurement starts
from fresh, empty namespaces ("converge from empty"), then reruns the same
playbook ("no-change rerun"); ansible-playbook must report changed, then not
changed, and the kernel must hold the N rules, or the run stops.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from netconfine_bench import namespaces, playbooks
from netconfine_bench.processes import Timed, timed
from netconfine_bench.scenarios import Scenario

FLOOR = "floor"
FLOOR_DATA = "floor+data"
PEER = "peer"


def variant_name(kind: str, backend: str | None = None) -> str:
    """'floor iptables', 'module iptables', 'peer' - the keys of the samples."""
    return "%s %s" % (kind, backend) if backend else kind


@dataclasses.dataclass
class Config:
    scenario: Scenario
    sizes: tuple = (10, 100, 1000, 3000)
    runs: int = 3
    peer_sizes: tuple = (10, 100)
    peer_runs: int = 3
    backends: tuple = ("iptables",)
    fleet_hosts: int = 50
    fleet_rules: int = 200
    fleet_forks: int = 10
    fleet_runs: int = 3
    log: object = sys.stderr


@dataclasses.dataclass
class Results:
    """Raw samples: samples[section][key][phase] = [{"s": wall s, "cpu": user+sys s, "rss": peak kB}, ...]."""
    config: dict
    environment: dict
    samples: dict = dataclasses.field(default_factory=dict)

    def add(self, section: str, key: str, phase: str, *parts: Timed) -> None:
        """One sample of ``phase``: the processes in ``parts`` one after the other (times add up)."""
        self.samples.setdefault(section, {}).setdefault(key, {}).setdefault(phase, []).append({
            "s": round(sum(p.seconds for p in parts), 4),
            "cpu": round(sum(p.cpu_seconds for p in parts), 4),
            "rss": max(p.max_rss_kb for p in parts),
        })

    def as_dict(self) -> dict:
        return {"config": self.config, "environment": self.environment, "samples": self.samples}


def _say(config: Config, text: str) -> None:
    print(text, file=config.log, flush=True)


def _version(argv) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unavailable"


def environment() -> dict:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "ansible": _version([str(playbooks.ANSIBLE_PLAYBOOK), "--version"]),
        "iptables": _version(["iptables", "--version"]),
        "nft": _version(["nft", "--version"]),
        "commit": _version(["git", "-C", str(playbooks.ROOT), "rev-parse", "--short", "HEAD"]),
    }


# ------------------------------------------------------------------ availability

def backend_available(scenario: Scenario, backend: str) -> tuple:
    """(usable, reason): run the module once with ``backend`` on a scratch namespace."""
    if backend == "nftables" and not shutil.which("nft"):
        return False, "nft not installed"
    with namespaces.hosts(1) as hosts:
        params = dict(scenario.params(1), backend=backend)
        with playbooks.PlaybookRun(hosts, [playbooks.module_task(scenario.module, params)]) as pb:
            try:
                pb.run(expect_changed=True)
            except RuntimeError as exc:
                lines = [line for line in str(exc).splitlines() if "msg" in line or "FAILED" in line or "ERROR" in line]
                return False, (lines[-1].strip() if lines else str(exc).splitlines()[0])[:300]
    return True, ""


# ------------------------------------------------------------------ one size

def _check_rules(scenario: Scenario, ns: str, backend: str, n: int, what: str) -> None:
    """The kernel holds the N rules: every kernel token; on iptables, N rules plus at most the jump."""
    text = namespaces.ruleset(ns, backend)
    missing = scenario.kernel_tokens(n) - set(re.findall(r"[\w.:/-]+", text))
    if missing:
        raise RuntimeError("%s in %s: %d of the %d rules are missing from the %s ruleset (e.g. %s)"
                           % (what, ns, len(missing), n, backend, sorted(missing)[0]))
    if backend == "iptables" and not n <= namespaces.rule_count(text) <= n + 1:
        raise RuntimeError("%s in %s: iptables holds %d rules, expected %d"
                           % (what, ns, namespaces.rule_count(text), n))


def measure_floor(results: Results, config: Config, n: int, backend: str, workdir: str) -> str:
    """Trivial task + one read + one apply of the same ruleset (converge); trivial task + one read (rerun).

    Also "floor+data": the same with the trivial task replaced by one that carries the N rules
    to a module that does nothing (what Ansible alone costs to move the rules through a task).
    """
    scenario = config.scenario
    text = scenario.floor(n, backend)
    carry_args = {scenario.data_key: scenario.params(n)[scenario.data_key]}
    with namespaces.hosts(1) as hosts:
        ns = hosts[0]
        with playbooks.PlaybookRun(hosts, [playbooks.trivial_task()], workdir=workdir) as pb:
            trivial = pb.run()
        with playbooks.PlaybookRun(hosts, [playbooks.carry_task(carry_args, scenario.data_key)], workdir=workdir) as pb:
            carry = pb.run(expect_changed=False)
        if backend == "iptables":
            read = ["ip", "netns", "exec", ns, "iptables-save"]
            apply, data = ["ip", "netns", "exec", ns, "iptables-restore", "--noflush", "--wait", "10"], text
        else:
            path = Path(workdir) / "floor.nft"
            path.write_text(text)
            read = ["ip", "netns", "exec", ns, "nft", "list", "ruleset"]
            apply, data = ["ip", "netns", "exec", ns, "nft", "-f", str(path)], None
        read_empty = timed(read).check()
        applied = timed(apply, data=data).check()
        _check_rules(scenario, ns, backend, n, "floor")
        read_full = timed(read).check()
    key, data_key, sec = variant_name(FLOOR, backend), variant_name(FLOOR_DATA, backend), str(n)
    results.add(sec, key, "ansible", trivial)
    results.add(sec, key, "read", read_empty)
    results.add(sec, key, "apply", applied)
    results.add(sec, key, "read_full", read_full)
    results.add(sec, key, "converge", trivial, read_empty, applied)
    results.add(sec, key, "rerun", trivial, read_full)
    results.add(sec, data_key, "ansible", carry)
    results.add(sec, data_key, "converge", carry, read_empty, applied)
    results.add(sec, data_key, "rerun", carry, read_full)
    converge, rerun = trivial.seconds + read_empty.seconds + applied.seconds, trivial.seconds + read_full.seconds
    return "%s %.2fs (ansible %.2f, carrying the rules %.2f + read %.3f + apply %.3f) / rerun %.2fs" % (
        key, converge, trivial.seconds, carry.seconds, read_empty.seconds, applied.seconds, rerun)


def measure_tasks(results: Results, scenario: Scenario, section: str, key: str, hosts_count: int, tasks,
                  check_backend: str, n: int, forks: int, workdir: str) -> str:
    """Converge from empty (changed) then rerun (not changed) on fresh namespaces; the kernel holds N rules."""
    with namespaces.hosts(hosts_count) as hosts:
        with playbooks.PlaybookRun(hosts, tasks, forks=forks, workdir=workdir) as pb:
            converge = pb.run(expect_changed=True)
            for ns in (hosts[0], hosts[-1]):
                _check_rules(scenario, ns, check_backend, n, key)
            rerun = pb.run(expect_changed=False)
    results.add(section, key, "converge", converge)
    results.add(section, key, "rerun", rerun)
    rss_mb = max(converge.max_rss_kb, rerun.max_rss_kb) // 1024
    return "%s %.2fs / rerun %.2fs (%d MB)" % (key, converge.seconds, rerun.seconds, rss_mb)


def measure_trivial(results: Results, section: str, key: str, hosts_count: int, forks: int, workdir: str) -> str:
    with namespaces.hosts(hosts_count) as hosts:
        with playbooks.PlaybookRun(hosts, [playbooks.trivial_task()], forks=forks, workdir=workdir) as pb:
            trivial = pb.run()
    results.add(section, key, "converge", trivial)
    results.add(section, key, "rerun", trivial)
    return "%s %.2fs" % (key, trivial.seconds)


def _module_tasks(scenario: Scenario, n: int, backend: str) -> list:
    return [playbooks.module_task(scenario.module, dict(scenario.params(n), backend=backend), scenario.data_key)]


def _size_steps(results: Results, config: Config, round_: int, n: int, workdir: str) -> list:
    """What one round measures at size N, in order: per backend the floor then the module; then the peer."""
    scenario, section, steps = config.scenario, str(n), []
    if round_ < config.runs:
        for backend in config.backends:
            steps.append(lambda b=backend: measure_floor(results, config, n, b, workdir))
            steps.append(lambda b=backend: measure_tasks(
                results, scenario, section, variant_name("module", b), 1, _module_tasks(scenario, n, b), b, n, 5,
                workdir))
    if scenario.peer and n in config.peer_sizes and round_ < config.peer_runs:
        steps.append(lambda: measure_tasks(
            results, scenario, section, PEER, 1, [playbooks.peer_task(scenario.peer(n))], "iptables", n, 5, workdir))
    return steps


def _fleet_steps(results: Results, config: Config, workdir: str) -> list:
    """One host, then the fleet, each with Ansible's trivial task first (iptables backend)."""
    scenario, section = config.scenario, "fleet"
    h, r, f = config.fleet_hosts, config.fleet_rules, config.fleet_forks
    tasks = _module_tasks(scenario, r, "iptables")
    return [
        lambda: measure_trivial(results, section, "floor one host", 1, f, workdir),
        lambda: measure_tasks(results, scenario, section, "module one host", 1, tasks, "iptables", r, f, workdir),
        lambda: measure_trivial(results, section, "floor fleet", h, f, workdir),
        lambda: measure_tasks(results, scenario, section, "module fleet", h, tasks, "iptables", r, f, workdir),
    ]


def run_suite(config: Config) -> Results:
    scenario = config.scenario
    results = Results(
        config={"scenario": scenario.name, "module": scenario.module, "sizes": list(config.sizes),
                "runs": config.runs, "peer_sizes": list(config.peer_sizes), "peer_runs": config.peer_runs,
                "backends": list(config.backends), "fleet_hosts": config.fleet_hosts,
                "fleet_rules": config.fleet_rules, "fleet_forks": config.fleet_forks,
                "fleet_runs": config.fleet_runs, "rules_from": playbooks.RULES_FROM["mode"], "argv": sys.argv},
        environment=environment())
    rounds = max(config.runs, config.peer_runs if config.peer_sizes else 0)
    with tempfile.TemporaryDirectory(prefix="ncb-") as workdir:
        for round_ in range(rounds):
            for n in config.sizes:
                for step in _size_steps(results, config, round_, n, workdir):
                    _say(config, "[round %d/%d] N=%d %s" % (round_ + 1, rounds, n, step()))
        if config.fleet_hosts:
            for round_ in range(config.fleet_runs):
                for step in _fleet_steps(results, config, workdir):
                    _say(config, "[fleet round %d/%d] %dx%d forks %d: %s" % (
                        round_ + 1, config.fleet_runs, config.fleet_hosts, config.fleet_rules, config.fleet_forks,
                        step()))
    results.environment["loadavg_at_end"] = os.getloadavg()
    return results
