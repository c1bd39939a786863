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
to print them; the engine and the backends' appliers stay as they are. What
only one module's seams handle lives beside them instead, so another module's
task neither ships nor creates it (each frozen class costs its run ~0.5 ms to
create): ``Dnat``/``Masquerade`` in nat_render, ``Sysctl``/``KernelModule`` in
sysctl_state, ``SelinuxModule`` in selinux_store, ``Netns``/``Launcher``/
``InsideNetns`` in netns_model, the bridge's guards and ports in bridge_model.
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
    """``-m conntrack --ctstate`` / ``ct state``: connection tracking states (NEW, ESTABLISHED, ...)."""
    states: Tuple[str, ...]


@dataclass(frozen=True)
class Limit:
    """``-m limit`` / ``limit rate``: at most ``rate`` matches per ``unit``, bursts of ``burst``."""
    rate: int
    unit: str           # sec, min, hour, day
    burst: int = 5


@dataclass(frozen=True)
class Comment:
    """``-m comment`` / the rule's ``comment``: text kept with the rule, no effect on packets."""
    text: str


# ---------------------------------------------------------------- targets

@dataclass(frozen=True)
class Verdict:
    """ACCEPT, DROP or RETURN."""
    name: str


@dataclass(frozen=True)
class Reject:
    """REJECT with an ICMP/ICMPv6 error or a TCP reset (``reason``)."""
    reason: str = "port-unreachable"     # a key of fields.REJECT_REASONS


@dataclass(frozen=True)
class Log:
    """LOG / ``log``: a kernel log line per packet (``level`` is syslog's, 0-7), then the next rule."""
    prefix: Optional[str] = None
    level: int = 4


@dataclass(frozen=True)
class Jump:
    """Jump to a user chain ``chain`` (returning here at its end)."""
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
