# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build the model of a ``netns_service`` task from its validated parameters.

Private to the paranoid.netconfine collection. Everything the user typed is
checked here, before anything touches the host; each error names its field.

The task owns, besides its ``Netns`` (namespace, veth pair, addresses,
routes, resolv.conf; applied by ``netns_links``) and ``sysctl_state.Sysctl``
resources (forwarding), four chains on the host side:

* ``filter`` FORWARD: replies to the namespace, the declared forwards in
  (``ctstate DNAT``, so only what our PREROUTING/OUTPUT translated), the
  namespace's own address out; every other packet to or from its veth dropped;
* ``nat`` PREROUTING and OUTPUT: one DNAT per declared port forward, for
  remote clients and for local clients of the host (loopback excluded unless
  ``allow_localhost_forward``: it needs ``route_localnet``, CVE-2020-8558);
* ``nat`` POSTROUTING: MASQUERADE of the namespace's address going out.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import grp
import ipaddress
import itertools
import os
import pwd
import re
from dataclasses import dataclass
from typing import Optional, Tuple

from ansible_collections.paranoid.netconfine.plugins.module_utils import fields, identity, model, nat_render, sysctl_state
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError


@dataclass(frozen=True)
class Netns:
    """A named network namespace and the links a task owns for it (``netns_links.NetnsLinks``).

    ``name`` is the exact name under ``/run/netns``. With ``host_link`` set, one veth pair joins
    this namespace (``host_link``, addresses ``host_addresses``) and ``name`` (``peer_link``,
    addresses ``peer_addresses``, default routes via ``gateways``); without it the namespace has
    loopback only. Addresses are interface networks as ``ip`` prints them (``192.0.2.1/30``).
    ``dns`` are the ``nameserver`` lines of ``/etc/netns/<name>/resolv.conf`` (no file if empty).
    ``field`` names the option that declared it in errors.
    """
    name: str
    host_link: Optional[str] = None
    peer_link: Optional[str] = None
    host_addresses: Tuple[str, ...] = ()
    peer_addresses: Tuple[str, ...] = ()
    gateways: Tuple[str, ...] = ()
    dns: Tuple[str, ...] = ()
    field: str = "name"


@dataclass(frozen=True)
class Launcher:
    """The daemon of namespace ``namespace``, started by a launcher script at ``path`` (``netns_launcher``).

    ``uid``/``gid`` are numeric (resolved on the target), ``user``/``home`` their passwd entry;
    ``environment`` is ((name, value), ...) sorted; ``start`` keeps one launcher process running.
    """
    namespace: str
    path: str
    exec_path: str
    args: Tuple[str, ...] = ()
    user: str = "nobody"
    uid: int = 65534
    gid: int = 65534
    home: str = "/"
    working_directory: str = "/"
    environment: Tuple[Tuple[str, str], ...] = ()
    private_tmp: bool = True
    start: bool = False
    group: str = ""            # name of gid (systemd's Group=)
    # systemd sandbox settings: ((Directive, (value, ...)), ...) e.g. (("IPAddressDeny", ("any",)),)
    sandbox: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class InsideNetns:
    """A netfilter ``policy`` (a ``Policy``) converged inside the named namespace ``namespace``.

    Handled by ``netns_netfilter.InsideNetns`` with the task's backend, run there. ``policy.present``
    false removes what it owns there.
    """
    namespace: str
    policy: object


NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*\Z")
LINK_PREFIXES = ("vh-", "vn-")           # host side, namespace side
NAME_MAX = 15 - len(LINK_PREFIXES[0])    # IFNAMSIZ - 1 - prefix
PROTOCOLS = ("tcp", "udp")
LOOPBACK = {4: ipaddress.ip_network(u"127.0.0.0/8"), 6: ipaddress.ip_network(u"::1/128")}
FORWARDING = {4: "net/ipv4/ip_forward", 6: "net/ipv6/conf/all/forwarding"}


