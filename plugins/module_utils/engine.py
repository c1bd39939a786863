# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one applier shared by every netfilter module and every backend.

Private to the paranoid.netconfine collection.

    converge(policy, backends) : lock -> read each unit once -> compare what
    the task owns with what was rendered -> (check mode stops here) -> apply
    each changed unit in one transaction -> read back -> on any failure put
    back every unit already applied -> result.

A backend is a reader and a renderer behind this seam (see
``iptables_backend.IptablesBackend``): ``units``, ``read``, ``owned``,
``render``, ``script``, ``apply`` and optionally ``snapshot_jumps``. The
first backend gets the policy; the others get it marked absent, so switching
backends removes what the old one owned in the same run.

Non-netfilter state a task owns (sysctls and kernel modules, the SELinux
policy store, namespaces and links, systemd units: ``Policy.resources``) goes
through the same seam as *states* (``converge(..., states=[...])``, e.g.
``sysctl_state.SysctlState``): read once, compare, apply, read back, roll
back, exact ``changed``. Every state always gets the policy itself. States
are applied before the netfilter units when the policy is present (a SELinux
type, a namespace or ``br_netfilter`` must exist before rules rely on it) and
after them when it is absent (rules go first, then what they relied on); among
themselves in the order given when present and in reverse when absent (a unit
that runs in a namespace stops before the namespace goes).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import dataclasses
import errno
import fcntl
import os
import time
from contextlib import contextmanager

from ansible_collections.paranoid.netconfine.plugins.module_utils import shadowing
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError, NotConverged

LOCK_DIR = "/run/netconfine"


@contextmanager
def host_lock(timeout, lock_dir=LOCK_DIR):
    """Serialise netconfine runs on one host (one lock per network namespace)."""
    try:
        netns = os.stat("/proc/self/ns/net").st_ino
    except OSError:
        netns = 0
    try:
        os.makedirs(lock_dir, 0o700)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise NetconfineError("cannot create lock directory %s: %s" % (lock_dir, exc), "lock_timeout")
    path = os.path.join(lock_dir, "netns-%d.lock" % netns)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise NetconfineError(
                        "another netconfine run still holds %s after %ss; try again or raise lock_timeout"
                        % (path, timeout), "lock_timeout")
                time.sleep(0.05)
        yield path
    finally:
        os.close(fd)


@dataclasses.dataclass
class _Unit:
    """One unit of one seam in a run: what the kernel holds (``tables``), what the task owns of it
    (``current``), what it should own (``desired``) and the input that gets there (``script``)."""
    backend: object
    policy: object
    unit: object
    tables: object
    current: dict
    desired: dict
    script: str = ""

    @property
    def label(self):
        return unit_label(self.backend, self.unit)


def unit_label(backend, unit):
    """How results name one unit of one backend (``iptables 4``, ``nftables ruleset``)."""
    return "%s %s" % (backend.name, unit)


def owned_text(owned):
    """What a backend's owned state (per table) says, as text for results and diffs."""
    lines = []
    for table in sorted(owned):
        lines.extend(owned[table].lines())
    return "\n".join(lines) + ("\n" if lines else "")


def _shown(unit):
    """(current, desired) as the diff shows them: a seam with ``diff_owned`` narrows both to what differs
    (persistence: only the files that change, not every file of the directory as context)."""
    narrow = getattr(unit.backend, "diff_owned", None)
    return narrow(unit.current, unit.desired) if narrow else (unit.current, unit.desired)


def render_once(seam, policy, unit):
    """``seam.render(policy, unit)``, computed once per policy object and unit and kept on the seam.

    The engine, persistence (the boot text of the same units) and the read-back share one rendering:
    rendering is a pure function of the frozen policy, and a 1,000-rule render costs tenths of a second.
    """
    memo = getattr(seam, "_rendered_for", None)
    if memo is None or memo[0] is not policy:
        memo = (policy, {})
        seam._rendered_for = memo
    if unit not in memo[1]:
        memo[1][unit] = seam.render(policy, unit)
    return memo[1][unit]


def _read(backend, unit, layers, policy):
    """The pre-apply read of one unit: from what the run already read of the kernel where the backend can
    take it from there (``read_shared(unit, layers, policy)``, under the same lock), else its own read."""
    shared = getattr(backend, "read_shared", None) if layers is not None else None
    tables = shared(unit, layers, policy) if shared else None
    return backend.read(unit) if tables is None else tables


def _read_units(backend, policy, layers=None):
    units = []
    for unit in backend.units(policy):
        tables = _read(backend, unit, layers, policy)
        units.append(_Unit(backend, policy, unit, tables, backend.owned(tables, policy, unit),
                           render_once(backend, policy, unit)))
    return units


class Standby(object):
    """A netfilter backend the run needs only to clean up after a switch (``converge``'s other backends).

    ``make() -> backend or None`` builds it (None: not usable here); ``holds(layers) -> bool`` says, from
    what the run reads of the kernel under the lock anyway (``shadowing.Layers``), whether it can hold
    anything at all. Only then is it made, its module imported and its units read: on most hosts the
    other backend holds nothing, and its code is a tenth of a second of compiling on every run.
    """

    def __init__(self, name, make, holds):
        self.name = name
        self.make = make
        self.holds = holds

    def ready(self, layers):
        """The backend, or None when the kernel holds nothing it could own (or it is not usable here)."""
        if layers is not None and not self.holds(layers):
            return None
        return self.make()


def for_backend(policy, name):
    """``policy`` as backend ``name`` renders it (``Policy.for_backend``; a policy without variants as is)."""
    select = getattr(policy, "for_backend", None)
    return select(name) if select else policy


