# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backend-neutral model of what a netconfine task owns.

Private to the paranoid.netconfine collection. Every netfilter module builds a
``Policy`` (chains it owns, hooks into built-in chains, rules made of typed
matches and one target); every backend renders it (iptables-save text, nft
JSON) and reads the kernel back into the same terms. All classes are frozen
and normalised at construction (ids not names, canonical networks), so ``==``
means "the same rule in the kernel".

A later module adds match or target classes here and teaches each renderer
to print them; the engine and the backends' appliers stay as they are.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from dataclasses import dataclass, field, replace
from typing import Optional, Tuple

FAMILIES = (4, 6)


# ---------------------------------------------------------------- matches

@dataclass(frozen=True)
class Ports:
    """``-p tcp -m tcp --sport/--dport`` (tcp, udp, sctp, udplite)."""
    protocol: str
    sport: Optional[Tuple[int, int]] = None
    sport_negate: bool = False
    dport: Optional[Tuple[int, int]] = None
    dport_negate: bool = False


@dataclass(frozen=True)
class Icmp:
    """ICMP type (family 4) or ICMPv6 type (family 6), canonical numeric text."""
    family: int
    type: str
    negate: bool = False


@dataclass(frozen=True)
class DestinationType:
    """The kind of address the packet is sent to, as the kernel's routing tables classify it.

    ``type`` is an address type of rtnetlink (``LOCAL``: an address of this host, i.e. all of
    127.0.0.0/8, ::1 and every address on any interface, including ones added later and IPv6
    link-local ones). iptables: ``-m addrtype --dst-type LOCAL``; nftables: ``fib daddr type local``.
    Both ask the kernel per packet, so the set of local addresses is never copied into a rule.
    """
    type: str = "LOCAL"
    negate: bool = False


@dataclass(frozen=True)
class Owner:
    """Socket owner of a locally generated packet.

    ``uid``/``gid`` are inclusive id ranges. ``suppl_groups`` widens ``gid`` from
    the process's effective group to any of its groups (primary or
    supplementary). ``gid_members`` are the uids that have ``gid`` as a group on
    this host at converge time; backends that cannot match supplementary groups
    (nftables) use them instead.
    """
    uid: Optional[Tuple[int, int]] = None
    uid_negate: bool = False
    gid: Optional[Tuple[int, int]] = None
    gid_negate: bool = False
    suppl_groups: bool = False
    socket_exists: Optional[bool] = None
    gid_members: Tuple[int, ...] = ()


@dataclass(frozen=True)
class Cgroup:
    """cgroup v2 path of the sending socket."""
    path: str
    negate: bool = False


@dataclass(frozen=True)
class Physdev:
    """Bridge port of a bridged packet (``-m physdev``; needs br_netfilter and bridge-nf-call-ip(6)tables=1).

    ``in_port``: the port the frame entered the bridge by (FORWARD, INPUT); ``out_port`` the
    port it leaves by (FORWARD only, with ``is_bridged``: the kernel refuses ``--physdev-out``
    in OUTPUT, where the port is not known yet).
    """
    in_port: Optional[str] = None
    out_port: Optional[str] = None
    is_bridged: bool = False
    # the nftables form (no physdev there): the bridge, and the packet-mark values our bridge table
    # gives frames from ``in_port`` / to ``out_port`` (nft_bridge); the iptables form ignores them
    bridge: Optional[str] = None
    in_mark: Optional[int] = None
    out_mark: Optional[int] = None


@dataclass(frozen=True)
class Conntrack:
    states: Tuple[str, ...]


@dataclass(frozen=True)
class Limit:
    rate: int
    unit: str           # sec, min, hour, day
    burst: int = 5


@dataclass(frozen=True)
class Comment:
    text: str


# ---------------------------------------------------------------- targets

@dataclass(frozen=True)
class Verdict:
    """ACCEPT, DROP or RETURN."""
    name: str


@dataclass(frozen=True)
class Reject:
    reason: str = "port-unreachable"     # a key of fields.REJECT_REASONS


@dataclass(frozen=True)
class Log:
    prefix: Optional[str] = None
    level: int = 4


@dataclass(frozen=True)
class Jump:
    chain: str


@dataclass(frozen=True)
class Secmark:
    """``-j SECMARK --selctx CONTEXT`` / nft ``meta secmark set``: label the packet (mangle only).

    ``context`` is a full SELinux context ``user:role:type:level`` (``system_u:object_r:
    myhttp_client_packet_t:s0``); the kernel refuses a context the loaded policy does not know.
    """
    context: str


@dataclass(frozen=True)
class ConnSecmark:
    """``-j CONNSECMARK --restore|--save``: copy the label from (restore) or to (save) the connection."""
    mode: str            # "restore" or "save"