def namespace_name(value, field="name"):
    """The namespace name: ``[a-z0-9][a-z0-9_-]*``, at most 12 characters (so ``vh-NAME`` fits 15)."""
    if not isinstance(value, str) or not NAME_RE.match(value) or len(value) > NAME_MAX:
        raise NetconfineError(
            "must be 1-%d characters of a-z, 0-9, '_' and '-', starting with a letter or digit (the veth "
            "names vh-NAME and vn-NAME must fit 15 characters); got %r" % (NAME_MAX, value), field)
    return value


def links(name):
    """(host side, namespace side) veth names of namespace ``name``."""
    return tuple(prefix + name for prefix in LINK_PREFIXES)


def _network(value, version, field, max_prefix):
    net = fields.address(value, field)
    if net.version != version:
        raise NetconfineError("must be an IPv%d network, got %r" % (version, value), field)
    if net.prefixlen > max_prefix:
        raise NetconfineError("must be a /%d or larger (it needs a host and a namespace address), got %r"
                              % (max_prefix, value), field)
    return net


def _member(value, net, field):
    addr = fields.address(value, field)
    if addr.prefixlen != addr.max_prefixlen:
        raise NetconfineError("must be an address without a prefix, got %r" % (value,), field)
    addr = addr.network_address
    if addr not in net or addr in (net.network_address, net.broadcast_address):
        raise NetconfineError("%s is not a usable address of subnet %s" % (addr, net), field)
    return addr


def addressing(params):
    """{family: (subnet, host address, namespace address)} of the veth pair (empty: loopback only)."""
    out = {}
    if params.get("subnet") is not None:
        net = _network(params["subnet"], 4, "subnet", 30)
        host = (_member(params["host_address"], net, "host_address") if params.get("host_address")
                else net.network_address + 1)
        peer = (_member(params["namespace_address"], net, "namespace_address") if params.get("namespace_address")
                else net.network_address + 2)
        if host == peer:
            raise NetconfineError("must differ from host_address (%s)" % host, "namespace_address")
        out[4] = (net, host, peer)
    else:
        for key in ("host_address", "namespace_address", "subnet6"):
            if params.get(key) is not None:
                raise NetconfineError("needs subnet", key)
    if params.get("subnet6") is not None:
        net = _network(params["subnet6"], 6, "subnet6", 64)
        if net.prefixlen != 64:
            raise NetconfineError("must be a /64, got %r" % params["subnet6"], "subnet6")
        out[6] = (net, net.network_address + 1, net.network_address + 2)
    return out


def build_policy(params):
    """netns_service parameters -> model.Policy (raises NetconfineError naming the field)."""
    name = namespace_name(params["name"])
    present = params.get("state") != "absent"
    _check_network(params)
    plan = addressing(params)
    families = tuple(sorted(plan)) or (4,)
    wanted = params.get("ip_version") or "both"
    if wanted != "both" and (len(plan) > 1 or (plan and "ipv%d" % families[0] != wanted)):
        raise NetconfineError("is %s but the addresses given are %s: leave it at both" % (
            wanted, "/".join("IPv%d" % f for f in families)), "ip_version")
    host_link, peer_link = links(name)
    outbound = None
    if params.get("outbound_interface") is not None:
        outbound, negate = fields.interface(params["outbound_interface"], "outbound_interface")
        if negate or outbound in (host_link, peer_link):
            raise NetconfineError("must name the host's uplink, got %r" % params["outbound_interface"],
                                  "outbound_interface")
    allow_lo = bool(params.get("allow_localhost_forward"))
    forwards = _forwards(params.get("port_forwards") or [], plan, allow_lo)
    if allow_lo and 4 not in plan:
        raise NetconfineError("needs subnet (IPv4: IPv6 cannot forward ::1 at all)", "allow_localhost_forward")
    if not plan and forwards:
        raise NetconfineError("needs subnet: a namespace without links cannot be reached", "port_forwards")
    dns = tuple(str(fields.address(d, "dns[%d]" % i).network_address) for i, d in enumerate(params.get("dns") or []))

    pname = "netns-%s" % name
    chains = () if not plan else _chains(pname, plan, host_link, outbound, forwards, allow_lo)
    resources = [Netns(
        name=name,
        host_link=host_link if plan else None,
        peer_link=peer_link if plan else None,
        host_addresses=tuple("%s/%d" % (plan[f][1], plan[f][0].prefixlen) for f in sorted(plan)),
        peer_addresses=tuple("%s/%d" % (plan[f][2], plan[f][0].prefixlen) for f in sorted(plan)),
        gateways=tuple(str(plan[f][1]) for f in sorted(plan)),
        dns=dns, field="name")]
    for family in sorted(plan):
        resources.append(sysctl_state.Sysctl(FORWARDING[family], "1", field="subnet" if family == 4 else "subnet6"))
    if allow_lo:
        resources.append(sysctl_state.Sysctl("net/ipv4/conf/%s/route_localnet" % host_link, "1",
                                             field="allow_localhost_forward", link=host_link))
    if params.get("service") is not None:
        resources.append(service_launcher(name, params["service"]))
    egress = params.get("egress")
    resources.append(InsideNetns(name, model.Policy(
        name=pname, chains=(_egress_chain(pname, egress or [], families),), families=families,
        present=present and egress is not None)))
    return model.Policy(name=pname, chains=chains, families=families, present=present,
                        resources=tuple(resources))


