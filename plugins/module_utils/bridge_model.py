# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build the model of a ``uml_bridge_filter`` task from its validated parameters.

Private to the paranoid.netconfine collection. One task holds every guest of one
bridging host; everything the user typed is checked here, before anything touches
the kernel, and each error names its field (``guests[1].mac``).

The filter-table form (iptables; per IP family), all chains owned by the task:

``NC-<name>-forward`` (hooked first in FORWARD)
    ``-j guard``; per guest with a service policy ``--physdev-in PORT -j from-G`` and
    ``--physdev-out PORT --physdev-is-bridged -j to-G``; then ``--physdev-in PORT -j ACCEPT``
    for those guests (a packet that passed its sender's ``from`` chain and, if the receiver
    is a guest with a policy, its ``to`` chain).
``NC-<name>-input`` (INPUT): ``-j guard``; per policy guest ``--physdev-in PORT -j hostin-G``.
``NC-<name>-output`` (OUTPUT): per policy guest and address ``-d ADDR -o BRIDGE -j hostout-G``
    (the kernel refuses ``--physdev-out`` in OUTPUT: the guest is known by its address,
    which the guard pins to its port).
``guard`` and ``guard-G``: anti-spoofing, the seed's Listing 1 (log, then drop), plus rogue
    DHCP/DHCPv6 servers and router advertisements/redirects unless allowed.
``from-G``, ``to-G``, ``hostin-G``, ``hostout-G``: established/related first, IPv6 neighbour
    discovery, the declared services, a final log and drop (the seed's Listing 2 as data).

The nftables backend has two forms (``Policy.variants`` "nftables" and "nftables conntrack",
``nft_bridge.choose_form`` picks one per host): anti-spoofing in the bridge table in both; the same
``from``/``to``/``hostin``/``hostout`` rules either in the inet table, ports known by packet marks
(``marks``), or as bridge-table chains dispatched by port (``conntrack``, ``_bridge_guard``).

Beside them, in ebtables (``ebtables_state``), ``l2-G`` for every guest: what is not IPv4, IPv6 or ARP
(802.1Q/802.1ad-tagged frames, which br_netfilter shows to no physdev rule) is logged and dropped; with
a MAC, MAC and ARP spoofing too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Optional, Tuple

from ansible_collections.paranoid.netconfine.plugins.module_utils import fields, model, sysctl_state
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError


@dataclass(frozen=True)
class EtherGuard:
    """L2 anti-spoofing of one bridge port (ebtables chain ``chain``).

    Frames entering the bridge from ``port`` must be IPv4, IPv6 or ARP (untagged: a VLAN-tagged
    frame, 802.1Q or 802.1ad, or any other ether type would pass no L3 check). With ``mac``, they
    must carry source MAC ``mac``, and ARP from it must name ``mac`` as sender hardware address and
    one of ``arp_sources`` (IPv4 networks) or 0.0.0.0 (an RFC 5227 probe) as sender IP. Everything
    else goes to ``drop_chain``: logged (``log_prefix``, rate ``limit``) and dropped. ``field`` names
    the option in errors.
    """
    chain: str
    port: str
    mac: Optional[str]
    arp_sources: Tuple[object, ...]
    log_prefix: str
    limit: model.Limit
    drop_chain: str = ""       # the guard's log-and-drop chain
    field: str = "mac"


@dataclass(frozen=True)
class BridgePort:
    """One guest's bridge port in the nftables bridge table (``nft_bridge``).

    ``addresses``: the networks the guest may use as source (both families); ``mac`` or None;
    ``mark``: the packet-mark value frames from the port get (0: no service policy, no mark);
    ``spoof_chain``/``spoof6_chain``/``rogue_chain``/``l2_chain``: its log-and-drop chains (log prefixes
    ``spoof_prefix``, ...; ``l2_chain`` also takes every frame of an ether type a guest may not send);
    ``rogue``: what it may not send (``dhcp``, ``ra``); ``services``: the conntrack form's per-guest policy
    chains of a guest with a service policy, (kind, chain name) with kind ``from``, ``to``, ``hostin``,
    ``hostout`` (empty: no policy, or the marks form).
    """
    name: str
    port: str
    addresses: Tuple[object, ...]
    mac: Optional[str]
    mark: int
    out_chain: str
    spoof_chain: str            # IPv4 (each family has its own log rate, as iptables' per-family rules)
    spoof6_chain: str
    rogue_chain: str
    l2_chain: str
    log_prefix: str
    rogue: Tuple[str, ...] = ()
    services: Tuple[Tuple[str, str], ...] = ()


@dataclass(frozen=True)
class BridgeGuard:
    """The bridge-family part of a task on the nftables backend: chain ``chain`` (hooked first from the
    bridge's prerouting) with L2/L3 anti-spoofing as set lookups over every port, chain ``out_chain``
    (hooked from the bridge's forward) marking frames to ports with a policy. ``families``: which IP
    families are checked; ``limit``: the log rate. No ports: the task owns nothing there.

    ``form``: where the service policy is filtered. ``marks``: in the inet table through br_netfilter,
    the ports carried in the packet mark (``BridgePort.mark``). ``conntrack``: here, statefully (bridge
    conntrack, ``nf_conntrack_bridge``), dispatched by port from the bridge's forward, input and output
    hooks; ``services`` are then the per-guest policy chains (``model.Chain``, named ``<chain>.*``)."""
    chain: str
    out_chain: str
    ports: Tuple[BridgePort, ...] = ()
    families: Tuple[int, ...] = model.FAMILIES
    limit: Optional[model.Limit] = None
    form: str = "marks"
    services: Tuple[object, ...] = ()


@dataclass(frozen=True)
class EtherFilter:
    """The bridge-family (ebtables) part of a task: chain ``chain`` hooked first from FORWARD and INPUT,
    dispatching to one ``EtherGuard`` per port. Handled by ``ebtables_state.EbtablesState``; with no
    guards the task owns nothing there (and what it owned is removed)."""
    chain: str
    guards: Tuple[EtherGuard, ...] = ()


FAMILY_OF = {"ipv4": (4,), "ipv6": (6,), "both": (4, 6)}
SERVICE_LISTS = ("inbound", "outbound", "host_access", "host_services")
# which address key each service list takes: who may reach the guest / where the guest may go
ADDRESS_KEY = {"inbound": "from", "host_services": "from", "outbound": "to", "host_access": "to"}
PORT_PROTOCOLS = ("tcp", "udp")
PROTOCOLS = ("tcp", "udp", "icmp", "ipv6-icmp")
LOG_PREFIX_MAX = 29          # xt_LOG / nft log prefix room (30 with the NUL)
SYS_CLASS_NET = "/sys/class/net"
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}\Z")

