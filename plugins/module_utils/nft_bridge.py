# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""L2/L3 anti-spoofing of bridge ports in ``table bridge netconfine``, behind the engine's seam.

Private to the paranoid.netconfine collection. A *state* for ``engine.converge(...,
states=[NftBridgeState(...)])`` that renders the policy's ``bridge_model.BridgeGuard`` resource as the
JSON ``nft -j list table bridge netconfine`` prints and applies it in one ``nft -j -f`` batch.
It is the nftables backend's reader and script writer (``nft_backend.NftablesBackend``) pointed
at our bridge table: base chains holding only tagged jumps (``bridge_prerouting`` and
``bridge_forward``, priority filter - 1 of the bridge family, before br_netfilter), one chain per
task and its helpers (``<chain>.forward``, ``<chain>.spoof4-<guest>`` ...: every chain named
``<chain>.*`` is the task's), nothing outside our table written.

The task's prerouting chain checks every frame that enters the bridge, with one lookup per check
whatever the number of guests (sets of ``iifname . <address>`` concatenations and verdict maps
keyed by ``iifname``)::

    meta mark set iifname map { "uml-conn0" : 0x00000100, ... }      # guests with a service policy
    iifname . ether saddr != { "uml-conn0" . 52:54:00:00:00:21, ... } iifname vmap { ... : goto ...l2-dns }
    ether type vmap { arp : goto <chain>.arp, ip : goto <chain>.ip, ip6 : goto <chain>.ip6 }
    ether type != { arp, ip, ip6 } iifname vmap { "uml-conn0" : goto ...l2-dns, ... }

so a frame meets only the checks of its own protocol (an IPv4 frame: the dispatch, then two rules):

    <chain>.arp:  iifname . arp saddr ether != { ... } iifname vmap { ... }         # ARP sender MAC
                  iifname . arp saddr ip != { "uml-conn0" . 198.51.100.21, "uml-conn0" . 0.0.0.0, ... } ...
    <chain>.ip:   udp sport 67 iifname vmap { ... : goto ...rogue-dns }              # DHCP server replies
                  iifname . ip saddr != { ... } iifname vmap { ... : goto ...spoof4-dns }
    <chain>.ip6:  udp sport 547 iifname vmap { ... }                                 # DHCPv6 server replies
                  icmpv6 type { nd-router-advert, nd-redirect } iifname vmap { ... } # router advertisements
                  ip6 saddr fe80::/64 return                                         # link-local
                  ip6 saddr :: icmpv6 type { nd-router-solicit, nd-neighbor-solicit, mld2-listener-report } return
                  iifname . ip6 saddr != { ... } iifname vmap { ... : goto ...spoof6-dns }

A guest may send IPv4, IPv6 and ARP, untagged, and nothing else (as libvirt's clean-traffic with
no-other-l2-traffic): a frame of any other ether type from a guest's port, which no check above could
read, goes to the guest's l2 chain. That includes VLAN-tagged frames (8021q, 8021ad: the kernel's
payload expression shows the tag's type also when the tag is kept out of the frame, in the skb's
metadata), which would otherwise carry any source address past the L3 checks here and, on the iptables
backend, past the physdev rules (br_netfilter passes them to iptables only with
bridge-nf-filter-vlan-tagged). Frames from other ports (the uplink) are not checked.

Each ``goto`` chain logs (rate-limited, prefix naming the guest) and then drops, both counted.

The service policy needs connection tracking, which the bridge family only has with
``nf_conntrack_bridge`` (not built on every kernel). It has two forms (``BridgeGuard.form``),
chosen per host by :func:`choose_form`:

``conntrack`` (the kernel has bridge conntrack): everything stays in this table. The per-guest
policy chains are rendered by ``nft_render`` from the same model rules as the other forms
(``<chain>.from-G``, ``.to-G``, ``.hostin-G``, ``.hostout-G``: established/related first, the
services, log and drop), dispatched by port, IP frames only::

    <chain>.forward  (bridge_forward)  meta protocol { ip, ip6 } iifname vmap { "uml-conn0" : jump <chain>.from-dns }
                                       meta protocol { ip, ip6 } oifname vmap { "uml-conn0" : jump <chain>.to-dns }
                                       meta protocol { ip, ip6 } iifname { "uml-conn0" } accept
    <chain>.input    (bridge_input)    meta protocol { ip, ip6 } iifname vmap { ... : jump <chain>.hostin-dns }
    <chain>.output   (bridge_output)   meta protocol { ip, ip6 } oifname vmap { ... : jump <chain>.hostout-dns }