def _check_network(params):
    """``network: none`` (seed 002's ``unshare -n``) takes nothing that needs a link; ``veth`` needs subnet."""
    network = params.get("network")
    if network == "veth" and params.get("subnet") is None:
        raise NetconfineError("network veth needs subnet (omit network, or say network: none, for loopback only)",
                              "subnet")
    if network != "none":
        return
    for key in ("subnet", "subnet6", "host_address", "namespace_address", "outbound_interface", "egress"):
        if params.get(key) is not None:
            raise NetconfineError("cannot be set with network: none (the namespace has loopback only)", key)
    for key in ("port_forwards", "dns"):
        if params.get(key):
            raise NetconfineError("cannot be set with network: none (the namespace has loopback only)", key)
    if params.get("allow_localhost_forward"):
        raise NetconfineError("cannot be set with network: none", "allow_localhost_forward")


def _egress_chain(pname, items, families):
    """OUTPUT inside the namespace: loopback, replies, each declared destination; everything else rejected."""
    rules = []
    for family in families:
        rules.append(model.Rule(family, model.Verdict("ACCEPT"), out_interface="lo"))
    for family in families:
        rules.append(model.Rule(family, model.Verdict("ACCEPT"), matches=(model.Conntrack(("RELATED", "ESTABLISHED")),)))
    for index, raw in enumerate(items):
        where = "egress[%d]" % index
        if raw.get("destination") is None:
            raise NetconfineError("is required (addresses, networks or hostnames)", where + ".destination")
        dests, negate, _found = fields.addresses(raw["destination"], where + ".destination")
        if negate:
            raise NetconfineError("lists where the daemon may connect; '!' is not supported here",
                                  where + ".destination")
        protocol = fields.protocol(raw.get("protocol"), where + ".protocol")
        matches = ()
        if raw.get("port") is not None:
            if protocol not in PROTOCOLS:
                raise NetconfineError("needs protocol tcp or udp", where + ".port")
            ports, port_negate = fields.port_range(raw["port"], where + ".port")
            if port_negate:
                raise NetconfineError("lists ports allowed; '!' is not supported here", where + ".port")
            matches = (model.Ports(protocol, dport=ports),)
        made = [model.Rule(d.version, model.Verdict("ACCEPT"), protocol=protocol, destination=d, matches=matches)
                for d in dests if d.version in families]
        if not made:
            raise NetconfineError("has no address of a family the namespace has", where + ".destination")
        rules += made
    for family in families:
        rules.append(model.Rule(family, model.Reject()))
    return model.Chain("filter", fields.chain_name(pname, "egress"), tuple(rules), model.Hook("OUTPUT", "first"))


