"""Throw-away network-namespace hosts.

Every namespace is named ``ncb-<pid>-<n>`` after the benchmark process that made
it; :func:`sweep` removes those of benchmark processes that are gone (a killed
run), with what the module persisted for them, and never touches anything else (tests use
``nct-``, the lab ``nclab-``).
Nothing here touches the host's own firewall: every netfilter command runs
inside a namespace.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

NETNS_DIR = Path("/run/netns")
PERSIST_DIR = Path("/etc/netconfine")
PREFIX = "ncb"
_NAME_RE = re.compile(r"^%s-([0-9]+)-[0-9]+$" % PREFIX)
_counter = 0


def run(*argv: str, ns: str | None = None, data: str | None = None, check: bool = True) -> str:
    """Run argv (inside namespace ``ns`` if given); its stdout; raise with stderr on failure if ``check``."""
    if ns is not None:
        argv = ("ip", "netns", "exec", ns) + argv
    proc = subprocess.run(argv, input=data, capture_output=True, text=True, timeout=600, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError("%s -> rc %d\n%s%s" % (" ".join(argv), proc.returncode, proc.stdout, proc.stderr))
    return proc.stdout


def create(count: int = 1) -> list:
    """``count`` new namespaces with ``lo`` up; their names."""
    global _counter
    names = []
    try:
        while len(names) < count:
            _counter += 1
            name = "%s-%d-%d" % (PREFIX, os.getpid(), _counter)
            run("ip", "netns", "add", name)
            names.append(name)
            run("ip", "-n", name, "link", "set", "lo", "up")
    except BaseException:
        delete(names)
        raise
    return names


def delete(names) -> None:
    for name in names:
        for pid in run("ip", "netns", "pids", name, check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        run("ip", "netns", "del", name, check=False)
        # what the module persisted for this namespace (persist: true, the default persist_dir)
        shutil.rmtree(PERSIST_DIR / "netns" / name, ignore_errors=True)


@contextlib.contextmanager
def hosts(count: int = 1):
    """``count`` fresh namespace hosts for the duration of the block."""
    names = create(count)
    try:
        yield names
    finally:
        delete(names)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(own: bool = False) -> list:
    """Delete benchmark namespaces of dead benchmark processes (and this one's if ``own``)."""
    doomed = []
    for name in sorted(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else []:
        m = _NAME_RE.match(name)
        if not m:
            continue
        pid = int(m.group(1))
        if (own and pid == os.getpid()) or (pid != os.getpid() and not _alive(pid)):
            doomed.append(name)
    delete(doomed)
    return doomed


def ruleset(ns: str, backend: str) -> str:
    """``iptables-save`` (IPv4) or ``nft list ruleset`` of ``ns``."""
    return run("iptables-save", ns=ns) if backend == "iptables" else run("nft", "list", "ruleset", ns=ns)


def rule_count(text: str) -> int:
    """Number of rules (``-A`` lines) in ``iptables-save`` output."""
    return sum(1 for line in text.splitlines() if line.startswith("-A "))
