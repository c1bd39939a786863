"""Wrapper binaries that fail, die or lie in a chosen way, found first on PATH by the module.

The modules find ``iptables-restore``, ``ip6tables-save``, ``nft``, ... with ``get_bin_path``, which
searches PATH first; a test puts a directory of wrappers in front (the driver's environment, or the
play's ``environment:`` keyword). Each wrapper logs its invocations, counts the calls that match, and on
the chosen call runs its action; otherwise it ``exec``s the real binary. ``$REAL`` in an action is
the real binary, ``$N`` the number of the matching call.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import tempfile
from pathlib import Path

REAL_DIR = "/usr/sbin"

# ---- actions (shell snippets)
FAIL = 'cat >/dev/null; echo "netconfine-fault: simulated failure of $0" >&2; exit 1'
FAIL_READ = 'echo "netconfine-fault: simulated read failure of $0" >&2; exit 1'
KILL_BEFORE = "kill -9 $$"
KILL_AFTER = '"$REAL" "$@"; kill -9 $$'
KILL_MIDWAY = 'head -c 60 | "$REAL" "$@"; kill -9 $$'
KILL_RACE = 'exec 3<&0; "$REAL" "$@" <&3 & pid=$!; sleep 0.002; kill -9 $pid 2>/dev/null; wait $pid; kill -9 $$'


def filter_input(sed: str) -> str:
    """The kernel silently loses part of what it was given: stdin passes through sed on its way in."""
    return 'sed -e %s | "$REAL" "$@"; exit $?' % shlex.quote(sed)


def filter_output(sed: str) -> str:
    """The reader lies: the real output passes through sed."""
    return 'out=$("$REAL" "$@"); rc=$?; printf "%%s\\n" "$out" | sed -e %s; exit $rc' % shlex.quote(sed)


def before(command: str) -> str:
    """Something else happens just before the real call (a concurrent change)."""
    return '%s\nexec "$REAL" "$@"' % command


def after(command: str) -> str:
    """Something else happens just after the real call (it succeeded; the next one may not)."""
    return '"$REAL" "$@"; rc=$?\n%s\nexit $rc' % command


@dataclasses.dataclass(frozen=True)
class Wrap:
    binary: str                 # iptables-restore, ip6tables-save, nft, ...
    action: str
    call: int | None = 1        # fire on this matching call (1-based); None: on every matching call
    when: str = ""              # only calls whose arguments contain this text match (e.g. "-f" for nft)
    real: str | None = None     # the real binary (default /usr/sbin/<binary>)


class WrapperDir:
    """A temporary directory of wrapper scripts; ``log(binary)`` lists the argument lines seen."""

    def __init__(self, wraps: list[Wrap] = (), links: dict[str, str] | None = None):
        self.path = Path(tempfile.mkdtemp(prefix="nct-fault-"))
        os.chmod(self.path, 0o755)
        for name, target in (links or {}).items():
            (self.path / name).symlink_to(target)
        by_binary: dict[str, list[Wrap]] = {}
        for wrap in wraps:
            by_binary.setdefault(wrap.binary, []).append(wrap)
        for binary, items in by_binary.items():
            self._write(binary, items, links)

    def _write(self, binary: str, wraps: list[Wrap], links):
        real = wraps[0].real or (links or {}).get(binary) or "%s/%s" % (REAL_DIR, binary)
        if (self.path / binary).is_symlink():
            (self.path / binary).unlink()
        lines = ["#!/bin/sh", "REAL=%s" % shlex.quote(real), 'LOG=%s' % shlex.quote(str(self.path / ("log." + binary))),
                 'echo "$*" >> "$LOG"']
        for index, wrap in enumerate(wraps):
            counter = shlex.quote(str(self.path / ("count.%s.%d" % (binary, index))))
            match = 'case " $* " in *%s*) m=1;; *) m=0;; esac' % shlex.quote(wrap.when) if wrap.when else "m=1"
            lines += [match,
                      'if [ "$m" = 1 ]; then',
                      "  N=$(( $(cat %s 2>/dev/null || echo 0) + 1 )); echo $N > %s" % (counter, counter),
                      '  if %s; then' % ("true" if wrap.call is None else '[ "$N" -eq %d ]' % wrap.call),
                      "\n".join("    " + line for line in wrap.action.splitlines()),
                      "  fi",
                      "fi"]
        lines.append('exec "$REAL" "$@"')
        script = self.path / binary
        script.write_text("\n".join(lines) + "\n")
        script.chmod(0o755)

    def log(self, binary: str) -> list[str]:
        path = self.path / ("log." + binary)
        return path.read_text().splitlines() if path.exists() else []

    def remove(self):
        shutil.rmtree(self.path, ignore_errors=True)


def legacy_links() -> dict[str, str]:
    """PATH entries that make the module use the legacy xtables variant (xtables-legacy-multi picks its
    personality from the name it was called by)."""
    links = {}
    for name in ("iptables-save", "iptables-restore", "ip6tables-save", "ip6tables-restore"):
        family, action = name.split("-", 1)
        links[name] = "%s/%s-legacy-%s" % (REAL_DIR, family, action)
    return links
