# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""L2 anti-spoofing of bridge ports through ebtables (ether types, MAC and ARP), behind the engine's seam.

Private to the paranoid.netconfine collection. A *state* for ``engine.converge(...,
states=[EbtablesState(...)])`` that renders the policy's ``bridge_model.EtherFilter`` resource as
the lines ``ebtables-save`` prints (ebtables 1.8, nf_tables variant) and applies them with one
``ebtables-restore --noflush`` (one transaction for the table). It is the iptables backend's
reader and script writer pointed at ebtables: whole chains of ours (``NC-``), one untagged jump
each from FORWARD and INPUT (ebtables has no comment match: the jump is known by its target),
never a foreign rule flushed or reordered.

Chains of ours have policy RETURN, so a frame that passes the checks goes on to other rules.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.paranoid.netconfine.plugins.module_utils import bridge_model, model
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError
from ansible_collections.paranoid.netconfine.plugins.module_utils.iptables_backend import (
    IptablesBackend, Owned, parse_save)
from ansible_collections.paranoid.netconfine.plugins.module_utils.iptables_render import quote

UNIT = "bridge"
TABLE = "filter"
HOOKS = ("FORWARD", "INPUT")
LOG_LEVEL = "notice"
ALLOWED = ("IPv4", "IPv6")          # and ARP, checked further with a MAC: what a guest may send at all


def ether_filter(policy):
    """The policy's ``bridge_model.EtherFilter`` resource, or None."""
    found = [r for r in policy.resources if isinstance(r, bridge_model.EtherFilter)]
    return found[-1] if found else None


def _limit(limit):
    return "--limit %d/%s --limit-burst %d" % (limit.rate, limit.unit, limit.burst)


def render_guard(guard):
    """One port's chains as ebtables-save prints them: (guard chain, lines), (its log-and-drop chain, lines).

    A guest may send IPv4, IPv6 and ARP, untagged: anything else (802.1Q/802.1ad-tagged frames, which
    br_netfilter shows to no physdev rule unless bridge-nf-filter-vlan-tagged is set; PPPoE, LLC, ...) is
    logged and dropped. The log-then-drop pair sits in a chain of its own: ebtables-save (1.8.9, nf_tables)
    misprints a rule that has both an ARP match and the log watcher (or a limit), so no rule here combines them.
    """
    chain, drop = guard.chain, guard.drop_chain
    lines = []
    if guard.mac:
        lines.append("-A %s -s ! %s -j %s" % (chain, guard.mac, drop))
    lines += ["-A %s -p %s -j RETURN" % (chain, proto) for proto in ALLOWED]
    if guard.mac:
        lines.append("-A %s -p ARP --arp-mac-src ! %s -j %s" % (chain, guard.mac, drop))
        for net in guard.arp_sources:
            lines.append("-A %s -p ARP --arp-ip-src %s -j RETURN" % (
                chain, net.network_address if net.prefixlen == 32 else net))
        lines.append("-A %s -p ARP --arp-ip-src 0.0.0.0 -j RETURN" % chain)
    else:
        lines.append("-A %s -p ARP -j RETURN" % chain)
    lines.append("-A %s -j %s" % (chain, drop))
    log = "--log-level %s --log-prefix %s --log-ip --log-arp" % (LOG_LEVEL, quote(guard.log_prefix))
    drops = ("-A %s %s %s -j CONTINUE" % (drop, _limit(guard.limit), log), "-A %s -j DROP" % drop)
    return (chain, tuple(lines)), (drop, drops)


def render(ether):
    """Owned state of the table for one EtherFilter (empty when it has no guards)."""
    if ether is None or not ether.guards:
        return {}
    chains = [(ether.chain, tuple("-A %s -i %s -j %s" % (ether.chain, g.port, g.chain) for g in ether.guards))]
    chains += [pair for g in ether.guards for pair in render_guard(g)]
    jumps = [(hook, "-A %s -j %s" % (hook, ether.chain), "first") for hook in HOOKS]
    return {TABLE: Owned(TABLE, tuple(sorted(chains)), tuple(sorted(jumps)))}


class EbtablesState(IptablesBackend):
    # pylint: disable=arguments-renamed
    """Reader and script writer for ebtables (the iptables backend's, with ebtables' syntax).

    Its one unit, ``bridge``, stands where the iptables backend has an IP family.
    """

    name = "ebtables"
    offline_units = (UNIT,)
    persistent = True          # persistence.PersistState keeps its restore text for boot (ebtables-restore)
    CHAIN_DECL = ":%s RETURN"

    def __init__(self, run, save, restore, nft=None):
        """``run(argv, data=None) -> (rc, out, err)``; ``save``/``restore``: paths of ebtables-save/-restore or None;
        ``nft``: the nft binary's path or None (ebtables-nft: a ``bridge filter`` table only we made goes
        again with our last chain, as the iptables backend's tables do)."""
        IptablesBackend.__init__(self, run, {UNIT: (save, restore) if save and restore else None}, nft=nft)

    def units(self, policy):
        ether = ether_filter(policy)
        if ether is None:
            return ()
        if not self.bins[UNIT]:
            if policy.present and ether.guards:
                raise NetconfineError("the iptables form needs ebtables-save and ebtables-restore (Debian package "
                                      "ebtables) to drop what a guest may not send (VLAN-tagged frames and every "
                                      "ether type but IPv4, IPv6 and ARP pass no physdev rule) and, with a mac, "
                                      "for L2 anti-spoofing; install it or use backend nftables",
                                      ether.guards[0].field)
            return ()
        return (UNIT,)

    @staticmethod
    def parse(out):
        # ebtables-save ends a table with a comment, not COMMIT
        return parse_save(out.replace("\n# Completed", "\nCOMMIT\n# Completed"))

    def restore_argv(self, unit):
        return [self.bins[unit][1], "--noflush"]

    def _owner(self, policy):
        """The policy as the iptables reader sees it: our dispatch chain, hooked from FORWARD and INPUT."""
        ether = ether_filter(policy)
        chains = tuple(model.Chain(TABLE, ether.chain, hook=model.Hook(hook)) for hook in HOOKS)
        chains += tuple(model.Chain(TABLE, name) for g in ether.guards for name in (g.chain, g.drop_chain))
        return model.Policy(policy.name, chains, policy.families, policy.present)

    def render(self, policy, unit):
        return render(ether_filter(policy)) if policy.present else {}

    def owned(self, tables, policy, unit):
        return IptablesBackend.owned(self, tables, self._owner(policy), unit)


def ebtables_state(module, run):
    """Factory for ``netfilter_task.run_module(..., states=...)``."""
    return EbtablesState(run, module.get_bin_path("ebtables-save"), module.get_bin_path("ebtables-restore"),
                         nft=module.get_bin_path("nft"))