# ICMPv6 a guest needs to function: router solicitation, neighbour solicitation/advertisement,
# MLDv2 report (RFC 4861, RFC 3810); 134 (router advertisement) reaches guests from the router.
ND_TYPES = ("133", "134", "135", "136", "143")
# what a guest may send from the unspecified address :: during DAD (RFC 4862 5.4, RFC 3810 5.2.13)
UNSPECIFIED_TYPES = ("133", "135", "143")
LINK_LOCAL = "fe80::/64"
ROUTER_TYPES = ("134", "137")        # router advertisement, redirect: a router's job, not a guest's
DHCP_SERVER_PORT = {4: 67, 6: 547}

# short words in per-guest chain names (NC-<name>-<word>-<guest>-<hash>, 28 characters at most)
CHAIN_WORD = {"guard": "g", "from": "from", "to": "to", "hostin": "hin", "hostout": "hout"}
SYSCTL_OF_FAMILY = {4: "net/bridge/bridge-nf-call-iptables", 6: "net/bridge/bridge-nf-call-ip6tables"}

ESTABLISHED = model.Conntrack(("RELATED", "ESTABLISHED"))
ACCEPT, DROP, RETURN = model.Verdict("ACCEPT"), model.Verdict("DROP"), model.Verdict("RETURN")