def shadowed_by(policy, backend, layers, fail_on_shadowing=False):
    """Warnings about other netfilter layers that can drop what ``policy`` accepts (see ``shadowing``).

    Raises NetconfineError (field ``fail_on_shadowing``) instead when ``fail_on_shadowing`` is set.
    """
    check = getattr(backend, "shadows", None)
    if layers is None or check is None or not shadowing.means_to_allow(policy):
        return []
    warnings = check(policy, layers)
    if warnings and fail_on_shadowing:
        raise NetconfineError(
            "other netfilter layers can drop what this task accepts, and fail_on_shadowing is set; nothing was "
            "changed:\n- %s" % "\n- ".join(warnings), "fail_on_shadowing", shadowing=warnings)
    return warnings


def converge(policy, backends, check_mode=False, lock_timeout=60, states=(), layers=None, fail_on_shadowing=False,
             committed=None):
    """Bring what ``policy`` owns to its declared state. Returns the result dict.

    ``committed``: a list that receives the applied units of a successful run, which
    :func:`roll_back` can take back later (``rollback``'s confirm-or-roll-back).

    ``backends``: netfilter backends, the one to converge with first (the others, backends or
    :class:`Standby`, clean up after a backend switch); ``states``: seams for ``policy.resources`` (see
    the module docstring).
    ``layers`` (a ``shadowing.Layers``) lets the first backend report, in ``warnings``, the layers beside it
    that can still drop what the policy accepts; ``fail_on_shadowing`` fails instead, before applying.
    """
    with host_lock(lock_timeout):
        warnings = shadowed_by(for_backend(policy, backends[0].name), backends[0], layers, fail_on_shadowing)
        netfilter = []
        backends = [b.ready(layers) if isinstance(b, Standby) else b for b in backends]
        backends = [b for b in backends if b is not None]
        for index, backend in enumerate(backends):
            wanted = for_backend(policy, backend.name)
            # the other backends only clean up after a switch: they get the policy marked absent
            netfilter += _read_units(backend, wanted if index == 0 else dataclasses.replace(wanted, present=False),
                                     layers)
        # a state that judges every backend's rules (netns_netfilter.HostPorts) sees the reads above instead
        # of reading the kernel again
        for state in states:
            see = getattr(state, "see_netfilter", None)
            if see:
                see([(u.backend, u.unit, u.tables) for u in netfilter])
        # states get the form of the backend that converges (e.g. ebtables for iptables, none for nftables)
        stateful = [u for state in states for u in _read_units(state, for_backend(policy, backends[0].name))]
        units = stateful + netfilter if policy.present else netfilter + stateful[::-1]
        # what rendered/scripts list: kernel state; a state marked internal (persisted files) is in the diff only
        shown = set([backends[0]] + [s for s in states if not getattr(s, "internal", False)])
        pending = [u for u in units if u.current != u.desired]
        for u in pending:
            u.script = u.backend.script(u.tables, u.current, u.desired)
        result = {
            "changed": bool(pending),
            "backend": backends[0].name,
            "diff": {
                "before": "".join("# %s\n%s" % (u.label, owned_text(_shown(u)[0])) for u in pending),
                "after": "".join("# %s\n%s" % (u.label, owned_text(_shown(u)[1])) for u in pending),
            },
            "rendered": dict((u.label, owned_text(u.desired)) for u in units if u.backend in shown),
            "scripts": dict((u.label, u.script) for u in pending if u.backend in shown or u.backend in backends),
        }
        if warnings:
            result["warnings"] = warnings
        if check_mode or not pending:
            return result
        applied = []
        try:
            for u in pending:
                applied.append(u)
                u.backend.apply(u.unit, u.script)
            for u in pending:
                tables = u.backend.read(u.unit)
                after = u.backend.owned(tables, u.policy, u.unit)
                if after != u.desired and not _moved_by_others(u, tables, after):
                    raise NotConverged(
                        "did not converge: after applying, %s holds\n%s\ninstead of\n%s"
                        % (u.label, owned_text(after), owned_text(u.desired)), "backend")
        except Exception as exc:
            rollback_errors = roll_back(applied)
            if isinstance(exc, NetconfineError):
                exc.details["rolled_back"] = [u.label for u in applied]
                exc.details["rollback_errors"] = rollback_errors
            raise
        if committed is not None:
            committed.extend(applied)
        return result


def _moved_by_others(u, tables, after):
    """Whether the read-back differs only because another tool changed the order after our commit.

    Docker, kube-proxy and firewalld (re-)insert their rules at the top of built-in chains at any time:
    one that lands between our apply and our read-back puts our "first" jump second. That run did
    converge (the next run reports the drift and moves the jump back); failing it would roll back a
    good change. What the task owns outright is still compared strictly (the backend decides, from the
    pre-apply read, the read-back and the script it committed). Backends without the check compare
    strictly.
    """
    check = getattr(u.backend, "moved_by_others", None)
    return bool(check and check(u.unit, u.tables, tables, after, u.desired, u.script))


def roll_back(applied):
    """Put every applied unit back to what it held before this run. Returns the errors (text)."""
    errors = []
    for u in reversed(applied):
        try:
            tables = u.backend.read(u.unit)
            now = u.backend.owned(tables, u.policy, u.unit)
            snapshot = getattr(u.backend, "snapshot_jumps", None)
            script = u.backend.script(tables, now, u.current,
                                      restore_jumps=snapshot(u.tables, u.current) if snapshot else None)
            if script:
                u.backend.apply(u.unit, script)
        except Exception as exc:  # report, keep restoring the others
            errors.append("%s: %s" % (u.label, exc))
    return errors
