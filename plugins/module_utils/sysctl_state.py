# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel parameters a task needs (``Sysctl`` resources), behind the engine's seam.

Private to the paranoid.netconfine collection. A *state* for
``engine.converge(..., states=[SysctlState(...)])``: one unit, ``kernel``;
``read`` looks at ``/proc/sys/<key>`` for every declared key, ``script`` is
the text of what would change (``modprobe MODULE`` lines, then ``key = value``
lines in sysctl.conf(5) syntax), ``apply`` does it, and the engine reads back.

Kernel modules a task needs without a key of their own (``KernelModule``, e.g.
``nf_conntrack_bridge``) go through the same unit: read from ``/sys/module/<name>`` (or the
kernel's ``modules.builtin``), shown as ``module NAME = loaded``, loaded with ``modprobe NAME``,
and persisted with the sysctls (the boot file's ``modprobe`` lines).

Only what a task declares is read or written. ``state: absent`` leaves the
parameters as they are (other services may rely on ``ip_forward`` or
``bridge-nf-call-iptables``): the removal reports nothing here.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
from dataclasses import dataclass
from typing import Optional, Tuple

from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError


@dataclass(frozen=True)
class Sysctl:
    """A kernel parameter the task needs: ``/proc/sys/<key>`` holds ``value``.

    ``key`` uses slashes (``net/bridge/bridge-nf-call-iptables``), ``value`` the text the
    kernel prints without the newline. ``module`` is loaded (``modprobe``) first when the
    key does not exist (``br_netfilter`` creates ``net/bridge/*``). ``field`` names the
    option that asked for it in errors. Handled by ``sysctl_state.SysctlState``; sysctls
    are per network namespace where the kernel says so (``net/*`` mostly are).
    ``link``: the interface the key belongs to when the task creates that interface itself
    (``net/ipv4/conf/vh-web/route_localnet`` of netns_service's veth). The key exists only
    once the link does, so the boot restore, which runs before any such link exists, leaves
    it to whatever creates the link at boot (netns_service's namespace unit).
    """
    key: str
    value: str
    module: Optional[str] = None
    field: str = "name"
    link: Optional[str] = None


@dataclass(frozen=True)
class KernelModule:
    """A kernel module the task needs loaded (``modprobe NAME``; built into the kernel counts as loaded).
    Handled by ``sysctl_state.SysctlState`` beside the sysctls, persisted with them (``modprobe`` at boot).
    ``field`` names the option that asked for it in errors."""
    name: str
    field: str = "name"


UNIT = "kernel"
MISSING = "(missing)"
LOADED, NOT_LOADED = "loaded", "(not loaded)"
MODULE_KEY = "module "       # Settings key of a KernelModule: "module NAME" (no sysctl key has a space)
PROC_SYS = "/proc/sys"
SYS_MODULE = "/sys/module"
LIB_MODULES = "/lib/modules"


@dataclass(frozen=True)
class Settings:
    """Declared kernel parameters as the kernel holds them: ((key, value or MISSING), ...)."""
    values: Tuple[Tuple[str, str], ...] = ()

    def lines(self):
        return ["%s = %s" % (key.replace("/", "."), value) for key, value in self.values]


def sysctls(policy):
    """The policy's ``Sysctl`` resources, one per key (the last declaration wins)."""
    found = {}
    for item in policy.resources:
        if isinstance(item, Sysctl):
            found[item.key] = item
    return found


def kernel_modules(policy):
    """The policy's ``KernelModule`` resources by name."""
    return dict((item.name, item) for item in policy.resources if isinstance(item, KernelModule))


class SysctlState:
    """Reads and writes ``/proc/sys`` in the namespace the module runs in."""

    name = "sysctl"
    offline_units = (UNIT,)
    persistent = True          # persistence.PersistState keeps its text for boot

    def __init__(self, run, modprobe=None, proc_sys=PROC_SYS, sys_module=SYS_MODULE, lib_modules=LIB_MODULES):
        """``run(argv, data=None) -> (rc, out, err)``; ``modprobe`` is its path or None."""
        self.run = run
        self.modprobe = modprobe
        self.proc_sys = proc_sys
        self.sys_module = sys_module
        self.lib_modules = lib_modules
        self._declared = {}
        self._modules = {}

    def units(self, policy):
        self._declared = sysctls(policy)
        self._modules = kernel_modules(policy)
        return (UNIT,) if self._declared or self._modules else ()

    def _path(self, key):
        return os.path.join(self.proc_sys, key)

    def read(self, unit):
        out = {}
        for key in self._declared:
            try:
                with open(self._path(key)) as handle:
                    out[key] = " ".join(handle.read().split())
            except (IOError, OSError):
                out[key] = MISSING
        for name in self._modules:
            out[MODULE_KEY + name] = LOADED if self._loaded(name) else NOT_LOADED
        return out

    def _loaded(self, name):
        """Loaded (``/sys/module/NAME``: a module with state, or one built in that has parameters) or built in."""
        if os.path.isdir(os.path.join(self.sys_module, name)):
            return True
        try:
            with open(os.path.join(self.lib_modules, os.uname()[2], "modules.builtin")) as handle:
                return any(os.path.basename(line.strip()) == name + ".ko" for line in handle)
        except (IOError, OSError):
            return False

    def owned(self, read, policy, unit):
        if not policy.present:
            return {}
        keys = list(sysctls(policy)) + [MODULE_KEY + name for name in kernel_modules(policy)]
        return {UNIT: Settings(tuple(sorted((key, read.get(key, MISSING)) for key in keys)))}

    def render(self, policy, unit):
        if not policy.present:
            return {}
        values = [(key, item.value) for key, item in sysctls(policy).items()]
        values += [(MODULE_KEY + name, LOADED) for name in kernel_modules(policy)]
        return {UNIT: Settings(tuple(sorted(values)))}

    def script(self, read, current, desired, restore_jumps=None):
        """What would change: ``modprobe M`` for missing keys that name a module, then ``key = value``."""
        want = dict(desired[UNIT].values) if UNIT in desired else {}
        have = dict(current[UNIT].values) if UNIT in current else {}
        lines, modules = [], []
        for key in sorted(want):
            if have.get(key) == want[key] or want[key] in (MISSING, NOT_LOADED):   # rollback cannot un-create a key
                continue
            if key.startswith(MODULE_KEY):      # nothing to unload on rollback either
                if key[len(MODULE_KEY):] not in modules:
                    modules.append(key[len(MODULE_KEY):])
                continue
            module = self._declared[key].module if key in self._declared else None
            if have.get(key, MISSING) == MISSING and module and module not in modules and not self._built_in(
                    module, key):
                modules.append(module)
            lines.append("%s = %s" % (key.replace("/", "."), want[key]))
        return "".join("modprobe %s\n" % m for m in modules) + "".join(line + "\n" for line in lines)

    def boot_script(self, desired):
        """The boot file's text (``persistence``): the empty-host script, without the keys of links the
        task creates itself (``Sysctl.link``). ``netconfine-restore`` runs before any such link
        exists (a veth of netns_service is made later, by its namespace unit, which then sets them);
        writing them there would fail the restore at every boot."""
        linked = set(key for key, item in self._declared.items() if item.link)
        if UNIT in desired:
            desired = {UNIT: Settings(tuple(v for v in desired[UNIT].values if v[0] not in linked))}
        return self.script({}, {}, desired)

    def _built_in(self, module, key):
        """Whether ``module`` is part of the kernel: ``key`` exists while no loadable module of that name is
        loaded (a loaded one has ``/sys/module/<module>/initstate``, kernel/module/sysfs.c). Then modprobe is
        never needed, and fails where the kernel has no module directory: the boot file (persistence, written
        for an empty host) leaves the line out."""
        return os.path.exists(self._path(key)) and not os.path.exists(
            os.path.join(self.sys_module, module, "initstate"))

    def apply(self, unit, script):
        for line in script.splitlines():
            if line.startswith("modprobe "):
                self._load(line.split(" ", 1)[1])
                continue
            dotted, value = line.split(" = ", 1)
            key = dotted.replace(".", "/")
            item = self._declared.get(key)
            field = item.field if item else "name"
            path = self._path(key)
            if not os.path.exists(path):
                raise NetconfineError(
                    "%s does not exist on this host%s: the rules would be bypassed without it"
                    % (path, " (module %s did not create it)" % item.module if item and item.module else ""),
                    field)
            try:
                with open(path, "w") as handle:
                    handle.write(value + "\n")
            except (IOError, OSError) as exc:
                raise NetconfineError("cannot set %s to %s: %s" % (dotted, value, exc), field)

    def _load(self, module):
        field = self._modules[module].field if module in self._modules else next(
            (i.field for i in self._declared.values() if i.module == module), "name")
        if not self.modprobe:
            raise NetconfineError("kernel module %s is needed but modprobe is not installed (package kmod)"
                                  % module, field)
        rc, out, err = self.run([self.modprobe, module])
        if rc != 0:
            raise NetconfineError("modprobe %s failed (rc=%d): %s" % (module, rc, (err or out).strip()), field)


def make_state(module, run):
    """Factory for ``netfilter_task.run_module(..., states=(make_state, ...))``."""
    return SysctlState(run, modprobe=module.get_bin_path("modprobe"))