def build_policy(params, sys_class_net=SYS_CLASS_NET):
    """uml_bridge_filter parameters -> model.Policy (raises NetconfineError naming the field).

    ``sys_class_net`` is where bridge membership is read (``<port>/master`` -> the bridge) when
    the state is ``present``; the namespace the module runs in decides what it shows.
    """
    name = fields.task_name(params["name"])
    families = FAMILY_OF[params.get("ip_version") or "both"]
    state = params.get("state") or "present"
    bridge = _port_name(params.get("bridge"), "bridge")
    log_prefix = params.get("log_prefix")
    log_prefix = "bridge " if log_prefix is None else fields.text(log_prefix, "log_prefix", LOG_PREFIX_MAX)
    rate, unit = fields.limit(params.get("log_limit") or "10/min", "log_limit")
    burst = 5 if params.get("log_burst") is None else params["log_burst"]
    if not 1 <= burst <= 10000:
        raise NetconfineError("must be between 1 and 10000, got %r" % burst, "log_burst")
    limit = model.Limit(rate, unit, burst)
    resolved = {}
    guests = _guests(params.get("guests") or [], log_prefix, resolved)
    if state == "present":
        _check_bridge(bridge, guests, sys_class_net)

    sysctls = tuple(sysctl_state.Sysctl(SYSCTL_OF_FAMILY[f], "1", module="br_netfilter", field="bridge") for f in families)
    # the iptables form: physdev chains, ebtables for L2. The nftables backend's two forms: the bridge table
    # (nft_bridge) holds the L2/L3 anti-spoofing in both; the service policy is in the inet table through
    # br_netfilter, ports carried in marks ("nftables", the marks form), or statefully in the bridge table
    # itself where the kernel has bridge conntrack ("nftables conntrack"; nft_bridge.choose_form decides)
    chains = _chains(name, bridge, guests, families, log_prefix, limit)
    ether = _ether_filter(name, guests, log_prefix, limit)
    iptables = (chains, sysctls + (ether, BridgeGuard(guard_chain(name), guard_chain(name) + ".forward")))
    policy_guests = [g for g in guests if g.has_policy]
    conntrack_guard = _bridge_guard(name, guests, families, log_prefix, limit, {}, conntrack=True)
    conntrack = ((), ((sysctl_state.KernelModule(CONNTRACK_MODULE, field="bridge_form"),) if policy_guests else ())
                 + (EtherFilter(ether.chain), conntrack_guard))
    marks = _marks(guests)
    if marks is None:
        # too many guests with a policy for the marks form: only the conntrack form can hold them
        # (nft_bridge.choose_form says so when the marks form is asked for)
        nftables = conntrack
    else:
        nft_chains = _chains(name, bridge, guests, families, log_prefix, limit, marks)
        guard = _bridge_guard(name, guests, families, log_prefix, limit, marks)
        nftables = (nft_chains, (sysctls if marks else ()) + (EtherFilter(ether.chain), guard))
    return model.Policy(name=name, chains=chains, families=families, present=state != "absent",
                        resources=iptables[1], resolved=resolved,
                        variants=(("iptables",) + iptables, ("nftables",) + nftables,
                                  ("nftables conntrack",) + conntrack))


def guard_chain(name):
    """The task's chain in the bridge table; every chain named ``<it>.*`` there is the task's too."""
    return fields.chain_name(name, "bridge")


# --------------------------------------------------------------------------- validation