``marks`` (elsewhere): filtered in ``table inet netconfine`` (the nftables backend, with
br_netfilter), where bridged packets show the bridge as ``iifname``/``oifname``: the port is
carried in the packet mark, bits 8-15 set here from the ingress port
(``nft_render.MARK_IN_MASK``), bits 16-23 set in ``bridge_forward`` from the egress port
(``MARK_OUT_MASK``), before br_netfilter hands the packet to the IP hooks.

Every chain of either form is named ``<chain>.*``, so a run that switches forms removes the other
form's bridge chains here (and the inet backend the marks form's chains: ``Policy.retired``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.paranoid.netconfine.plugins.module_utils import bridge_model, model, nft_render
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError
from ansible_collections.paranoid.netconfine.plugins.module_utils.nft_backend import IN_ORDER, NftablesBackend, _freeze
from ansible_collections.paranoid.netconfine.plugins.module_utils.nft_probe import PROBE_TABLE, kernel_refuses
from ansible_collections.paranoid.netconfine.plugins.module_utils.nft_render import (
    COUNTER, MARK_OUT_MASK, canonical, match, meta, network, normalise, payload)

UNIT = "bridge"
FAMILY, NAME = "bridge", "netconfine"
FORMS = ("auto", "conntrack", "marks")
# bridge conntrack: expression init takes nf_ct_netns_get(net, NFPROTO_BRIDGE), which loads nf_conntrack_bridge
# where it is a module and fails ("Protocol error") where it is not built; nft -c commits nothing
CONNTRACK_PROBE = ("add table bridge {t}\nadd chain bridge {t} probe\n"
                   "add rule bridge {t} probe ct state established,related accept\n").format(t=PROBE_TABLE)
# the marks form's inet table (kernels built with the bridge family only, e.g. User-Mode-Linux's, refuse it)
INET_PROBE = "add table inet %s\n" % PROBE_TABLE
PROTOCOL_OF_FAMILY = {4: "ip", 6: "ip6"}
PROTOCOL_OF_NFPROTO = {"ipv4": "ip", "ipv6": "ip6"}
# ICMPv6 a guest may send from :: (duplicate address detection, RFC 4862 5.4; MLDv2 RFC 3810 5.2.13)
UNSPECIFIED_TYPES = ["nd-router-solicit", "nd-neighbor-solicit", "mld2-listener-report"]
ROUTER_TYPES = ["nd-router-advert", "nd-redirect"]
LINK_LOCAL = {"prefix": {"addr": "fe80::", "len": 64}}
ETHER_TYPES = ("arp", "ip", "ip6")       # what a guest may send at all (untagged); everything else: l2 chain


def bridge_guard(policy):
    """The policy's ``bridge_model.BridgeGuard`` resource, or None."""
    found = [r for r in policy.resources if isinstance(r, bridge_model.BridgeGuard)]
    return found[-1] if found else None


def _iifname():
    return meta("iifname")


def _elements(pairs):
    return {"set": [{"concat": list(p)} for p in pairs]}


def _to(ports, kind):
    """``iifname vmap { port : goto <port's kind chain> }``."""
    return {"vmap": {"key": _iifname(), "data": {"set": [[p.port, {"goto": {"target": getattr(p, kind)}}]
                                                         for p in ports]}}}


def _unless(left, pairs, ports, kind):
    """A frame of ``ports`` whose ``iifname . left`` is none of ``pairs`` goes to its ``kind`` chain."""
    if not ports:
        return []
    if not pairs:
        return [_rule([_to(ports, kind)])]
    return [_rule([match({"concat": [_iifname(), left]}, _elements(pairs), "!="), _to(ports, kind)])]


def _rule(expr, comment=None):
    rule = {"expr": expr}
    if comment is not None:
        rule["comment"] = comment
    return normalise(rule)


