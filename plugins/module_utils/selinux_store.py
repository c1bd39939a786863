# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SELinux policy store (``SelinuxModule`` resources), behind the engine's seam.

Private to the paranoid.netconfine collection. A *state* for
``engine.converge(..., states=[SelinuxStore(...)])`` with one unit, ``policy``:

- ``read`` lists the store once: ``semodule --list-modules=full --checksum``
  (policycoreutils 3.4, Debian 12) prints ``PRIORITY NAME LANG sha256:HEX``
  per module and priority; for a CIL module that checksum is the SHA-256 of
  the CIL text installed, so "installed == rendered" is a checksum compare and
  an unchanged module is never reinstalled (a reinstall rebuilds the whole
  policy, 10-40 s).
- ``script`` is one ``semodule`` command line: ``-X P -r NAME`` for what goes,
  ``-X P -i NAME.cil`` for what changes; ``apply`` runs it as one store
  transaction. A module that does not compile makes ``semodule`` fail before
  the store is touched (libsemanage commits nothing); the error carries the
  compiler's message and names the option behind the CIL line it points at.
- Preflight (``read`` with a present policy): SELinux must be enabled
  (``/sys/fs/selinux/enforce`` exists) and every type the module relies on
  (granted domains, existing packet types) must exist in the loaded policy,
  checked through ``/sys/fs/selinux/context`` as ``security_check_context(3)``
  does; otherwise an error naming the field, before anything is installed.
- For rollback, the CIL of an installed module about to be replaced is read
  from the store (``active/modules/P/NAME/cil``, bzip2) and kept only when its
  SHA-256 equals the listed checksum.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import bz2
import errno
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Tuple

from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError


@dataclass(frozen=True)
class SelinuxModule:
    """A CIL policy module the task owns in the SELinux policy store (``selinux_store.SelinuxStore``).

    ``name`` is the store's module name (``netconfine_<task>``), ``priority`` the store priority
    (1-999, ``semodule -X``), ``cil`` the exact text installed: its SHA-256 is what
    ``semodule --list-modules=full --checksum`` prints for it once installed. ``line_fields``
    maps 1-based CIL line numbers to the option that produced the line, so a compiler error
    ("... at .../cil:5") names the field. ``types`` are (type name, field) pairs the module
    relies on from the loaded policy (domains, existing packet types), checked before install.
    """
    name: str
    priority: int
    cil: str
    line_fields: Tuple[Tuple[int, str], ...] = ()
    types: Tuple[Tuple[str, str], ...] = ()


UNIT = "policy"
SELINUXFS = "/sys/fs/selinux"
STORE_ROOT = "/var/lib/selinux"
SELINUX_CONFIG = "/etc/selinux/config"
_LIST_RE = re.compile(r"^\s*([0-9]+)\s+(\S+)\s+(\S+)\s+sha256:([0-9a-f]{64})\s*(disabled)?\s*$")
_CIL_LINE_RE = re.compile(r"/([^/\s]+)/cil:([0-9]+)")


@dataclass(frozen=True)
class Installed:
    """One module at one priority of the store: compared by name, priority, checksum and enabled."""
    name: str
    priority: int
    checksum: str
    enabled: bool = True
    cil: str = field(default="", compare=False)

    def lines(self):
        head = "module %s priority %d sha256:%s%s" % (self.name, self.priority, self.checksum,
                                                      "" if self.enabled else " (disabled)")
        return [head] + ["  " + line for line in self.cil.splitlines()]


def key(name, priority):
    return "%s@%d" % (name, priority)


def modules(policy):
    """The policy's ``SelinuxModule`` resources by name."""
    return dict((r.name, r) for r in policy.resources if isinstance(r, SelinuxModule))


def parse_list(text):
    """``semodule --list-modules=full --checksum`` output -> {name: [(priority, lang, checksum, enabled)]}."""
    out = {}
    for line in text.splitlines():
        match = _LIST_RE.match(line)
        if match:
            out.setdefault(match.group(2), []).append(
                (int(match.group(1)), match.group(3), match.group(4), match.group(5) is None))
    return out