class Guest:
    """One validated guest: name, port, addresses (networks), mac, flags, services or None."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    @property
    def has_policy(self):
        return self.services is not None


def _port_name(value, field):
    if value is None:
        raise NetconfineError("is required", field)
    if isinstance(value, str) and (value.startswith("!") or "+" in value or "*" in value):
        raise NetconfineError("must name one interface, not a pattern or a negation, got %r" % (value,), field)
    return fields.interface(value, field)[0]


def _mac(value, field):
    if not isinstance(value, str) or not _MAC_RE.match(value):
        raise NetconfineError("must be a MAC address like 52:54:00:12:34:56, got %r" % (value,), field)
    mac = value.lower()
    first = int(mac[:2], 16)
    if first & 1:
        raise NetconfineError("%s is a multicast/broadcast address; a guest's MAC must be unicast" % mac, field)
    if mac == "00:00:00:00:00:00":
        raise NetconfineError("00:00:00:00:00:00 is not a usable MAC address", field)
    return mac


def _guests(raw_guests, log_prefix, resolved):
    guests, names, ports, macs, claimed = [], {}, {}, {}, []
    for i, raw in enumerate(raw_guests):
        where = "guests[%d]" % i

        def field(key, where=where):
            return "%s.%s" % (where, key)

        gname = fields.task_name(raw.get("name"), field("name"))
        if gname in names:
            raise NetconfineError("guest %r is already declared as guests[%d]" % (gname, names[gname]), field("name"))
        names[gname] = i
        for word in ("spoof", "rogue", "drop", "l2"):
            prefix = "%s%s %s: " % (log_prefix, word, gname)
            if len(prefix) > LOG_PREFIX_MAX:
                raise NetconfineError("makes the log prefix %r %d characters long, at most %d fit; shorten the "
                                      "guest name or log_prefix" % (prefix, len(prefix), LOG_PREFIX_MAX),
                                      field("name"))
        port = _port_name(raw.get("port"), field("port"))
        if port in ports:
            raise NetconfineError("port %s is already the port of guests[%d]" % (port, ports[port]), field("port"))
        ports[port] = i
        addresses = raw.get("addresses") or []
        if not addresses:
            raise NetconfineError("needs at least one address the guest may use as its source", field("addresses"))
        nets = []
        for k, value in enumerate(addresses):
            afield = "%s[%d]" % (field("addresses"), k)
            net = fields.address(value, afield)
            for other_index, other in claimed:
                if other.version == net.version and net.overlaps(other):
                    raise NetconfineError("%s is already claimed by guests[%d] (%s)" % (net, other_index, other),
                                          afield)
            if net in nets:
                raise NetconfineError("%s is listed twice" % net, afield)
            nets.append(net)
        claimed.extend((i, n) for n in nets)
        mac = None
        if raw.get("mac") is not None:
            mac = _mac(raw["mac"], field("mac"))
            if mac in macs:
                raise NetconfineError("%s is already the MAC of guests[%d]" % (mac, macs[mac]), field("mac"))
            macs[mac] = i
        services = None
        if any(raw.get(key) is not None for key in SERVICE_LISTS):
            services = dict((key, tuple(_service(entry, key, "%s[%d]" % (field(key), j), resolved)
                                        for j, entry in enumerate(raw.get(key) or [])))
                            for key in SERVICE_LISTS)
        guests.append(Guest(index=i, name=gname, port=port, addresses=tuple(nets), mac=mac,
                            allow_dhcp_server=bool(raw.get("allow_dhcp_server")),
                            allow_router_advertisement=bool(raw.get("allow_router_advertisement")),
                            services=services))
    return guests


def _service(raw, kind, where, resolved):
    """One service entry -> (protocol, (low, high) or None, networks or None)."""
    def field(key):
        return "%s.%s" % (where, key)

    proto = raw.get("protocol")
    if proto not in PROTOCOLS:
        raise NetconfineError("must be one of %s, got %r" % (", ".join(PROTOCOLS), proto), field("protocol"))
    ports = None
    if raw.get("port") is not None:
        if proto not in PORT_PROTOCOLS:
            raise NetconfineError("a port needs protocol tcp or udp (this entry is %s)" % proto, field("port"))
        ports, negate = fields.port_range(raw["port"], field("port"))
        if negate:
            raise NetconfineError("cannot be negated; list the ports that are allowed", field("port"))
    key = ADDRESS_KEY[kind]
    other = "to" if key == "from" else "from"
    if raw.get(other) is not None:
        meaning = "who may connect" if key == "from" else "where to"
        raise NetconfineError("%s takes %r (%s), not %r" % (kind, key, meaning, other), field(other))
    nets = None
    if raw.get(key) is not None:
        nets, negate, found = fields.addresses(raw[key], field(key))
        if negate:
            raise NetconfineError("cannot be negated; list the addresses that are allowed", field(key))
        resolved.update(found)
    return proto, ports, None if nets is None else tuple(nets)


def _check_bridge(bridge, guests, sys_class_net):
    """Each guest's port must be a port of ``bridge`` (read from sysfs: ``<port>/master``)."""
    if not os.path.isdir(os.path.join(sys_class_net, bridge, "bridge")):
        raise NetconfineError("%s is not a bridge on this host (no %s)" % (
            bridge, os.path.join(sys_class_net, bridge, "bridge")), "bridge")
    for guest in guests:
        master = os.path.join(sys_class_net, guest.port, "master")
        where = "guests[%d].port" % guest.index
        if not os.path.exists(os.path.join(sys_class_net, guest.port)):
            raise NetconfineError("interface %s does not exist on this host; create the guest's tap/veth and add "
                                  "it to %s first" % (guest.port, bridge), where)
        if not os.path.islink(master) or os.path.basename(os.readlink(master)) != bridge:
            raise NetconfineError("%s is not a port of bridge %s" % (guest.port, bridge), where)