def _addr(net):
    return network(net)


def render_rules(guard):
    """The task's prerouting chain, its forward chain and helper chains: [(name, [rule])]."""
    ports = guard.ports
    rules = []
    marked = [p for p in ports if p.mark]
    if marked:
        rules.append(_rule([{"mangle": {"key": meta("mark"), "value": {"map": {
            "key": _iifname(), "data": {"set": [[p.port, p.mark << 8] for p in marked]}}}}}]))
    with_mac = [p for p in ports if p.mac]
    macs = [(p.port, p.mac) for p in with_mac]
    rules += _unless(payload("ether", "saddr"), macs, with_mac, "l2_chain")
    arp = _unless(payload("arp", "saddr ether"), macs, with_mac, "l2_chain")
    pairs = [(p.port, _addr(n)) for p in with_mac for n in p.addresses if n.version == 4]
    arp += _unless(payload("arp", "saddr ip"), pairs + [(p.port, "0.0.0.0") for p in with_mac], with_mac,
                   "l2_chain")
    dhcp = [p for p in ports if "dhcp" in p.rogue]
    ra = [p for p in ports if "ra" in p.rogue]
    ip4, ip6 = [], []
    if 4 in guard.families:
        if dhcp:
            ip4.append(_rule([match(payload("udp", "sport"), 67), _to(dhcp, "rogue_chain")]))
        ip4 += _unless(payload("ip", "saddr"), [(p.port, _addr(n)) for p in ports for n in p.addresses
                                                if n.version == 4], ports, "spoof_chain")
    if 6 in guard.families:
        if dhcp:
            ip6.append(_rule([match(payload("udp", "sport"), 547), _to(dhcp, "rogue_chain")]))
        if ra:
            ip6.append(_rule([match(payload("icmpv6", "type"), {"set": ROUTER_TYPES}), _to(ra, "rogue_chain")]))
        ip6.append(_rule([match(payload("ip6", "saddr"), LINK_LOCAL), {"return": None}]))
        ip6.append(_rule([match(payload("ip6", "saddr"), "::"),
                          match(payload("icmpv6", "type"), {"set": UNSPECIFIED_TYPES}), {"return": None}]))
        ip6 += _unless(payload("ip6", "saddr"), [(p.port, _addr(n)) for p in ports for n in p.addresses
                                                 if n.version == 6], ports, "spoof6_chain")
    # one ether type dispatch, so a frame is checked only by the rules of its own protocol (goto: it is the
    # last check such a frame meets); what a guest may not send at all (VLAN-tagged, any other type) goes to l2
    by_type = [(ether, "%s.%s" % (guard.chain, ether), checks)
               for ether, checks in (("arp", arp), ("ip", ip4), ("ip6", ip6)) if checks]
    if by_type:
        rules.append(_rule([{"vmap": {"key": payload("ether", "type"), "data": {"set": [
            [ether, {"goto": {"target": name}}] for ether, name, _checks in by_type]}}}]))
    rules.append(_rule([match(payload("ether", "type"), {"set": list(ETHER_TYPES)}, "!="), _to(ports, "l2_chain")]))
    chains = [(guard.chain, rules)] + [(name, checks) for _ether, name, checks in by_type]
    if marked:
        chains.append((guard.out_chain, [_rule([{"vmap": {"key": meta("oifname"), "data": {"set": [
            [p.port, {"jump": {"target": p.out_chain}}] for p in marked]}}}])]))
    chains += _service_chains(guard)
    limit = nft_render.MATCHES[model.Limit](guard.limit, None)
    for p in ports:
        used = ((["spoof_chain"] if 4 in guard.families else []) + (["spoof6_chain"] if 6 in guard.families else [])
                + (["rogue_chain"] if p.rogue else []) + ["l2_chain"])
        for kind in used:
            word = {"spoof_chain": "spoof", "spoof6_chain": "spoof", "rogue_chain": "rogue", "l2_chain": "l2"}[kind]
            chains.append((getattr(p, kind), [
                _rule(limit + [COUNTER, {"log": {"prefix": "%s%s %s: " % (p.log_prefix, word, p.name)}}]),
                _rule([COUNTER, {"drop": None}])]))
        if p.mark:
            out = p.mark << 16
            chains.append((p.out_chain, [_rule([{"mangle": {"key": meta("mark"), "value": {"|": [
                {"&": [meta("mark"), (0xffffffff & ~MARK_OUT_MASK) | out]}, out]}}}])]))
    return chains