@dataclass(frozen=True)
class Dnat:
    """Destination NAT (table nat, PREROUTING/OUTPUT) to ``address`` (an ipaddress address) and ``port``."""
    address: object
    port: Optional[int] = None


@dataclass(frozen=True)
class Masquerade:
    """Source NAT to the outgoing interface's address (table nat, POSTROUTING)."""


# ---------------------------------------------------------------- non-netfilter resources

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
    limit: Limit
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
    families: Tuple[int, ...] = FAMILIES
    limit: Optional[Limit] = None
    form: str = "marks"
    services: Tuple[object, ...] = ()


@dataclass(frozen=True)
class KernelModule:
    """A kernel module the task needs loaded (``modprobe NAME``; built into the kernel counts as loaded).
    Handled by ``sysctl_state.SysctlState`` beside the sysctls, persisted with them (``modprobe`` at boot).
    ``field`` names the option that asked for it in errors."""
    name: str
    field: str = "name"


@dataclass(frozen=True)
class EtherFilter:
    """The bridge-family (ebtables) part of a task: chain ``chain`` hooked first from FORWARD and INPUT,
    dispatching to one ``EtherGuard`` per port. Handled by ``ebtables_state.EbtablesState``; with no
    guards the task owns nothing there (and what it owned is removed)."""
    chain: str
    guards: Tuple[EtherGuard, ...] = ()


# ---------------------------------------------------------------- structure

@dataclass(frozen=True)
class Rule:
    """One rule for one IP family: header matches, extension matches in kernel order, a target."""
    family: int
    target: object
    protocol: Optional[str] = None
    source: object = None            # ipaddress network
    source_negate: bool = False
    destination: object = None
    destination_negate: bool = False
    in_interface: Optional[str] = None
    in_interface_negate: bool = False
    out_interface: Optional[str] = None
    out_interface_negate: bool = False
    matches: Tuple[object, ...] = ()
    # the option that declared it (``rules[2]``), for errors about the rule; not part of what the kernel holds
    field: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class Hook:
    """A tagged jump from a built-in chain into an owned chain."""
    builtin: str                       # OUTPUT, POSTROUTING, ...
    position: str = "first"            # first: before every foreign rule; last: after


@dataclass(frozen=True)
class Chain:
    """A chain the task owns outright: its whole content is ours."""
    table: str
    name: str
    rules: Tuple[Rule, ...] = ()
    hook: Optional[Hook] = None
    builtin_policy: Optional[str] = None    # managed policy of hook.builtin: ACCEPT or DROP


@dataclass(frozen=True)
class Policy:
    """Everything one module task owns on a host."""
    name: str                                   # the task name; tags the jumps
    chains: Tuple[Chain, ...] = ()
    families: Tuple[int, ...] = FAMILIES
    present: bool = True
    resources: Tuple[object, ...] = ()          # non-netfilter state the task owns (engine "states")
    resolved: dict = field(default_factory=dict, compare=False, hash=False)
    # ((backend name, chains, resources[, retired]), ...): where a module's form differs per backend. A
    # variant named "<backend> <form>" is another form of that backend (``with_form``)
    variants: Tuple[tuple, ...] = ()
    # chains the task owns on this backend in another form of it: owned, never rendered, so a run that
    # switches forms removes them (uml_bridge_filter's inet chains when its service policy moves to bridge)
    retired: Tuple[Chain, ...] = ()

    def for_backend(self, name):
        """The policy as backend ``name`` renders it (its variant's chains and resources, else itself)."""
        for variant in self.variants:
            if variant[0] == name:
                retired = variant[3] if len(variant) > 3 else ()
                return Policy(self.name, variant[1], self.families, self.present, variant[2], self.resolved,
                              retired=retired)
        return self

    def with_form(self, backend, form):
        """The policy whose variant for ``backend`` is its form ``form`` (the variant named ``"backend form"``);
        the default form's chains become that variant's ``retired``. A form without a variant: as is."""
        forms = dict((v[0], v) for v in self.variants)
        if "%s %s" % (backend, form) not in forms:
            return self
        chosen = forms["%s %s" % (backend, form)]
        default = forms.get(backend, (backend, ()))
        variant = (backend, chosen[1], chosen[2], tuple(default[1]))
        return replace(self, variants=tuple(variant if v[0] == backend else v for v in self.variants))

    def chains_for(self, family):
        """Owned chains with only the rules of one family (empty if not present / family excluded)."""
        if not self.present or family not in self.families:
            return ()
        return tuple(Chain(c.table, c.name, tuple(r for r in c.rules if r.family == family), c.hook,
                           c.builtin_policy) for c in self.chains)

    @property
    def chain_names(self):
        return frozenset(c.name for c in self.chains)

    @property
    def tag(self):
        return "netconfine:%s" % self.name