# --------------------------------------------------------------------------- chains

def _rules(family, *specs):
    """Rules from (target, matches, header kwargs) tuples."""
    out = []
    for spec in specs:
        target, matches = spec[0], spec[1]
        header = spec[2] if len(spec) > 2 else {}
        out.append(model.Rule(family=family, target=target, matches=tuple(matches), **header))
    return out


def _log_drop(family, prefix, limit, matches=(), **header):
    return _rules(family, (model.Log(prefix), tuple(matches) + (limit,), header),
                  (DROP, tuple(matches), header))


def _icmp6(family, icmp_type, target, **header):
    return model.Rule(family=family, target=target, protocol="ipv6-icmp",
                      matches=(model.Icmp(6, icmp_type),), **header)


def _guard(guest, family, log_prefix, limit):
    rules = []
    if not guest.allow_dhcp_server:
        server = (model.Ports("udp", sport=(DHCP_SERVER_PORT[family],) * 2),)
        rules += _log_drop(family, "%srogue %s: " % (log_prefix, guest.name), limit, server, protocol="udp")
    if family == 6 and not guest.allow_router_advertisement:
        for icmp_type in ROUTER_TYPES:
            rules += _log_drop(family, "%srogue %s: " % (log_prefix, guest.name), limit,
                               (model.Icmp(6, icmp_type),), protocol="ipv6-icmp")
    for net in guest.addresses:
        if net.version == family:
            rules.append(model.Rule(family, RETURN, source=net))
    if family == 6:
        unspecified = fields.address("::", "guests")
        rules += [_icmp6(family, t, RETURN, source=unspecified) for t in UNSPECIFIED_TYPES]
        rules.append(model.Rule(family, RETURN, source=fields.address(LINK_LOCAL, "guests")))
    rules += _log_drop(family, "%sspoof %s: " % (log_prefix, guest.name), limit)
    return tuple(rules)


def _services(guest, kind, family, verdict):
    """The declared entries of one list as rules of one family (none when the family is excluded)."""
    rules = []
    key = ADDRESS_KEY[kind]
    for proto, ports, nets in guest.services[kind]:
        if (proto == "icmp" and family != 4) or (proto == "ipv6-icmp" and family != 6):
            continue
        matches = (model.Ports(proto, dport=ports),) if ports else ()
        targets = [None] if nets is None else [n for n in nets if n.version == family]
        for net in targets:
            header = {}
            if net is not None:
                header["source" if key == "from" else "destination"] = net
            rules.append(model.Rule(family, verdict, protocol=proto, matches=matches, **header))
    return rules


def _policy_chain(guest, kind, family, verdict, log_prefix, limit):
    rules = [model.Rule(family, verdict, matches=(ESTABLISHED,))]
    if family == 6:
        rules += [_icmp6(family, t, verdict) for t in ND_TYPES]
    rules += _services(guest, kind, family, verdict)
    rules += _log_drop(family, "%sdrop %s: " % (log_prefix, guest.name), limit)
    return tuple(rules)


