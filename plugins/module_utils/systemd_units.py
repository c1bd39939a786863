# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""systemd units of ``netns_service`` (``netns_model.Netns`` and ``netns_model.Launcher``), behind the engine's seam.

Private to the paranoid.netconfine collection. Used instead of ``netns_launcher`` where systemd runs
(``/run/systemd/system`` exists, sd_booted(3)). One unit of this state per namespace (``systemd NAME``)
owns two unit files under ``/etc/systemd/system``:

* ``netconfine-ns-NAME.service``: oneshot, ``RemainAfterExit=yes``. At boot it builds the namespace
  with the very commands ``netns_links`` writes for a missing namespace (``netns_links.boot_commands``)
  and then loads what ``persistence`` kept for the namespace (``netconfine-restore NAME``: its egress
  rules). When the namespace already exists (the task has just converged it) it does nothing.
  ``ExecStop`` deletes the veth pair (by its host end: at once, where the namespace's own teardown
  takes its peer later, and a restart would find the old pair) and the namespace.
* ``netconfine-NAME.service`` (only with ``service``): the daemon, ``NetworkNamespacePath=/run/netns/NAME``,
  ``BindsTo=``/``After=`` the namespace unit (stopping or restarting the namespace stops or restarts
  the daemon), ``User=``/``Group=``, ``PrivateTmp=``, ``NoNewPrivileges=yes``, ``WorkingDirectory=``,
  ``Environment=`` and the sandbox settings of systemd.resource-control(5) / systemd.exec(5).