def _forwards(raw_list, plan, allow_lo):
    """[(where, protocol, host_port, port, sources, host_address)] with every field checked."""
    out, seen = [], {}
    for index, raw in enumerate(raw_list):
        where = "port_forwards[%d]" % index
        protocol = raw.get("protocol") or "tcp"
        if protocol not in PROTOCOLS:
            raise NetconfineError("must be tcp or udp, got %r" % (protocol,), where + ".protocol")
        ports = {}
        for key in ("host_port", "port"):
            value = raw.get(key)
            if value is None and key == "port":
                value = ports["host_port"]
            if value is None:
                raise NetconfineError("is required", "%s.%s" % (where, key))
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
                raise NetconfineError("must be a port between 1 and 65535, got %r" % (value,), "%s.%s" % (where, key))
            ports[key] = value
        key = (protocol, ports["host_port"], raw.get("host_address"))
        if key in seen:
            raise NetconfineError("%s host port %d is already forwarded by port_forwards[%d]"
                                  % (protocol, ports["host_port"], seen[key]), where + ".host_port")
        seen[key] = index
        sources, negate, _resolved = fields.addresses(raw.get("from"), where + ".from")
        if negate:
            raise NetconfineError("lists the sources allowed; '!' is not supported here", where + ".from")
        host_address = None
        if raw.get("host_address") is not None:
            host_address = fields.address(raw["host_address"], where + ".host_address")
            if host_address.prefixlen != host_address.max_prefixlen:
                raise NetconfineError("must be one address of this host", where + ".host_address")
            if host_address.is_loopback and not allow_lo:
                raise NetconfineError("is a loopback address: forwarding it needs route_localnet (CVE-2020-8558); "
                                      "set allow_localhost_forward: true to accept that", where + ".host_address")
            if host_address.version not in plan:
                raise NetconfineError("is IPv%d but the namespace has no IPv%d address"
                                      % (host_address.version, host_address.version), where + ".host_address")
        if sources is not None and not any(s.version in plan for s in sources):
            raise NetconfineError("has no address of a family the namespace has", where + ".from")
        out.append((where, protocol, ports["host_port"], ports["port"], sources, host_address))
    return out


def _chains(pname, plan, host_link, outbound, forwards, allow_lo):
    per_family = dict((family, _family_rules(family, plan[family][2], host_link, outbound, forwards, allow_lo))
                      for family in sorted(plan))

    def chain(table, suffix, builtin, index):
        # each family's rules in order, the families interleaved so that the nftables renderer can pair
        # the copies of a family-neutral rule into one inet rule
        lists = [per_family[f][index] for f in sorted(per_family)]
        rules = [r for group in itertools.zip_longest(*lists) for r in group if r is not None]
        return model.Chain(table, fields.chain_name(pname, suffix), tuple(rules), model.Hook(builtin, "first"))

    return (chain("filter", "fwd", "FORWARD", 0),
            chain("nat", "dnat", "PREROUTING", 1),
            chain("nat", "local", "OUTPUT", 2),
            chain("nat", "snat", "POSTROUTING", 3))


def _family_rules(family, peer, host_link, outbound, forwards, allow_lo):
    """(forward, prerouting, output, postrouting) rules of one family."""
    forward, prerouting, output, postrouting = [], [], [], []
    me = ipaddress.ip_network(u"%s" % peer)
    # FORWARD: replies in, declared forwards in, the namespace's own address out; the rest of the veth dropped
    forward.append(model.Rule(family, model.Verdict("ACCEPT"), destination=me, out_interface=host_link,
                              matches=(model.Conntrack(("RELATED", "ESTABLISHED")),)))
    for _where, protocol, host_port, port, sources, host_address in forwards:
        if host_address is not None and host_address.version != family:
            continue
        for source in _of_family(sources, family):
            forward.append(model.Rule(family, model.Verdict("ACCEPT"), protocol=protocol, source=source,
                                      destination=me, out_interface=host_link,
                                      matches=(model.Ports(protocol, dport=(port, port)),
                                               model.Conntrack(("DNAT",)))))
            prerouting.append(_dnat(family, protocol, source, host_address, port, host_port, peer, False))
            output.append(_dnat(family, protocol, source, host_address, port, host_port, peer,
                                not (allow_lo and family == 4)))
    forward.append(model.Rule(family, model.Verdict("ACCEPT"), source=me, in_interface=host_link,
                              matches=(model.Conntrack(("RELATED", "ESTABLISHED")),)))
    forward.append(model.Rule(family, model.Verdict("ACCEPT"), source=me, in_interface=host_link,
                              out_interface=outbound))
    forward.append(model.Rule(family, model.Verdict("DROP"), in_interface=host_link))
    forward.append(model.Rule(family, model.Verdict("DROP"), out_interface=host_link))
    if outbound:
        postrouting.append(model.Rule(family, nat_render.Masquerade(), source=me, out_interface=outbound))
    else:
        postrouting.append(model.Rule(family, nat_render.Masquerade(), source=me, out_interface=host_link,
                                      out_interface_negate=True))
    if allow_lo and family == 4 and forwards:
        postrouting.append(model.Rule(4, nat_render.Masquerade(), source=LOOPBACK[4], out_interface=host_link))
    return forward, prerouting, output, postrouting