def _chains(name, bridge, guests, families, log_prefix, limit, marks=None):
    """The filter-table chains; ``marks`` (guest name -> mark) selects the nftables form: no guard chains
    (anti-spoofing is in the bridge table, nft_bridge), ports known by the bridge table's marks."""
    def chain_name(suffix):
        return fields.chain_name(name, suffix)

    def jump(family, chain, **physdev):
        if marks is not None:
            guest = physdev.pop("guest")
            physdev["bridge"] = bridge
            if "in_port" in physdev:
                physdev["in_mark"] = marks[guest] << 8
            if "out_port" in physdev:
                physdev["out_mark"] = marks[guest] << 16
        else:
            physdev.pop("guest", None)
        return model.Rule(family, model.Jump(chain) if chain else ACCEPT, matches=(model.Physdev(**physdev),))

    guard = chain_name("guard")
    forward, inbound, outbound = [], [], []
    helpers = []
    guard_rules = []
    if marks is None:
        for family in families:
            forward.append(model.Rule(family, model.Jump(guard)))
            inbound.append(model.Rule(family, model.Jump(guard)))
    per_guest = {}
    for guest in guests:
        names = dict((kind, chain_name("%s %s" % (CHAIN_WORD[kind], guest.name)))
                     for kind in ("guard", "from", "to", "hostin", "hostout"))
        per_guest[guest.name] = names
        if marks is not None:
            continue
        rules = tuple(r for f in families for r in _guard(guest, f, log_prefix, limit))
        helpers.append(model.Chain("filter", names["guard"], rules))
        for family in families:
            guard_rules.append(jump(family, names["guard"], in_port=guest.port))
    policy_guests = [g for g in guests if g.has_policy]
    for guest in policy_guests:
        names = per_guest[guest.name]
        for kind, chain_kind, verdict in (("outbound", "from", RETURN), ("inbound", "to", ACCEPT),
                                          ("host_services", "hostin", ACCEPT), ("host_access", "hostout", ACCEPT)):
            rules = tuple(r for f in families for r in _policy_chain(guest, kind, f, verdict, log_prefix, limit))
            helpers.append(model.Chain("filter", names[chain_kind], rules))
        for family in families:
            forward.append(jump(family, names["from"], in_port=guest.port, guest=guest.name))
            inbound.append(jump(family, names["hostin"], in_port=guest.port, guest=guest.name))
            for net in guest.addresses:
                if net.version == family:
                    outbound.append(model.Rule(family, model.Jump(names["hostout"]), destination=net,
                                               out_interface=bridge))
    for guest in policy_guests:
        for family in families:
            forward.append(jump(family, per_guest[guest.name]["to"], out_port=guest.port, is_bridged=True,
                                guest=guest.name))
    for guest in policy_guests:
        for family in families:
            forward.append(jump(family, None, in_port=guest.port, guest=guest.name))

    # nftables: a rule's IPv4 and IPv6 copies stay adjacent, so they render as one inet rule
    order = _by_family if marks is None else (lambda rules, _families: tuple(rules))
    chains = []
    if marks is None or policy_guests:
        chains += [
            model.Chain("filter", chain_name("forward"), order(forward, families), model.Hook("FORWARD")),
            model.Chain("filter", chain_name("input"), order(inbound, families), model.Hook("INPUT")),
        ]
    if marks is None:
        chains.append(model.Chain("filter", guard, _by_family(guard_rules, families)))
    if policy_guests:
        chains.append(model.Chain("filter", chain_name("output"), order(outbound, families),
                                  model.Hook("OUTPUT")))
    return tuple(chains + helpers)


def _ether_filter(name, guests, log_prefix, limit):
    """L2 anti-spoofing (ebtables) for every guest: only IPv4, IPv6 and ARP, untagged (VLAN-tagged frames pass
    no physdev rule); with a MAC also the frame's source MAC, ARP sender MAC and IP."""
    guards = tuple(EtherGuard(
        chain=fields.chain_name(name, "l2 %s" % g.name), drop_chain=fields.chain_name(name, "l2drop %s" % g.name),
        port=g.port, mac=g.mac,
        arp_sources=tuple(n for n in g.addresses if n.version == 4),
        log_prefix="%sl2 %s: " % (log_prefix, g.name), limit=limit, field="backend")
        for g in guests)
    return EtherFilter(fields.chain_name(name, "l2"), guards)


