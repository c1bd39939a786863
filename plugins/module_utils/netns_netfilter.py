# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Netfilter rules inside a named network namespace (``model.InsideNetns``), as an engine state.

Private to the paranoid.netconfine collection. The backend seam and the state
seam are the same contract, so this state is a netfilter backend (the one the
task converges with on the host) whose commands run in the namespace
(``ip netns exec NAME``) and which is handed the inner policy instead of the
task's own. Read, compare, one transaction, read back and rollback are the
engine's, as for every other unit.

A namespace that does not exist yet holds no rules: ``read`` returns nothing,
and the namespace is created by ``netns_links`` (an earlier state) before this
one is applied. When the task is absent, states go in reverse order: these
rules go before the namespace.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.paranoid.netconfine.plugins.module_utils import model

NETNS_DIR = "/run/netns"


def inner(policy):
    """The task's ``model.InsideNetns`` resource, or None."""
    return next((r for r in policy.resources if isinstance(r, model.InsideNetns)), None)


class InsideNetns:
    """``backend`` (built over a runner that enters the namespace) converging the inner policy."""

    def __init__(self, backend, namespace, netns_dir=NETNS_DIR):
        self.backend = backend
        self.namespace = namespace
        self.netns_dir = netns_dir
        self.name = "%s@%s" % (backend.name, namespace)
        self.offline_units = getattr(backend, "offline_units", (4, 6))

    @staticmethod
    def _inner(policy):
        found = inner(policy)
        return found.policy if found is not None else model.Policy(policy.name, present=False)

    def _exists(self):
        return os.path.exists(os.path.join(self.netns_dir, self.namespace))

    def units(self, policy):
        return self.backend.units(self._inner(policy)) if inner(policy) is not None else ()

    def read(self, unit):
        return self.backend.read(unit) if self._exists() else {}

    def owned(self, read, policy, unit):
        return self.backend.owned(read, self._inner(policy), unit)

    def render(self, policy, unit):
        return self.backend.render(self._inner(policy), unit)

    def script(self, read, current, desired, restore_jumps=None):
        return self.backend.script(read, current, desired, restore_jumps=restore_jumps)

    def apply(self, unit, script):
        if not self._exists():
            return        # the namespace is gone (its unit's ExecStop deleted it) and its rules with it
        self.backend.apply(unit, script)

    def snapshot_jumps(self, read, current):
        snapshot = getattr(self.backend, "snapshot_jumps", None)
        return snapshot(read, current) if snapshot else None


def entering(run, ip, namespace):
    """A runner like ``run`` whose commands run inside ``namespace`` (``ip netns exec``)."""
    def run_inside(argv, data=None):
        return run([ip, "netns", "exec", namespace] + list(argv), data=data)
    return run_inside


def make_state(module, run):
    """Factory for ``netfilter_task.run_module(..., states=(..., make_state))``: the task's backend, inside ``name``."""
    from ansible_collections.paranoid.netconfine.plugins.module_utils import netfilter_task

    wanted = module.params["backend"]
    if wanted == "auto":
        if module.params["state"] == "rendered":
            # what auto would converge with, judged without root (as netfilter_task.run_module does)
            wanted = next((n for n in netfilter_task.AUTO_ORDER
                           if netfilter_task._installed(netfilter_task.BACKENDS[n](module, run))), "iptables")
        else:
            wanted = netfilter_task.choose_backends(module, run)[0].name
    namespace = module.params["name"]
    backend = netfilter_task.BACKENDS[wanted](module, entering(run, module.get_bin_path("ip") or "ip", namespace))
    return InsideNetns(backend, namespace)