class SelinuxStore:
    """Reads and changes the policy store of the host the module runs on (``semodule``)."""

    name = "selinux"
    offline_units = (UNIT,)

    def __init__(self, run, semodule=None, selinuxfs=SELINUXFS, store_root=STORE_ROOT, config=SELINUX_CONFIG):
        """``run(argv, data=None) -> (rc, out, err)``; ``semodule`` is its path or None."""
        self.run = run
        self.semodule = semodule
        self.selinuxfs = selinuxfs
        self.store_root = store_root
        self.config = config
        self._declared = {}
        self._present = True
        self._install = {}

    # ---------------------------------------------------------- the seam

    def units(self, policy):
        self._declared = modules(policy)
        self._present = policy.present
        return (UNIT,) if self._declared else ()

    def read(self, unit):
        if self._present:
            self._preflight()
            for module in self._declared.values():
                for type_name, where in module.types:
                    self._check_type(type_name, where)
        if not self.semodule:
            if self._present and any(m.cil for m in self._declared.values()):
                raise NetconfineError("semodule is not installed (Debian package policycoreutils)", "packet_types")
            return {}
        rc, out, err = self.run([self.semodule, "--list-modules=full", "--checksum"])
        if rc != 0:
            raise NetconfineError("semodule --list-modules=full --checksum failed (rc=%d): %s"
                                  % (rc, (err or out).strip()), "packet_types")
        listed = parse_list(out)
        return dict((name, listed.get(name, [])) for name in self._declared)

    def owned(self, read, policy, unit):
        out = {}
        for name, entries in read.items():
            wanted = modules(policy).get(name)
            for priority, _lang, checksum, enabled in entries:
                cil = ""
                if not (wanted and wanted.cil and policy.present and priority == wanted.priority and
                        checksum == _sha256(wanted.cil)):
                    cil = self._stored_cil(name, priority, checksum)
                out[key(name, priority)] = Installed(name, priority, checksum, enabled, cil)
        return out

    def render(self, policy, unit):
        if not policy.present:
            return {}
        return dict((key(m.name, m.priority), Installed(m.name, m.priority, _sha256(m.cil), True, m.cil))
                    for m in modules(policy).values() if m.cil)

    def script(self, read, current, desired, restore_jumps=None):
        """One ``semodule`` command line taking ``current`` to ``desired`` ("" when equal)."""
        argv = []
        self._install = {}
        for k in sorted(current):
            if k not in desired:
                argv += ["-X", str(current[k].priority), "-r", current[k].name]
        for k in sorted(desired):
            want = desired[k]
            if current.get(k) == want:
                continue
            if not want.cil:
                raise NetconfineError("cannot put back module %s: its CIL could not be read from the store"
                                      % want.name, "packet_types")
            argv += ["-X", str(want.priority), "-i", "%s.cil" % want.name]
            self._install["%s.cil" % want.name] = want
            if current.get(k) is not None and not current[k].enabled:
                argv += ["-e", want.name]
        return "semodule %s\n" % " ".join(argv) if argv else ""

    def apply(self, unit, script):
        if not self.semodule:
            raise NetconfineError("semodule is not installed (Debian package policycoreutils)", "packet_types")
        words = script.split()[1:]
        workdir = tempfile.mkdtemp(prefix="netconfine-selinux-")
        try:
            argv = [self.semodule]
            for index, word in enumerate(words):
                if index and words[index - 1] == "-i":
                    path = os.path.join(workdir, os.path.basename(word))
                    with open(path, "w") as handle:
                        handle.write(self._install[word].cil)
                    word = path
                argv.append(word)
            rc, out, err = self.run(argv)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if rc != 0:
            message = (err or out).strip()
            raise NetconfineError(
                "semodule refused the policy module, the store is unchanged: %s" % message,
                self._field_of(message), command=" ".join(argv), stderr=err)

    # ---------------------------------------------------------- helpers

    def _preflight(self):
        if not os.path.exists(os.path.join(self.selinuxfs, "enforce")):
            raise NetconfineError(
                "SELinux is not enabled on this host (%s/enforce does not exist): packet types and SECMARK labels "
                "need a kernel with SELinux active (permissive or enforcing). Enable it (selinux-activate on "
                "Debian, then reboot) or use state: rendered to only see what would be installed"
                % self.selinuxfs, "state")

    def _check_type(self, type_name, where):
        if self.context_valid("system_u:object_r:%s:s0" % type_name) is False:
            raise NetconfineError("type %s is not defined in the loaded SELinux policy" % type_name, where)

    def context_valid(self, context):
        """Whether the loaded policy accepts ``context`` (True/False), None when it cannot be asked.

        As ``security_check_context(3)``: write it to ``SELINUXFS/context``; the kernel answers EINVAL
        for an unknown type. With role ``object_r`` the kernel skips the role/user checks, so a type
        check needs no knowledge of roles.
        """
        path = os.path.join(self.selinuxfs, "context")
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return None     # no selinuxfs or no permission to ask: the compiler reports it at install time
        try:
            os.write(fd, context.encode("ascii") + b"\0")
        except OSError as exc:
            return False if exc.errno == errno.EINVAL else None
        finally:
            os.close(fd)
        return True

    def _field_of(self, message):
        """The option behind the CIL line a compiler message points at (``.../NAME/cil:LINE``)."""
        for match in _CIL_LINE_RE.finditer(message):
            module = self._declared.get(match.group(1))
            if module is not None:
                return dict(module.line_fields).get(int(match.group(2)), "packet_types")
        return "packet_types"

    def _stored_cil(self, name, priority, checksum):
        """The installed module's CIL from the store, or "" when it cannot be read or does not match."""
        try:
            with open(self.config) as handle:
                found = re.search(r"^\s*SELINUXTYPE\s*=\s*(\S+)", handle.read(), re.M)
            policy_type = found.group(1) if found else "default"
            path = os.path.join(self.store_root, policy_type, "active", "modules", str(priority), name, "cil")
            with open(path, "rb") as handle:
                data = bz2.decompress(handle.read())
        except (IOError, OSError, ValueError):
            return ""
        if hashlib.sha256(data).hexdigest() != checksum:
            return ""
        return data.decode("utf-8", "replace")


def _sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_state(module, run):
    """Factory for ``netfilter_task.run_module(..., states=(make_state,))``."""
    return SelinuxStore(run, semodule=module.get_bin_path("semodule"))