def _of_family(sources, family):
    if sources is None:
        return [None]
    return [s for s in sources if s.version == family]


def _dnat(family, protocol, source, host_address, port, host_port, peer, skip_loopback):
    """One DNAT rule: to this host (``host_address`` or any local address) on host_port -> peer:port."""
    matches = (model.Ports(protocol, dport=(host_port, host_port)),)
    destination, negate = None, False
    if host_address is not None:
        destination = ipaddress.ip_network(u"%s" % host_address.network_address)
    else:
        matches = (model.DestinationType("LOCAL"),) + matches
        if skip_loopback:
            destination, negate = LOOPBACK[family], True
    return model.Rule(family, nat_render.Dnat(peer, port), protocol=protocol, source=source,
                      destination=destination, destination_negate=negate, matches=matches)


_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_RESERVED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "NETCONFINE_LAUNCHER")


def _absolute(value, field):
    if not isinstance(value, str) or not value.startswith("/") or os.path.normpath(value) != value or \
            any(c in value for c in "\0\n"):
        raise NetconfineError("must be an absolute, normalised path, got %r" % (value,), field)
    return value


def _plain(value, field):
    if not isinstance(value, str) or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise NetconfineError("must be text without control characters, got %r" % (value,), field)
    return value


def service_launcher(name, raw, launcher_dir="/usr/local/libexec/netconfine"):
    """The ``service`` option -> Launcher (user and group resolved here, on the target)."""
    exec_path = _absolute(raw.get("exec"), "service.exec")
    args = tuple(_plain(a, "service.args[%d]" % i) for i, a in enumerate(raw.get("args") or []))
    user = raw.get("user")
    if user is None:
        raise NetconfineError("is required (the daemon never runs as root here)", "service.user")
    (uid, _high), negate = identity.uid(user, "service.user")
    if negate:
        raise NetconfineError("must name one user", "service.user")
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        raise NetconfineError("uid %d has no passwd entry on this host" % uid, "service.user")
    if uid == 0:
        raise NetconfineError("is root: the point is to drop privileges; run the daemon as its own user",
                              "service.user")
    gid = entry.pw_gid
    if raw.get("group") is not None:
        (gid, _high), negate = identity.gid(raw["group"], "service.group")
        if negate:
            raise NetconfineError("must name one group", "service.group")
        try:
            grp.getgrgid(gid)
        except KeyError:
            raise NetconfineError("gid %d has no group entry on this host" % gid, "service.group")
    environment = []
    for key, value in sorted((raw.get("environment") or {}).items()):
        if not _ENV_NAME_RE.match(str(key)) or key in _RESERVED_ENV:
            raise NetconfineError("%r is not a variable name the daemon may set (letters, digits, '_'; not %s)"
                                  % (key, ", ".join(_RESERVED_ENV)), "service.environment")
        environment.append((key, _plain(str(value), "service.environment.%s" % key)))
    group = entry.pw_name
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return Launcher(
        group=group, sandbox=sandbox(raw),
        namespace=name, path=os.path.join(launcher_dir, "ns-%s" % name), exec_path=exec_path, args=args,
        user=entry.pw_name, uid=uid, gid=gid, home=entry.pw_dir or "/",
        working_directory=_absolute(raw.get("working_directory") or "/", "service.working_directory"),
        environment=tuple(environment), private_tmp=raw.get("private_tmp") is not False,
        start=bool(raw.get("start")))