# ---------------------------------------------------------------- the conntrack form's service policy

def policy_ports(guard):
    """The ports whose guest has a service policy in the conntrack form."""
    return [p for p in guard.ports if p.services]


def _ip_frames(guard):
    """``meta protocol`` of the IP families the policy covers (``meta nfproto`` means nothing in a bridge table)."""
    protocols = [PROTOCOL_OF_FAMILY[f] for f in guard.families]
    return match(meta("protocol"), protocols[0] if len(protocols) == 1 else {"set": protocols})


def _dispatch(guard, key, kind):
    """``meta protocol ... <key> vmap { port : jump <port's kind chain> }``."""
    return _rule([_ip_frames(guard), {"vmap": {"key": meta(key), "data": {"set": [
        [p.port, {"jump": {"target": dict(p.services)[kind]}}] for p in policy_ports(guard)]}}}])


def _bridge_expr(expr):
    """An inet-table expression as the bridge family needs it: ``meta nfproto`` is ``meta protocol`` there."""
    m = expr.get("match") if isinstance(expr, dict) else None
    if m and m["left"] == meta("nfproto"):
        return match(meta("protocol"), PROTOCOL_OF_NFPROTO[m["right"]], m["op"])
    return expr


def _service_chains(guard):
    """The conntrack form's dispatch chains (``.forward``, ``.input``, ``.output``) and per-guest policy chains,
    these rendered by nft_render from the model rules: [(name, [rule])]. None in the marks form."""
    ports = policy_ports(guard)
    if guard.form != "conntrack" or not ports:
        return []
    chains = [
        (guard.out_chain, [_dispatch(guard, "iifname", "from"), _dispatch(guard, "oifname", "to"),
                           _rule([_ip_frames(guard), match(_iifname(), {"set": [p.port for p in ports]}),
                                  {"accept": None}])]),
        (guard.chain + ".input", [_dispatch(guard, "iifname", "hostin")]),
        (guard.chain + ".output", [_dispatch(guard, "oifname", "hostout")]),
    ]
    for chain in guard.services:
        for name, rules in nft_render.render_chain(chain):
            chains.append((name, [normalise(dict(r, expr=[_bridge_expr(e) for e in r["expr"]])) for r in rules]))
    return chains


def choose_form(module, run, policy, backend, offline=False):
    """The service policy's form on this host: (policy in that form, {"bridge_form": form}) on nftables.

    ``bridge_form: auto`` asks the kernel (``nft -c``, nothing committed) for a ``ct state`` rule in a
    throwaway bridge table, only when some guest has a service policy: ``conntrack`` where it takes it,
    else ``marks`` (checked the same way: the inet table must be possible). A forced form the kernel
    cannot hold fails here, naming what is missing, before anything is read or applied. No guest with
    a policy: no probe, ``none`` (both forms are the same anti-spoofing table). ``offline``
    (``state: rendered``, no root): no probe; ``auto`` renders the marks form.
    """
    wanted = module.params.get("bridge_form") or "auto"
    if backend != "nftables":
        if wanted != "auto":
            raise NetconfineError("bridge_form %s is a form of the nftables backend; this task's backend is %s"
                                  % (wanted, backend), "bridge_form")
        return policy, {}
    if not policy.present:
        return policy, {}
    guard = bridge_guard(policy.for_backend("nftables conntrack"))
    count = len(policy_ports(guard)) if guard else 0
    if offline:
        form = "marks" if wanted == "auto" else wanted
    elif not count:
        return policy, {"bridge_form": "none" if wanted == "auto" else wanted}
    else:
        nft = module.get_bin_path("nft")
        if not nft:
            raise NetconfineError("the nftables form needs nft (Debian package nftables)", "backend")
        form = _form_on_kernel(run, nft, wanted)
    if form == "marks" and count > bridge_model.MARK_MAX:
        raise bridge_model.too_many_for_marks(count)
    return policy.with_form("nftables", form), {"bridge_form": form}


