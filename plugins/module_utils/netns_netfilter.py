# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Netfilter rules inside a named network namespace (``netns_model.InsideNetns``), as an engine state.

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

``HostPorts`` is a state that owns nothing: under the engine's lock, before
anything is applied, it looks at the DNAT rules that *other* netconfine tasks
hook into ``nat PREROUTING`` (the kernel's copy, as the engine has just read
it through every usable backend: ``see_netfilter``) and refuses a forward of
this task on a host port one of them already forwards, naming the field.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import json
import os
import re

from ansible_collections.paranoid.netconfine.plugins.module_utils import model, nat_render, netns_model, nft_render
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError
from ansible_collections.paranoid.netconfine.plugins.module_utils.iptables_backend import _TAG_OF, reachable
from ansible_collections.paranoid.netconfine.plugins.module_utils.nft_backend import TAG_PREFIX, _tag, _targets

NETNS_DIR = "/run/netns"


def inner(policy):
    """The task's ``netns_model.InsideNetns`` resource, or None."""
    return next((r for r in policy.resources if isinstance(r, netns_model.InsideNetns)), None)


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


_IPT_JUMP = re.compile(r" -[jg] (\S+)$")


def iptables_forwards(tables, family):
    """{task: [forward, ...]} of the tasks hooked into nat PREROUTING of one ``iptables-save``
    (``nat_render.iptables_forward`` tuples, from the task's chains and the chains they jump to)."""
    table = tables.get("nat")
    out = {}
    if table is None:
        return out
    for line in table.chain_rules("PREROUTING"):
        tag, jump = _TAG_OF.search(line), _IPT_JUMP.search(line)
        if not tag or not jump:
            continue
        for chain in sorted(reachable(table, [jump.group(1)])):
            for rule in table.chain_rules(chain):
                found = nat_render.iptables_forward(rule, family)
                if found:
                    out.setdefault(tag.group(1), []).append(found)
    return out


def nft_forwards(tables, table_name=nft_render.TABLE):
    """The same for our nftables table: the tagged jumps of its ``nat`` base chains at ``prerouting``."""
    table = tables.get(table_name)
    out = {}
    if table is None:
        return out
    for base in table.chains:
        if not base.definition or base.definition[:2] != ("nat", "prerouting"):
            continue
        for text in base.rules:
            rule = json.loads(text)
            tag = _tag(rule)
            if tag is None:
                continue
            targets = _targets(rule)
            for chain in table.chains:
                if chain.definition is None and any(chain.name == t or chain.name.startswith(t + ".")
                                                    for t in targets):
                    for body in chain.rules:
                        found = nat_render.nft_forward(json.loads(body))
                        if found:
                            out.setdefault(tag[len(TAG_PREFIX):], []).append(found)
    return out


def _clash(mine, theirs):
    family, protocol, port, address = mine
    other_family, other_protocol, ranges, other_address = theirs
    if (family, protocol) != (other_family, other_protocol) or not any(lo <= port <= hi for lo, hi in ranges):
        return False
    return address is None or other_address is None or address in other_address


class HostPorts:
    """Refuses a forward on a host port that another task's DNAT already takes (see the module docstring).

    ``claims``: ((field, family, protocol, host port, host address or None), ...) of this task;
    ``task``: this task's policy name (its own rules are no conflict: a re-run converges them). The rules
    are the engine's read of every usable netfilter backend of the host (a task on the other one forwards
    too), handed over by ``see_netfilter`` before ``read``.
    """

    name = "host-ports"
    offline_units = ()
    internal = True       # owns nothing: never in rendered, scripts or the diff

    def __init__(self, claims, task):
        self.claims = tuple(claims)
        self.task = task
        self._seen = ()

    def units(self, policy):
        return ("forwards",) if policy.present and self.claims else ()

    def see_netfilter(self, reads):
        """``reads``: ((backend, unit, tables), ...), what the engine read of each backend's units."""
        self._seen = tuple(reads)

    def read(self, unit):
        for backend, backend_unit, tables in self._seen:
            if backend.name == "iptables":
                found = iptables_forwards(tables, backend_unit)
            else:
                found = nft_forwards(tables, getattr(backend, "table", nft_render.TABLE))
            self._check(found, backend.name)
        return {}

    def _check(self, found, backend_name):
        for task, forwards in sorted(found.items()):
            if task == self.task:
                continue
            for field, family, protocol, port, address in self.claims:
                theirs = next((f for f in forwards if _clash((family, protocol, port, address), f)), None)
                if theirs is not None:
                    raise NetconfineError(
                        "%s host port %d%s is already forwarded by task %s (%s, its nat PREROUTING DNAT%s); "
                        "choose another host_port or host_address" % (
                            protocol, port, " on %s" % address if address else "", task, backend_name,
                            " to %s" % theirs[3] if theirs[3] else ""), field)

    def owned(self, read, policy, unit):
        return {}

    def render(self, policy, unit):
        return {}

    def script(self, read, current, desired, restore_jumps=None):
        return ""

    def apply(self, unit, script):
        return None


def claims_of(params):
    """((field, family, protocol, host port, host address or None), ...) of ``port_forwards``
    (already checked by ``netns_model.build_policy``)."""
    families = [f for f, key in ((4, "subnet"), (6, "subnet6")) if params.get(key) is not None]
    out = []
    for index, raw in enumerate(params.get("port_forwards") or []):
        address = ipaddress.ip_address(u"%s" % raw["host_address"]) if raw.get("host_address") else None
        for family in ([address.version] if address else families):
            out.append(("port_forwards[%d].host_port" % index, family, raw.get("protocol") or "tcp",
                        raw["host_port"], address))
    return out


def make_host_ports(module, run):
    """Factory for ``netfilter_task.run_module(..., states=(make_host_ports, ...))``."""
    params = module.params
    claims = claims_of(params) if params["state"] == "present" else ()
    return HostPorts(claims, "netns-%s" % params["name"])


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