# service.<option> -> systemd directive (systemd.resource-control(5), systemd.exec(5)) and the
# systemd version that introduced it (NEWS: SocketBindAllow/Deny 249, RestrictNetworkInterfaces 250)
SANDBOX = (
    ("ip_address_allow", "IPAddressAllow", 235),
    ("ip_address_deny", "IPAddressDeny", 235),
    ("socket_bind_allow", "SocketBindAllow", 249),
    ("socket_bind_deny", "SocketBindDeny", 249),
    ("restrict_address_families", "RestrictAddressFamilies", 231),
    ("restrict_network_interfaces", "RestrictNetworkInterfaces", 250),
)
SANDBOX_SINCE = dict((directive, since) for _option, directive, since in SANDBOX)
_IP_WORDS = ("any", "localhost", "link-local", "multicast")
_FAMILY_RE = re.compile(r"^(~?AF_[A-Z0-9_]+|none)\Z")
_SOCKET_BIND_RE = re.compile(r"^(?:(ipv4|ipv6):)?(?:(tcp|udp):)?(any|\d{1,5}(?:-\d{1,5})?)\Z")


def _ip_item(value, field):
    if value in _IP_WORDS:
        return value
    return str(fields.address(value, field).with_prefixlen) if "/" in value else \
        str(fields.address(value, field).network_address)


def _socket_bind_item(value, field):
    """``[ipv4|ipv6:][tcp|udp:]any|PORT|LOW-HIGH`` as systemd.resource-control(5) SocketBindAllow= reads it."""
    found = _SOCKET_BIND_RE.match(value)
    if not found:
        raise NetconfineError("must be [ipv4:|ipv6:][tcp:|udp:]any|PORT|LOW-HIGH, got %r" % (value,), field)
    if found.group(3) != "any":
        ports = [int(p) for p in found.group(3).split("-")]
        if not all(1 <= p <= 65535 for p in ports) or ports != sorted(ports):
            raise NetconfineError("must be a port or range within 1-65535, got %r" % (value,), field)
    return value


def _family_item(value, field):
    if not _FAMILY_RE.match(value):
        raise NetconfineError("must be an address family such as AF_UNIX or ~AF_INET6 (or none), got %r"
                              % (value,), field)
    return value


def _interface_item(value, field):
    name = value[1:] if value.startswith("~") else value
    fields.interface(name, field)
    return value


def sandbox(raw):
    """The service's sandbox options -> ((systemd directive, (value, ...)), ...) in SANDBOX order.

    Values are checked strictly (they end up in a unit file): addresses/networks or any, localhost,
    link-local, multicast; socket binds ``[ipv4:][tcp:]PORT``; ``AF_*`` names; interface names, with
    ``~`` (deny-list) where systemd allows it. Errors name the field (``service.ip_address_allow[1]``).
    """
    check = {"ip_address_allow": _ip_item, "ip_address_deny": _ip_item,
             "socket_bind_allow": _socket_bind_item, "socket_bind_deny": _socket_bind_item,
             "restrict_address_families": _family_item, "restrict_network_interfaces": _interface_item}
    out = []
    for option, directive, _since in SANDBOX:
        values = raw.get(option)
        if values is None:
            continue
        items = []
        for index, value in enumerate(values):
            where = "service.%s[%d]" % (option, index)
            if not isinstance(value, str) or not value or any(c.isspace() or ord(c) < 32 for c in value):
                raise NetconfineError("must be one word, got %r" % (value,), where)
            items.append(check[option](value, where))
        if directive in ("RestrictAddressFamilies", "RestrictNetworkInterfaces") and \
                len(set(i.startswith("~") for i in items)) > 1:
            raise NetconfineError("mixes allowed and ~denied entries; systemd takes one kind per list",
                                  "service.%s" % option)
        out.append((directive, tuple(items)))
    return tuple(out)