def _form_on_kernel(run, nft, wanted):
    """conntrack or marks (``wanted``: auto, conntrack, marks), as the kernel can hold it, or NetconfineError."""
    no_conntrack = None if wanted == "marks" else kernel_refuses(run, nft, CONNTRACK_PROBE)
    if wanted == "conntrack" and no_conntrack:
        raise NetconfineError(
            "bridge_form conntrack needs connection tracking in the bridge family, kernel module %s, which this "
            "kernel does not have (nft -c of a 'ct state' rule in a bridge table: %s); nothing was changed. Use "
            "bridge_form auto or marks" % (bridge_model.CONNTRACK_MODULE, no_conntrack), "bridge_form")
    if wanted != "marks" and not no_conntrack:
        return "conntrack"
    no_inet = kernel_refuses(run, nft, INET_PROBE)
    if no_inet:
        if wanted == "marks":
            raise NetconfineError(
                "bridge_form marks filters the service policy in table inet netconfine (br_netfilter), and this "
                "kernel has no nf_tables for the inet family (nft -c: %s); nothing was changed. Use bridge_form "
                "auto or conntrack" % no_inet, "bridge_form")
        why = (bridge_model.CONNTRACK_MODULE, no_conntrack, no_inet)
        raise NetconfineError(
            "this kernel can hold neither form of the service policy: no bridge connection tracking (%s: %s) "
            "and no nf_tables inet family (%s); nothing was changed" % why, "bridge_form")
    return "marks"


class NftBridgeState(NftablesBackend):
    """Reader and script writer for ``table bridge netconfine`` (the nftables backend's, another table)."""

    name = "nftables"
    offline_units = (UNIT,)
    persistent = True          # persistence.PersistState keeps its batch for boot
    table_family = FAMILY
    table_name = NAME
    table = "%s %s" % (FAMILY, NAME)

    def units(self, policy):
        guard = bridge_guard(policy)
        if guard is None:
            return ()
        if not self.nft:
            if policy.present and guard.ports:
                raise NetconfineError("the nftables form needs nft (Debian package nftables)", "backend")
            return ()
        return (UNIT,)

    @staticmethod
    def is_helper(main, name):
        return name.startswith(main + ".")

    def _owner(self, policy):
        """The policy as the nftables reader sees it: two hooked chains (their helpers are theirs)."""
        guard = bridge_guard(policy)
        chains = (model.Chain("bridge", guard.chain, hook=model.Hook("PREROUTING")),)
        if any(p.mark for p in guard.ports) or policy_ports(guard):
            chains += (model.Chain("bridge", guard.out_chain, hook=model.Hook("FORWARD")),)
        if policy_ports(guard):
            chains += (model.Chain("bridge", guard.chain + ".input", hook=model.Hook("INPUT")),
                       model.Chain("bridge", guard.chain + ".output", hook=model.Hook("OUTPUT")))
        return model.Policy(policy.name, chains, policy.families, policy.present and bool(guard.ports))

    def render(self, policy, unit):
        guard = bridge_guard(policy)
        if not policy.present or guard is None or not guard.ports:
            return {}
        owner = self._owner(policy)
        bases, chains, jumps = {}, [], []
        rendered = dict(render_rules(guard))
        for chain in owner.chains:
            if chain.name not in rendered:
                continue
            base = nft_render.base_chain(chain.table, chain.hook.builtin, chain.hook.position)
            bases[base.name] = tuple(base)
            jumps.append((base.name, canonical(nft_render.jump_rule(owner, chain)), IN_ORDER))
        chains = [(name, tuple(canonical(r) for r in rules)) for name, rules in rendered.items()]
        return _freeze(bases, {}, chains, jumps, table=self.table)

    def owned(self, tables, policy, unit):
        return NftablesBackend.owned(self, tables, self._owner(policy), unit)

    def shadows(self, policy, layers):
        return []


def nft_bridge_state(module, run):
    """Factory for ``netfilter_task.run_module(..., states=...)``."""
    return NftBridgeState(run, module.get_bin_path("nft"))