MARK_MAX = 255       # bits 8-15 / 16-23 of the packet mark (nft_render.MARK_IN_MASK, MARK_OUT_MASK)
CONNTRACK_MODULE = "nf_conntrack_bridge"


def too_many_for_marks(count):
    """The error of the marks form with ``count`` guests with a service policy (> MARK_MAX)."""
    return NetconfineError("the marks form of the nftables backend gives at most %d guests of one task a service "
                           "policy (%d here); use bridge_form conntrack where the kernel has %s, or split the "
                           "bridge's guests over tasks" % (MARK_MAX, count, CONNTRACK_MODULE), "guests")


def _marks(guests):
    """Guest name -> its mark (1-255) for the guests with a service policy, stable when others come and go;
    None when there are more than MARK_MAX of them."""
    marks, used = {}, set()
    policy_guests = [g for g in guests if g.has_policy]
    if len(policy_guests) > MARK_MAX:
        return None
    for guest in policy_guests:
        mark = int(hashlib.sha256(guest.name.encode("utf-8")).hexdigest(), 16) % MARK_MAX
        while mark + 1 in used:
            mark = (mark + 1) % MARK_MAX
        used.add(mark + 1)
        marks[guest.name] = mark + 1
    return marks


# the conntrack form's per-guest policy chains: (kind, service list, verdict of what the list allows)
SERVICE_CHAINS = (("from", "outbound", RETURN), ("to", "inbound", ACCEPT), ("hostin", "host_services", ACCEPT),
                  ("hostout", "host_access", ACCEPT))


def _bridge_guard(name, guests, families, log_prefix, limit, marks, conntrack=False):
    """The bridge-table part of the nftables form of every guest: anti-spoofing, and with ``conntrack`` the
    service policy chains (``<chain>.from-G``, ``.to-G``, ``.hostin-G``, ``.hostout-G``)."""
    chain = guard_chain(name)

    def helper(kind, guest):
        return "%s.%s-%s" % (chain, kind, guest.name)

    ports, services = [], []
    for g in guests:
        kinds = ()
        if conntrack and g.has_policy:
            kinds = tuple((kind, helper(kind, g)) for kind, _list, _verdict in SERVICE_CHAINS)
            for (kind, chain_name), (_kind, service_list, verdict) in zip(kinds, SERVICE_CHAINS):
                rules = [_policy_chain(g, service_list, f, verdict, log_prefix, limit) for f in families]
                services.append(model.Chain("bridge", chain_name, _interleave(*rules)))
        ports.append(BridgePort(
            name=g.name, port=g.port, addresses=g.addresses, mac=g.mac, mark=marks.get(g.name, 0),
            out_chain=helper("mark", g), spoof_chain=helper("spoof4", g), spoof6_chain=helper("spoof6", g),
            rogue_chain=helper("rogue", g), l2_chain=helper("l2", g), log_prefix=log_prefix,
            rogue=(() if g.allow_dhcp_server else ("dhcp",)) + (() if g.allow_router_advertisement else ("ra",)),
            services=kinds))
    return BridgeGuard(chain, chain + ".forward", tuple(ports), families, limit,
                       form="conntrack" if conntrack else "marks", services=tuple(services))


def _interleave(first, second=()):
    """Two families' copies of one chain as one list: the leading and trailing rules that differ only in their
    family side by side (rendered as one rule for both), the rest of the first family, then of the second."""
    first, second = list(first), list(second)

    def same(a, b):
        return dataclasses.replace(a, family=b.family) == b

    head = 0
    while head < min(len(first), len(second)) and same(first[head], second[head]):
        head += 1
    tail = 0
    while (tail < min(len(first), len(second)) - head
           and same(first[len(first) - 1 - tail], second[len(second) - 1 - tail])):
        tail += 1
    out = [r for pair in zip(first[:head], second[:head]) for r in pair]
    out += first[head:len(first) - tail] + second[head:len(second) - tail]
    out += [r for pair in zip(first[len(first) - tail:], second[len(second) - tail:]) for r in pair]
    return tuple(out)


def _by_family(rules, families):
    """Rules in declaration order within each family (each family is its own ruleset)."""
    return tuple(r for f in families for r in rules if r.family == f)
