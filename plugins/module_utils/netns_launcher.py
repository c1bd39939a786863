# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The daemon's launcher for hosts without systemd (``netns_model.Launcher``), behind the engine's seam.

Private to the paranoid.netconfine collection. One unit per namespace
(``launcher NAME``). The launcher is a shell script at
``/usr/local/libexec/netconfine/ns-NAME`` that does what the seed's two
articles do by hand: enter the namespace (``ip netns exec``), give the daemon
a private ``/tmp`` in a mount namespace of its own (``unshare --mount`` and a
fresh tmpfs, gone when the daemon exits), drop privileges (``setpriv`` with
the user's groups and ``no_new_privs``), clear the environment and ``exec``
the daemon. Facts: the script's text, and with ``start`` whether a process of
the launcher runs in the namespace (``ip netns pids``, its ``/proc/PID/environ``
carries ``NETCONFINE_LAUNCHER=NAME``). ``state: absent`` stops those processes
and removes the script.

A changed script restarts a running launcher. ``restart`` (the role's handler)
restarts it in any case: the processes found by the run's first read are a
fact (``restart: due``) that no desired state holds, so the run stops them
and starts the launcher again, and the read-back fails while one of them
still runs. With ``persist``, ``boot_script`` is the line that starts the
launcher at boot (``netconfine-restore``, after it rebuilt the namespace).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Tuple

from ansible_collections.paranoid.netconfine.plugins.module_utils import netns_model
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError

LAUNCHER_DIR = "/usr/local/libexec/netconfine"
MARK = "NETCONFINE_LAUNCHER"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def launcher_path(name, directory=LAUNCHER_DIR):
    return os.path.join(directory, "ns-%s" % name)


def render_script(launcher):
    """The launcher's text (pure). Every value is shell-quoted; the model has checked them already."""
    q = shlex.quote
    env = [("PATH", PATH), ("HOME", launcher.home), ("USER", launcher.user), ("LOGNAME", launcher.user),
           (MARK, launcher.namespace)] + list(launcher.environment)
    lines = [
        "#!/bin/sh",
        "# Managed by paranoid.netconfine (netns_service %s); changes are overwritten." % launcher.namespace,
        "# Runs %s as %s in network namespace %s%s." % (
            launcher.exec_path, launcher.user, launcher.namespace, " with a private /tmp" if launcher.private_tmp else ""),
        "set -eu",
        'if [ "${%s:-}" != %s ]; then' % (MARK, q(launcher.namespace)),
        "    exec ip netns exec %s env %s=%s unshare --mount --propagation private -- %s \"$@\"" % (
            q(launcher.namespace), MARK, q(launcher.namespace), q(launcher.path)),
        "fi",
    ]
    if launcher.private_tmp:
        lines.append("mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp")
    lines += [
        "cd %s" % q(launcher.working_directory),
        "exec setpriv --reuid %d --regid %d --init-groups --no-new-privs -- env -i %s %s%s" % (
            launcher.uid, launcher.gid, " ".join("%s=%s" % (k, q(v)) for k, v in env), q(launcher.exec_path),
            "".join(" " + q(a) for a in launcher.args)),
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class LauncherState:
    """What is on the host: ((fact, value), ...)."""
    facts: Tuple[Tuple[str, str], ...] = ()

    def lines(self):
        out = []
        for kind, value in self.facts:
            if kind == "script":
                out += ["%s:" % value.split("\n", 1)[0]] + ["  " + line for line in value.split("\n", 1)[1].splitlines()]
            else:
                out.append("%s: %s" % (kind, value))
        return out


class NetnsLauncher:
    """Writes, removes, starts and stops the launcher of each declared ``netns_model.Launcher``."""

    name = "launcher"
    persistent = True          # persistence.PersistState keeps boot_script (the start) for boot

    def __init__(self, run, ip, proc="/proc", restart=False, warn=None):
        """``restart``: restart a started launcher even when nothing changed; ``warn(text)`` where it cannot."""
        self.run = run
        self.ip = ip
        self.proc = proc
        self.restart = restart
        self.warn = warn
        self._declared = {}
        self._before = {}

    @property
    def offline_units(self):
        return tuple(self._declared)

    def units(self, policy):
        self._declared = dict((item.namespace, item) for item in policy.resources if isinstance(item, netns_model.Launcher))
        return tuple(sorted(self._declared))

    def _pids(self, launcher):
        if not os.path.exists(os.path.join("/run/netns", launcher.namespace)):
            return []
        rc, out, _err = self.run([self.ip, "netns", "pids", launcher.namespace])
        pids = []
        for pid in out.split() if rc == 0 else []:
            try:
                with open(os.path.join(self.proc, pid, "environ"), "rb") as handle:
                    environ = handle.read().split(b"\0")
            except (IOError, OSError):
                continue
            if ("%s=%s" % (MARK, launcher.namespace)).encode() in environ:
                pids.append(int(pid))
        return pids

    def read(self, unit):
        launcher = self._declared[unit]
        facts = []
        try:
            with open(launcher.path) as handle:
                facts.append(("script", "%s\n%s" % (launcher.path, handle.read())))
        except (IOError, OSError):
            pass
        pids = self._pids(launcher)
        if pids:
            facts.append(("running", "yes"))
        if self.restart and launcher.start:
            before = self._before.setdefault(unit, set(pids))      # what ran when this run began
            still = sorted(before & set(pids))
            if still:
                facts.append(("restart", "due (pid %s started before this run)" % ", ".join(map(str, still))))
        elif self.restart and unit not in self._before:
            self._before[unit] = set()
            if self.warn:
                self.warn("restart: the launcher of %s is not started by this task (service.start is false), so "
                          "nothing was restarted; restart it where you start it" % unit)
        return {"facts": tuple(facts), "pids": pids}

    def owned(self, read, policy, unit):
        return {unit: LauncherState(read["facts"])} if read["facts"] else {}

    def render(self, policy, unit):
        launcher = self._declared[unit]
        if not policy.present:
            return {}
        if launcher.sandbox:
            option = next(o for o, d, _s in netns_model.SANDBOX if d == launcher.sandbox[0][0])
            raise NetconfineError("needs systemd (%s= of a unit); this host does not run systemd, so only the "
                                  "launcher is available" % launcher.sandbox[0][0], "service.%s" % option)
        facts = [("script", "%s\n%s" % (launcher.path, render_script(launcher)))]
        if launcher.start:
            facts.append(("running", "yes"))
        return {unit: LauncherState(tuple(facts))}

    def script(self, read, current, desired, restore_jumps=None):
        have = dict(current[next(iter(current))].facts) if current else {}
        want = dict(desired[next(iter(desired))].facts) if desired else {}
        lines = []
        unit = next(iter(desired or current))
        path = self._declared[unit].path
        changed = have.get("script") != want.get("script") or "restart" in have
        restart = "running" in have and "script" in want and changed
        if "running" in have and ("running" not in want or restart):
            lines.append("stop %s" % path)
        if "script" not in want and "script" in have:
            lines.append("remove %s" % path)
        elif want.get("script") != have.get("script"):
            lines.append("install %s" % path)
        if "running" in want and ("running" not in have or restart):
            lines.append("start %s" % path)
        return "".join(line + "\n" for line in lines)

    def boot_script(self, desired):
        """The boot file of ``persistence`` (``*.launcher-NAME``): start the launcher, detached, when the task
        keeps it running."""
        unit = next(iter(desired), None)
        if unit is None or "running" not in dict(desired[unit].facts):
            return ""
        return "setsid %s </dev/null >/dev/null 2>&1 &\n" % shlex.quote(self._declared[unit].path)

    def apply(self, unit, script):
        launcher = self._declared[unit]
        for line in script.splitlines():
            verb = line.split(" ", 1)[0]
            if verb == "stop":
                self._stop(launcher)
            elif verb == "remove":
                try:
                    os.unlink(launcher.path)
                except OSError as exc:
                    raise NetconfineError("cannot remove %s: %s" % (launcher.path, exc), "service")
            elif verb == "install":
                self._install(launcher)
            elif verb == "start":
                self._start(launcher)

    def _install(self, launcher):
        directory = os.path.dirname(launcher.path)
        tmp = launcher.path + ".netconfine-tmp"
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o755)
            with open(tmp, "w") as handle:
                handle.write(render_script(launcher))
            os.chmod(tmp, 0o755)
            os.rename(tmp, launcher.path)
        except (IOError, OSError) as exc:
            raise NetconfineError("cannot write %s: %s" % (launcher.path, exc), "service")

    def _start(self, launcher):
        """Start the launcher detached (own session, output to /dev/null); wait until its process is there."""
        with open(os.devnull, "r+b") as null:
            subprocess.Popen([launcher.path], stdin=null, stdout=null, stderr=null, close_fds=True,
                             start_new_session=True, cwd="/")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self._pids(launcher):
                return
            time.sleep(0.1)
        raise NetconfineError("%s did not start a process in namespace %s within 5 s (run it by hand to see why)"
                              % (launcher.path, launcher.namespace), "service.exec")

    def _stop(self, launcher):
        pids = self._pids(launcher)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            deadline = time.monotonic() + 5
            while pids and time.monotonic() < deadline:
                time.sleep(0.1)
                pids = self._pids(launcher)
            if not pids:
                return


def make_state(module, run):
    """Factory for ``netfilter_task.run_module(..., states=(..., make_state))``."""
    return NetnsLauncher(run, module.get_bin_path("ip") or "ip", restart=module.params.get("restart", False),
                         warn=module.warn)
