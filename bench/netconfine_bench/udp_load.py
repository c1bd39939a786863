"""UDP load counted by the kernel: the sender, the sink and the rounds of the dataplane benchmarks.

``bench/dataplane.py`` (loopback through owner rules) and ``bench/bridge.py`` (guest to guest
through a bridge) measure the same way: a Python loop on a connected UDP socket sends for a
given time; the receiving socket binds the port and never reads, so nothing is sent back and no
receiver competes for a CPU; what arrived is the receiving namespace's ``Udp: InDatagrams +
RcvbufErrors`` (/proc/net/snmp). Each round measures every variant once, back to back, in a
rotating order, and a variant's ratio to ``empty`` is the median of its per-round ratios (which
cancels most of the drift of a shared machine), per wall-clock second and per CPU-second of the
sender (its user + system time: the kernel path runs in its ``send()`` calls or their softirq).
"""

from __future__ import annotations

import statistics
import subprocess
import textwrap

from netconfine_bench import namespaces

SYSTEM_PYTHON = "/usr/bin/python3"

# The beginning of a script run inside a namespace that converges a policy with the collection's own
# engine (argv[1]: the collections path): what the module would do, without Ansible.
CONVERGE_PRELUDE = textwrap.dedent("""
    import json, subprocess, sys
    sys.path.insert(0, sys.argv[1])

    def run(argv, data=None):
        p = subprocess.run(argv, input=data, capture_output=True, text=True)
        return p.returncode, p.stdout, p.stderr
""")

# argv: source address ("-" for the kernel's choice), destination, port, seconds -> "sent errors seconds cpu"
_SEND = textwrap.dedent("""
    import os, socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if sys.argv[1] != "-":
        s.bind((sys.argv[1], 0))
    s.connect((sys.argv[2], int(sys.argv[3])))
    send, payload, n, errors = s.send, b"x" * 16, 0, 0
    start = time.monotonic()
    end = start + float(sys.argv[4])
    while True:
        for _ in range(1000):
            try:
                send(payload)
            except OSError:
                errors += 1
        n += 1000
        now = time.monotonic()
        if now >= end:
            break
    cpu = os.times()
    print(n, errors, now - start, cpu.user + cpu.system)
""")

# argv: address, port. Binds, never reads, until killed.
_SINK = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], int(sys.argv[2])))
    print("ready", flush=True)
    time.sleep(86400)
""")


def snmp_udp(ns: str) -> dict:
    """The ``Udp:`` counters of namespace ``ns`` (/proc/net/snmp)."""
    lines = [line.split() for line in namespaces.run("cat", "/proc/net/snmp", ns=ns).splitlines()
             if line.startswith("Udp:")]
    return dict(zip(lines[0][1:], (int(v) for v in lines[1][1:])))


def start_sink(ns: str, address: str, port: int) -> subprocess.Popen:
    """A socket bound to address:port in ``ns`` that never reads; kill the returned process to stop it."""
    proc = subprocess.Popen(["ip", "netns", "exec", ns, SYSTEM_PYTHON, "-c", _SINK, address, str(port)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("the receiving socket did not start in %s" % ns)
    return proc


def stop_sinks(procs) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


def send(sender_ns: str, receiver_ns: str, destination: str, port: int, seconds: float,
         source: str = "-", user: str | None = None) -> dict:
    """Send for ``seconds`` from ``sender_ns`` (as ``user`` if given, at nice -10: fewer preemptions by the
    rest of the machine, the same kernel path); what ``receiver_ns`` counted. Keys: sent, errors, received,
    pps (received per second of sending), per_cpu_second (received per CPU-second of the sender)."""
    before = snmp_udp(receiver_ns)
    argv = ["nice", "-n", "-10"] + (["runuser", "-u", user, "--"] if user else [])
    out = namespaces.run(*argv, SYSTEM_PYTHON, "-c", _SEND, source, destination, str(port), str(seconds),
                         ns=sender_ns)
    after = snmp_udp(receiver_ns)
    sent, errors, sending, cpu = out.split()
    received = (after["InDatagrams"] - before["InDatagrams"]) + (after["RcvbufErrors"] - before["RcvbufErrors"])
    return {"sent": int(sent), "errors": int(errors), "received": received,
            "pps": received / float(sending), "per_cpu_second": received / float(cpu)}


def rounds(variants, runs: int, measure, say) -> dict:
    """Measure every variant once per round, back to back, the order rotating; ``measure(variant)`` returns
    ``send``'s dict. Returns {"pps": {variant: [...]}, "per_cpu_second": {...}, "lost": {variant: packets}}."""
    samples = dict((k, []) for k in variants)
    per_cpu = dict((k, []) for k in variants)
    lost = dict((k, 0) for k in variants)
    for round_no in range(runs):
        order = variants[round_no % len(variants):] + variants[:round_no % len(variants)]
        for variant in order:
            got = measure(variant)
            samples[variant].append(got["pps"])
            per_cpu[variant].append(got["per_cpu_second"])
            lost[variant] += got["sent"] - got["received"]
        say("round %d/%d: %s" % (round_no + 1, runs, ", ".join("%s %.0f" % (k, samples[k][-1]) for k in variants)))
    return {"pps": samples, "per_cpu_second": per_cpu, "lost": lost}


def ratio_to(series, base) -> float:
    """Median of the per-round ratios series[i] / base[i]."""
    return statistics.median(a / b for a, b in zip(series, base))


def summarise(measured: dict, base="empty") -> dict:
    """Medians and ratios to the baseline of ``rounds``' result, per wall-clock second and per CPU-second.
    ``base``: the baseline variant's name, or a function of a variant giving its baseline's name."""
    base_of = base if callable(base) else (lambda _variant: base)
    samples, per_cpu = measured["pps"], measured["per_cpu_second"]
    return {"medians": dict((k, statistics.median(v)) for k, v in samples.items()),
            "ratios": dict((k, ratio_to(v, samples[base_of(k)])) for k, v in samples.items()),
            "per_cpu_medians": dict((k, statistics.median(v)) for k, v in per_cpu.items()),
            "per_cpu_ratios": dict((k, ratio_to(v, per_cpu[base_of(k)])) for k, v in per_cpu.items())}


def table(variants, loaded: dict, measured: dict, summary: dict) -> str:
    """The Markdown table both benchmarks print."""
    samples = measured["pps"]
    lines = ["| variant | what the kernel holds | packets/s (median, min - max) | vs its empty | "
             "packets per CPU-second of the sender (median) | vs its empty |", "|---|---|---:|---:|---:|---:|"]
    for k in variants:
        lines.append("| %s | %s | %.0f (%.0f - %.0f) | %.2fx | %.0f | %.2fx |" % (
            k, loaded[k], summary["medians"][k], min(samples[k]), max(samples[k]), summary["ratios"][k],
            summary["per_cpu_medians"][k], summary["per_cpu_ratios"][k]))
    return "\n".join(lines)
