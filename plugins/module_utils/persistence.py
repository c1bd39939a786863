# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a task applied, kept on disk so that it comes back at boot (``persist: true``).

Private to the paranoid.netconfine collection. A *state* behind the engine's
seam (see ``engine``), implemented once for every module: its desired content
is, for every seam that has a boot form (the netfilter backend's units, the
sysctls), the text that seam would apply on an empty host
(``seam.script({}, {}, seam.render(policy, unit))`` — the same text
``state: rendered`` shows; a seam with ``boot_script(desired)`` leaves out what
cannot exist yet when the restore runs, e.g. the sysctls of a veth that
netns_service's namespace unit creates later), one file per unit::

    PERSIST_DIR/host/<task>.<seam>-<unit>          the initial network namespace
    PERSIST_DIR/netns/<name>/<task>.<seam>-<unit>  a named namespace (ip netns, /run/netns/<name>)

Files are written atomically (temporary file, fsync, rename, fsync of the
directory) and removed by ``state: absent`` in the same run. Check mode writes
nothing and predicts; a failed run puts the files back (engine rollback).

At boot ``netconfine-restore`` (written beside them) loads ``host/`` (or,
given NAME, what was persisted for that namespace, entered): sysctl files
first, then ``iptables-restore --noflush`` / ``nft -f`` per file, so only our
chains and our table are touched — never ``flush ruleset``, never another
tool's file. A named namespace does not exist at boot; whoever recreates it
runs ``netconfine-restore NAME`` (``netns_service``'s namespace unit does).
A namespace without a name under /run/netns cannot be restored: the task
warns and does not persist.

Where no systemd unit of ours restores, ``netconfine-boot`` is written too:
``netconfine-restore`` for the namespace it runs in, then the namespaces of
netns_service (``*.netns-NAME``: the ``ip`` commands that build NAME, then
``netconfine-restore NAME`` for what was persisted inside it) and their
launchers (``*.launcher-NAME``).

What runs it at boot is the *boot hook* (``boot_hook``): ``auto`` (default)
a systemd unit of ours, ``netconfine-restore.service`` (before
``network-pre.target``, after ``nftables.service``, whose ``flush ruleset``
would otherwise destroy our table), where systemd runs, and nothing
elsewhere; ``systemd`` that unit, or an error where systemd does not run;
``if-pre-up`` a script of ours in ``/etc/network/if-pre-up.d`` that runs
``netconfine-boot`` (ifupdown runs it when it brings up the loopback, before
any other interface); ``rc.local`` one line of ours in ``/etc/rc.local`` that
runs it (late in boot: after the network is up);
``none`` no hook (and ours removed). A hook goes with the last persisted task.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Tuple

from ansible_collections.paranoid.netconfine.plugins.module_utils import engine
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError

PERSIST_DIR = "/etc/netconfine"
UNIT = "files"
NETNS_RUN_DIR = "/run/netns"
SYSTEMD_RUNNING = "/run/systemd/system"
UNIT_DIR = "/etc/systemd/system"
UNIT_NAME = "netconfine-restore.service"
WANTS = "multi-user.target.wants"

BOOT_HOOKS = ("auto", "systemd", "if-pre-up", "rc.local", "none")
HOOK_PATHS = {"if-pre-up": "/etc/network/if-pre-up.d/netconfine", "rc.local": "/etc/rc.local"}
HOOK_MARK = "# paranoid.netconfine (boot_hook: rc.local)"
LINE = "+= "          # Files content of a line of ours in a file that is not ours (rc.local)

RESTORE_SCRIPT = r"""#!/bin/sh
# Written by paranoid.netconfine (persist: true); rewritten by every run that persists.
# netconfine-restore [NETNS]: load what the collection persisted into the initial network
# namespace (no argument) or into the named namespace NETNS. Only netconfine's own chains and
# table are touched: iptables-restore --noflush, nft -f of our table; never "flush ruleset".
set -u
here=$(dirname "$0")
case "${1:-}" in
  "") dir="$here/host" ;;
  --in) dir="$2" ;;
  *) [ -d "$here/netns/$1" ] || exit 0
     exec ip netns exec "$1" /bin/sh "$0" --in "$here/netns/$1" ;;
esac
[ -d "$dir" ] || exit 0
rc=0
for f in "$dir"/*.sysctl-*; do
  [ -f "$f" ] || continue
  while IFS= read -r line; do
    case "$line" in
      "modprobe "*) modprobe "${line#modprobe }" || rc=1 ;;
      *" = "*) key=$(printf '%s' "${line%% = *}" | tr . /)
               printf '%s\n' "${line#* = }" > "/proc/sys/$key" || rc=1 ;;
    esac
  done < "$f"
done
for f in "$dir"/*.iptables-4; do [ -f "$f" ] && { iptables-restore --noflush --wait 10 < "$f" || rc=1; }; done
for f in "$dir"/*.iptables-6; do [ -f "$f" ] && { ip6tables-restore --noflush --wait 10 < "$f" || rc=1; }; done
for f in "$dir"/*.ebtables-bridge; do [ -f "$f" ] && { ebtables-restore --noflush < "$f" || rc=1; }; done
for f in "$dir"/*.nftables-*; do
  [ -f "$f" ] || continue
  case "$(head -c 1 "$f")" in "{") nft -j -f "$f" || rc=1 ;; *) nft -f "$f" || rc=1 ;; esac
done
exit $rc
"""

BOOT_SCRIPT = r"""#!/bin/sh
# Written by paranoid.netconfine (persist: true, where no systemd unit restores); rewritten by every
# run that persists. netconfine-boot: what a host without systemd runs at boot (boot_hook): what was
# persisted for the network namespace this runs in (host/ in the initial one, netns/NAME/ in a named
# one) with netconfine-restore, then the namespaces netns_service built here (*.netns-NAME: the ip
# commands that build NAME, then netconfine-restore NAME for what was persisted inside it) and
# their launchers (*.launcher-NAME).
set -u
here=$(dirname "$0")
dir="$here/host"
me=$(stat -L -c %d:%i /proc/self/ns/net 2>/dev/null) || me=""
if [ -n "$me" ] && [ "$me" != "$(stat -L -c %d:%i /proc/1/ns/net 2>/dev/null)" ]; then
  dir=""
  for ns in /run/netns/*; do
    [ "$(stat -L -c %d:%i "$ns" 2>/dev/null)" = "$me" ] && dir="$here/netns/${ns##*/}"
  done
  [ -n "$dir" ] || { echo "netconfine-boot: this network namespace has no name under /run/netns" >&2; exit 1; }
fi
rc=0
/bin/sh "$here/netconfine-restore" --in "$dir" || rc=1
for f in "$dir"/*.netns-*; do
  [ -f "$f" ] || continue
  /bin/sh -e "$f" || rc=1
  /bin/sh "$here/netconfine-restore" "${f##*.netns-}" || rc=1
done
for f in "$dir"/*.launcher-*; do [ -f "$f" ] && { /bin/sh "$f" || rc=1; }; done
exit $rc
"""

IF_PRE_UP_HOOK = """#!/bin/sh
# Written by paranoid.netconfine (boot_hook: if-pre-up); removed with the last persisted task.
# ifupdown runs it before it brings up each interface; at boot the loopback comes first.
[ "${{IFACE:-}}" = lo ] || exit 0
/bin/sh {script} || echo "netconfine-boot failed (rc=$?)" >&2
exit 0
"""

RESTORE_UNIT = """# Written by paranoid.netconfine (persist: true).
[Unit]
Description=Restore the network policy applied by paranoid.netconfine
DefaultDependencies=no
Wants=network-pre.target
Before=network-pre.target shutdown.target
After=systemd-modules-load.service local-fs.target nftables.service
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh {script}

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class Files:
    """Files (path, content) as they are on disk or as wanted; content None means absent."""
    files: Tuple[Tuple[str, str], ...] = ()

    def lines(self):
        out = []
        for path, content in self.files:
            out.append("# %s" % path)
            out.extend(content.splitlines())
        return out


def namespace_name(netns_run_dir=NETNS_RUN_DIR):
    """``host`` in the initial network namespace, ``netns/NAME`` in a named one, None otherwise.

    Compares the inode of /proc/self/ns/net with /proc/1/ns/net and with /run/netns/* (ip-netns(8)).
    """
    try:
        mine = os.stat("/proc/self/ns/net")
    except OSError:
        return "host"
    try:
        init = os.stat("/proc/1/ns/net")
        if (init.st_dev, init.st_ino) == (mine.st_dev, mine.st_ino):
            return "host"
    except OSError:
        pass
    try:
        names = sorted(os.listdir(netns_run_dir))
    except OSError:
        names = []
    for name in names:
        try:
            st = os.stat(os.path.join(netns_run_dir, name))
        except OSError:
            continue
        if st.st_ino == mine.st_ino and st.st_dev == mine.st_dev:
            return "netns/%s" % name
    return None


class PersistState:
    """Keeps every boot-restorable seam's text of one task under ``persist_dir``.

    ``seams``: the seams whose empty-host script is what boot restores (the first netfilter
    backend, sysctl states); ``where``: ``namespace_name()``; ``unit_dir``: where the systemd
    unit goes when systemd runs (``/run/systemd/system`` exists), else None.
    """

    name = "persist"
    offline_units = ()
    internal = True      # not kernel state: the diff shows it, rendered/scripts do not

    def __init__(self, seams, persist_dir=PERSIST_DIR, where="host", unit_dir=None, boot_hook="auto",
                 hook_path=None):
        """``boot_hook``: one of BOOT_HOOKS (the systemd unit is ``unit_dir``'s, decided by the caller);
        ``hook_path``: where the if-pre-up / rc.local hook goes (default HOOK_PATHS)."""
        self.seams = seams
        self.persist_dir = persist_dir
        self.where = where
        self.unit_dir = unit_dir
        self.boot_hook = boot_hook
        # every hook of ours that this task manages: the chosen one where it was asked, the others where
        # they go by default (switching hooks removes the old one)
        self.hooks = {}
        if boot_hook not in ("auto", "systemd"):
            self.hooks = dict(HOOK_PATHS)
            if boot_hook in HOOK_PATHS and hook_path:
                self.hooks[boot_hook] = hook_path
        self._persisted = set()

    # ---------------------------------------------------------- the seam

    def units(self, policy):
        return (UNIT,) if self.where else ()

    def task_dir(self):
        return os.path.join(self.persist_dir, self.where)

    def _task_files(self, policy):
        """{path: content} of this task's files as they should be (empty when absent).

        Computed once per policy (owned, render and the read-back all ask), from the seams' one rendering.
        """
        memo = getattr(self, "_files_for", None)
        if memo is not None and memo[0] is policy:
            return dict(memo[1])
        out = {}
        if policy.present:
            for seam in self.seams:
                for unit in seam.units(policy):
                    desired = engine.render_once(seam, policy, unit)
                    # a seam may leave out of the boot text what cannot exist yet when the restore runs
                    boot = getattr(seam, "boot_script", None)
                    text = boot(desired) if boot else seam.script({}, {}, desired)
                    if text:
                        out[os.path.join(self.task_dir(), "%s.%s-%s" % (policy.name, seam.name, unit))] = text
        self._files_for = (policy, out)
        return dict(out)

    def _shared_files(self):
        script = os.path.join(self.persist_dir, "netconfine-restore")
        out = {script: RESTORE_SCRIPT}
        if not self.unit_dir:
            out[os.path.join(self.persist_dir, "netconfine-boot")] = BOOT_SCRIPT
        if self.unit_dir:
            out[os.path.join(self.unit_dir, UNIT_NAME)] = RESTORE_UNIT.format(script=script)
            out[os.path.join(self.unit_dir, WANTS, UNIT_NAME)] = "-> %s" % os.path.join(self.unit_dir, UNIT_NAME)
        return out

    def hook_text(self):
        """{path: Files content} of the boot hook asked for (none for auto, systemd and none)."""
        script = os.path.join(self.persist_dir, "netconfine-boot")
        if self.boot_hook == "if-pre-up":
            return {self.hooks["if-pre-up"]: IF_PRE_UP_HOOK.format(script=script)}
        if self.boot_hook == "rc.local":
            return {self.hooks["rc.local"]: "%s/bin/sh %s || echo 'netconfine-boot failed' >&2  %s"
                    % (LINE, script, HOOK_MARK)}
        return {}

    def _wanted(self, policy):
        files = self._task_files(policy)
        if files:
            files.update(self._shared_files())
        prefix = os.path.join(self.task_dir(), policy.name + ".")
        if files or any(not _is_mine(p, prefix) for p in self._persisted):
            files.update(self.hook_text())      # the hook serves every task that persists
        return files

    def read(self, unit):
        """{path: content} of what is on disk: this directory's files, the shared ones and our hooks."""
        out = {}
        directory = self.task_dir()
        for path in _files_in(directory):
            out[path] = _read(path)
        for path in self._shared_files():
            if os.path.islink(path):
                out[path] = "-> %s" % os.readlink(path)
            elif os.path.exists(path):
                out[path] = _read(path)
        for kind, path in sorted(self.hooks.items()):
            if kind == "rc.local":
                line = next((x for x in _read(path).splitlines() if x.endswith(HOOK_MARK)), None) \
                    if os.path.exists(path) else None
                if line is not None:
                    out[path] = LINE + line
            elif os.path.exists(path):
                out[path] = _read(path)
        # every task's files under persist_dir (all its namespaces): while one is left, the hook is needed
        self._persisted = set(_files_in(os.path.join(self.persist_dir, "host")))
        for name in _names(os.path.join(self.persist_dir, "netns")):
            self._persisted.update(_files_in(os.path.join(self.persist_dir, "netns", name)))
        return out

    def owned(self, read, policy, unit):
        wanted = self._wanted(policy)
        prefix = os.path.join(self.task_dir(), policy.name + ".")
        hooks = set(self.hooks.values())
        mine = dict((p, c) for p, c in read.items() if _is_mine(p, prefix) or p in wanted or p in hooks)
        return {UNIT: Files(tuple(sorted(mine.items())))} if mine else {}

    def diff_owned(self, current, desired):
        """(current, desired) narrowed to the files whose content differs, for the task's diff: a new task's
        file shows as itself, not after the last lines of the shared restore script as context."""
        have = dict(current[UNIT].files) if UNIT in current else {}
        want = dict(desired[UNIT].files) if UNIT in desired else {}
        paths = sorted(p for p in set(have) | set(want) if have.get(p) != want.get(p))

        def only(files):
            kept = tuple((p, files[p]) for p in paths if p in files)
            return {UNIT: Files(kept)} if kept else {}
        return only(have), only(want)

    def render(self, policy, unit):
        wanted = self._wanted(policy)
        return {UNIT: Files(tuple(sorted(wanted.items())))} if wanted else {}

    def script(self, read, current, desired, restore_jumps=None):
        """JSON: {"write": {path: content}, "remove": [path]} taking ``current`` to ``desired``."""
        have = dict(current[UNIT].files) if UNIT in current else {}
        want = dict(desired[UNIT].files) if UNIT in desired else {}
        shared = set(self._shared_files())
        write = dict((p, c) for p, c in want.items() if have.get(p) != c)
        # the restore script and unit serve every task: removing one task leaves them (a hook goes with the last)
        remove = sorted(p for p in have if p not in want and p not in shared)
        unline = dict((p, have[p][len(LINE):]) for p in remove if have[p].startswith(LINE))
        remove = [p for p in remove if p not in unline]
        if not write and not remove and not unline:
            return ""
        plan = {"write": write, "remove": remove}
        if unline:
            plan["unline"] = unline
        return json.dumps(plan, indent=1, sort_keys=True) + "\n"

    def apply(self, unit, script):
        plan = json.loads(script)
        try:
            for path, line in sorted(plan.get("unline", {}).items()):
                _drop_line(path, line)
            for path, content in sorted(plan["write"].items()):
                if content.startswith("-> "):
                    _symlink(content[3:], path)
                elif content.startswith(LINE):
                    _put_line(path, content[len(LINE):])
                else:
                    _write_atomic(path, content, 0o755 if path.endswith(("netconfine-restore", "netconfine-boot")) or
                                  path in self.hooks.values() else 0o600)
            for path in plan["remove"]:
                if os.path.lexists(path):
                    os.unlink(path)
        except (IOError, OSError) as exc:
            raise NetconfineError("cannot persist the policy under %s: %s" % (self.persist_dir, exc), "persist_dir")


def _is_mine(path, prefix):
    # <task>.<seam>-<unit>: neither seam names nor units hold a dot, so task "a" never takes "a.b"'s files
    return path.startswith(prefix) and not set("./") & set(path[len(prefix):])


def _names(directory):
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def _files_in(directory):
    return [os.path.join(directory, n) for n in _names(directory) if os.path.isfile(os.path.join(directory, n))]


RC_LOCAL = "#!/bin/sh\n%sexit 0\n"       # what a missing rc.local becomes, with our line


def _put_line(path, line):
    """Our line in a file that is not ours (rc.local): replaces a line of ours, else goes before a last
    ``exit 0``; a missing file is created executable (RC_LOCAL)."""
    if not os.path.exists(path):
        _write_atomic(path, RC_LOCAL % (line + "\n"), 0o755)
        return
    with open(path) as handle:
        lines = [x for x in handle.read().splitlines() if not x.endswith(HOOK_MARK)]
    at = len(lines)
    while at and not lines[at - 1].strip():
        at -= 1
    if at and lines[at - 1].strip() == "exit 0":
        at -= 1
    lines.insert(at, line)
    _write_atomic(path, "\n".join(lines) + "\n", os.stat(path).st_mode & 0o7777)


def _drop_line(path, line):
    """Remove our line; a file that then holds only what RC_LOCAL made is removed."""
    if not os.path.exists(path):
        return
    with open(path) as handle:
        text = handle.read()
    rest = "".join(x + "\n" for x in text.splitlines() if not x.endswith(HOOK_MARK))
    if rest == RC_LOCAL % "":
        os.unlink(path)
    elif rest != text:
        _write_atomic(path, rest, os.stat(path).st_mode & 0o7777)


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError, UnicodeDecodeError):
        return "(unreadable)"


def _write_atomic(path, content, mode):
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    fd, tmp = tempfile.mkstemp(prefix=".netconfine-", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _symlink(target, path):
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    if os.path.lexists(path):
        os.unlink(path)
    os.symlink(target, path)