Facts read: each file's text, ``systemctl is-enabled`` and ``is-active`` of each unit. Both units are
enabled and started; a changed daemon unit restarts an active daemon. A changed namespace unit is only
reloaded (the live namespace was converged by ``netns_links``; the new text serves the next boot).
``restart`` (the role's handler) restarts an active daemon in any case.
``state: absent`` stops and disables both (the namespace unit's ``ExecStop`` deletes the namespace),
removes the files and reloads systemd. The script is JSON (like ``persistence``): what is written,
removed, enabled, started, restarted, stopped, disabled.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
from dataclasses import dataclass
from typing import Tuple

from ansible_collections.paranoid.netconfine.plugins.module_utils import netns_links, netns_model
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError

UNIT_DIR = "/etc/systemd/system"
SYSTEMD_RUNNING = "/run/systemd/system"
NETNS_DIR = "/run/netns"
_VERSION_RE = re.compile(r"^systemd (\d+)")


def namespace_unit(name):
    return "netconfine-ns-%s.service" % name


def daemon_unit(name):
    return "netconfine-%s.service" % name


def _quote(arg):
    """One argument of ExecStart= (systemd.service(5) "Command lines"): double-quoted, specifiers escaped."""
    return '"%s"' % arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")


def render_namespace_unit(ns, ip, restore=None, link_sysctls=()):
    """Text of ``netconfine-ns-NAME.service`` (pure). ``ip``: path of ip(8); ``restore``: path of
    ``netconfine-restore`` when the task persists, else None; ``link_sysctls``: ((key, value), ...) of
    the host-side veth (``net/ipv4/conf/vh-NAME/route_localnet``), set once the veth exists."""
    commands = netns_links.boot_lines(ns, ip, link_sysctls)
    if restore:
        commands.append("/bin/sh %s %s" % (netns_links.shell_word(restore), ns.name))
    body = "; \\\n  ".join(commands)
    # the pair by its host end first: at once, where the namespace's teardown takes the peer (and so the
    # pair) later, and the ExecStart of a restart would find the old host end
    stop = ["ExecStop=-%s link delete %s" % (ip, ns.host_link)] if ns.host_link else []
    stop.append("ExecStop=-%s netns delete %s" % (ip, ns.name))
    return "\n".join([
        "# Managed by paranoid.netconfine (netns_service %s); changes are overwritten." % ns.name,
        "[Unit]",
        "Description=Network namespace %s of paranoid.netconfine" % ns.name,
        "After=netconfine-restore.service network-pre.target",
        "Before=network.target",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        "ExecStart=/bin/sh -ec 'test -e %s/%s && exit 0; \\\n  %s'" % (NETNS_DIR, ns.name, body),
    ] + stop + [
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def _value(text):
    return text.replace("%", "%%")


def render_daemon_unit(launcher):
    """Text of ``netconfine-NAME.service`` (pure); every value was checked by ``netns_model``."""
    name = launcher.namespace
    lines = [
        "# Managed by paranoid.netconfine (netns_service %s); changes are overwritten." % name,
        "[Unit]",
        "Description=%s in network namespace %s (paranoid.netconfine)" % (_value(launcher.exec_path), name),
        "BindsTo=%s" % namespace_unit(name),
        "After=%s" % namespace_unit(name),
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=%s" % " ".join(_quote(a) for a in (launcher.exec_path,) + tuple(launcher.args)),
        "NetworkNamespacePath=%s/%s" % (NETNS_DIR, name),
        "User=%s" % launcher.user,
        "Group=%s" % (launcher.group or launcher.gid),
        "PrivateTmp=%s" % ("yes" if launcher.private_tmp else "no"),
        "NoNewPrivileges=yes",
        "WorkingDirectory=%s" % _value(launcher.working_directory),
    ]
    # Environment= expands specifiers but not variables: only % is doubled
    lines += ['Environment="%s"' % ("%s=%s" % (k, v)).replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
              for k, v in launcher.environment]
    lines += ["%s=%s" % (directive, " ".join(values)) for directive, values in launcher.sandbox]
    lines += ["Restart=on-failure", "", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class Units:
    """What one namespace holds of the task under systemd: ((fact, value), ...)."""
    facts: Tuple[Tuple[str, str], ...] = ()

    def lines(self):
        out = []
        for kind, value in self.facts:
            if kind == "file":
                path, text = value.split("\n", 1)
                out += ["%s:" % path] + ["  " + line for line in text.splitlines()]
            elif kind == "restart":
                out.append("%s: restart due (the invocation that ran when this run began)" % value)
            else:
                out.append("%s: %s" % (value, kind))
        return out


class SystemdUnits:
    """Writes, enables, starts, restarts, stops and removes the units of each declared namespace."""

    name = "systemd"

    def __init__(self, run, systemctl, ip="/usr/sbin/ip", restore=None, unit_dir=UNIT_DIR, restart=False):
        """``run(argv, data=None) -> (rc, out, err)``; ``restore``: path of netconfine-restore or None;
        ``restart``: restart an active daemon even when nothing changed (its invocation is a fact,
        ``restart``, while it is the one that ran when the run began)."""
        self.run = run
        self.systemctl = systemctl
        self.ip = ip
        self.restore = restore
        self.unit_dir = unit_dir
        self.restart = restart
        self._declared = {}
        self._before = {}
        self._version = None

    @property
    def offline_units(self):
        return tuple(self._declared)

    def units(self, policy):
        launchers = dict((i.namespace, i) for i in policy.resources if isinstance(i, netns_model.Launcher))
        self._declared = dict((n.name, (n, launchers.get(n.name))) for n in netns_links.declared(policy).values())
        # sysctls of a veth we create (route_localnet): the namespace unit sets them once it made the veth
        self._link_sysctls = netns_links.link_sysctls(policy)
        return tuple(sorted(self._declared))

    def _paths(self, unit):
        return [(namespace_unit(unit), os.path.join(self.unit_dir, namespace_unit(unit))),
                (daemon_unit(unit), os.path.join(self.unit_dir, daemon_unit(unit)))]

    def _systemctl(self, *argv):
        if not self.systemctl:
            raise NetconfineError("systemd runs but systemctl is not installed", "service")
        return self.run([self.systemctl] + list(argv))

    def version(self):
        """systemd's version number (``systemctl --version``, first line ``systemd 252 (...)``)."""
        if self._version is None:
            rc, out, err = self._systemctl("--version")
            found = _VERSION_RE.match(out or "")
            if rc != 0 or not found:
                raise NetconfineError("cannot tell the systemd version (systemctl --version: %s)"
                                      % (err or out).strip(), "service")
            self._version = int(found.group(1))
        return self._version

    def read(self, unit):
        facts = []
        for name, path in self._paths(unit):
            try:
                with open(path) as handle:
                    facts.append(("file", "%s\n%s" % (path, handle.read())))
            except (IOError, OSError):
                continue
            rc, out, _err = self._systemctl("is-enabled", name)
            if rc == 0 and out.strip() == "enabled":
                facts.append(("enabled", name))
            rc, out, _err = self._systemctl("is-active", name)
            active = out.strip() == "active"
            if active:
                facts.append(("active", name))
            if self.restart and name == daemon_unit(unit):
                # restart: due while the daemon runs the invocation it ran when this run began
                invocation = self._systemctl("show", "-p", "InvocationID", "--value", name)[1].strip() \
                    if active else ""
                before = self._before.setdefault(unit, invocation)
                if before and invocation == before:
                    facts.append(("restart", name))
        return {"facts": tuple(facts)}

    def owned(self, read, policy, unit):
        return {unit: Units(read["facts"])} if read["facts"] else {}

    def render(self, policy, unit):
        if not policy.present:
            return {}
        ns, launcher = self._declared[unit]
        if launcher is not None:
            self._check_version(launcher)
        texts = [(namespace_unit(unit), render_namespace_unit(ns, self.ip, self.restore,
                                                              self._link_sysctls.get(unit, ())))]
        if launcher is not None:
            texts.append((daemon_unit(unit), render_daemon_unit(launcher)))
        facts = []
        for name, text in texts:
            facts += [("file", "%s\n%s" % (os.path.join(self.unit_dir, name), text)), ("enabled", name),
                      ("active", name)]
        return {unit: Units(tuple(facts))}

    def _check_version(self, launcher):
        for option, directive, since in netns_model.SANDBOX:
            if any(d == directive for d, _values in launcher.sandbox) and since > 235 and self.version() < since:
                raise NetconfineError("needs systemd %d or later (%s=); this host runs systemd %d"
                                      % (since, directive, self.version()), "service.%s" % option)

    def script(self, read, current, desired, restore_jumps=None):
        """JSON plan taking ``current`` to ``desired`` (keys: write, remove, reload, enable, start,
        restart, stop, disable; unit names in the order they are acted on)."""
        have = list(current[next(iter(current))].facts) if current else []
        want = list(desired[next(iter(desired))].facts) if desired else []
        unit = next(iter(desired or current))
        files_have = dict(v.split("\n", 1) for k, v in have if k == "file")
        files_want = dict(v.split("\n", 1) for k, v in want if k == "file")
        plan = {"write": dict((p, t) for p, t in files_want.items() if files_have.get(p) != t),
                "remove": sorted(p for p in files_have if p not in files_want)}
        names = [n for n, _p in self._paths(unit)]
        active = [v for k, v in have if k == "active"]
        enabled = [v for k, v in have if k == "enabled"]
        want_active = [v for k, v in want if k == "active"]
        want_enabled = [v for k, v in want if k == "enabled"]
        daemon_path = os.path.join(self.unit_dir, daemon_unit(unit))
        # stop the daemon before its namespace; start the namespace before its daemon
        plan["stop"] = [n for n in names[::-1] if n in active and n not in want_active]
        plan["disable"] = [n for n in names[::-1] if n in enabled and n not in want_enabled]
        plan["reload"] = bool(plan["write"] or plan["remove"])
        plan["enable"] = [n for n in names if n in want_enabled and n not in enabled]
        plan["start"] = [n for n in names if n in want_active and n not in active]
        plan["restart"] = [daemon_unit(unit)] if (daemon_unit(unit) in active and daemon_unit(unit) in want_active
                                                  and (daemon_path in plan["write"] or
                                                       ("restart", daemon_unit(unit)) in have)) else []
        plan = dict((k, v) for k, v in plan.items() if v)
        if not plan:
            return ""
        return json.dumps(plan, indent=1, sort_keys=True) + "\n"

    def apply(self, unit, script):
        plan = json.loads(script)
        for name in plan.get("stop", []):
            self._act("stop", name)
        for name in plan.get("disable", []):
            self._act("disable", name)
        try:
            for path, text in sorted(plan.get("write", {}).items()):
                tmp = path + ".netconfine-tmp"
                with open(tmp, "w") as handle:
                    handle.write(text)
                os.chmod(tmp, 0o644)
                os.rename(tmp, path)
            for path in plan.get("remove", []):
                if os.path.lexists(path):
                    os.unlink(path)
        except (IOError, OSError) as exc:
            raise NetconfineError("cannot write the units under %s: %s" % (self.unit_dir, exc), "service")
        if plan.get("reload"):
            self._act("daemon-reload")
        for name in plan.get("enable", []):
            self._act("enable", name)
        for name in plan.get("start", []):
            self._act("start", name)
        for name in plan.get("restart", []):
            self._act("restart", name)

    def _act(self, verb, name=None):
        rc, out, err = self._systemctl(*([verb] + ([name] if name else [])))
        if rc != 0:
            raise NetconfineError("systemctl %s%s failed (rc=%d): %s%s" % (
                verb, " " + name if name else "", rc, (err or out).strip(),
                " (see journalctl -u %s)" % name if name and verb in ("start", "restart") else ""), "service")


def systemd_running(path=SYSTEMD_RUNNING):
    """sd_booted(3): systemd is PID 1 when /run/systemd/system exists."""
    return os.path.isdir(path)


def make_state(module, run):
    """Factory: the systemd units where systemd runs, else the launcher of ``netns_launcher``."""
    from ansible_collections.paranoid.netconfine.plugins.module_utils import netns_launcher

    if not systemd_running():
        return netns_launcher.make_state(module, run)
    restore = None
    if module.params.get("persist"):
        restore = os.path.join(module.params["persist_dir"], "netconfine-restore")
    return SystemdUnits(run, module.get_bin_path("systemctl"), ip=module.get_bin_path("ip") or "/usr/sbin/ip",
                        restore=restore, restart=module.params.get("restart", False))
