# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render the model as the exact lines ``iptables-save`` prints.

Private to the paranoid.netconfine collection. Pure functions, no I/O: what
we want and what the kernel has compare as text. The canonical forms
(``-d 127.0.0.1/32``, ``-p tcp -m tcp``, ``--log-level`` omitted at 4,
owner options in the kernel's order, quoting) are those of iptables 1.8
(nf_tables and legacy); the integration tier round-trips them through the
kernel.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket

from ansible_collections.paranoid.netconfine.plugins.module_utils import model
from ansible_collections.paranoid.netconfine.plugins.module_utils.fields import REJECT_REASONS

_NO_QUOTE = frozenset("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def quote(value):
    """Quote a string the way xtables_save_string does (we never emit " \\ ')."""
    if value and all(c in _NO_QUOTE for c in value):
        return value
    return '"%s"' % value


def _neg(flag):
    return "! " if flag else ""


def _range(pair, sep):
    low, high = pair
    return str(low) if low == high else "%d%s%d" % (low, sep, high)


ALL_PORTS = (0, 65535)


def _network(net):
    """An address/prefix as iptables-save prints it: IPv6 as inet_ntop does (::ffff:192.0.2.1, not ::ffff:c000:201)."""
    if net.version == 6:
        return "%s/%d" % (socket.inet_ntop(socket.AF_INET6, net.network_address.packed), net.prefixlen)
    return str(net)


def _ports(m):
    # the full range is no port match at all: iptables-save prints nothing for it
    out = "-m %s" % m.protocol
    if m.sport is not None and (m.sport != ALL_PORTS or m.sport_negate):
        out += " %s--sport %s" % (_neg(m.sport_negate), _range(m.sport, ":"))
    if m.dport is not None and (m.dport != ALL_PORTS or m.dport_negate):
        out += " %s--dport %s" % (_neg(m.dport_negate), _range(m.dport, ":"))
    return out


def _icmp(m):
    if m.family == 4:
        return "-m icmp %s--icmp-type %s" % (_neg(m.negate), m.type)
    return "-m icmp6 %s--icmpv6-type %s" % (_neg(m.negate), m.type)


def _destination_type(m):
    return "-m addrtype %s--dst-type %s" % (_neg(m.negate), m.type)


def _owner(m):
    parts = ["-m owner"]
    if m.socket_exists is not None:
        parts.append("%s--socket-exists" % _neg(not m.socket_exists))
    if m.uid is not None:
        parts.append("%s--uid-owner %s" % (_neg(m.uid_negate), _range(m.uid, "-")))
    if m.gid is not None:
        parts.append("%s--gid-owner %s" % (_neg(m.gid_negate), _range(m.gid, "-")))
        if m.suppl_groups:
            parts.append("--suppl-groups")
    return " ".join(parts)


def _cgroup(m):
    return "-m cgroup %s--path %s" % (_neg(m.negate), quote(m.path))


def _physdev(m):
    # libxt_physdev prints --physdev-in, --physdev-out, then --physdev-is-bridged
    out = "-m physdev"
    if m.in_port is not None:
        out += " --physdev-in %s" % m.in_port
    if m.out_port is not None:
        out += " --physdev-out %s" % m.out_port
    if m.is_bridged:
        out += " --physdev-is-bridged"
    return out


def _conntrack(m):
    return "-m conntrack --ctstate %s" % ",".join(m.states)


def _limit(m):
    out = "-m limit --limit %d/%s" % (m.rate, m.unit)
    if m.burst != 5:
        out += " --limit-burst %d" % m.burst
    return out


def _comment(m):
    return "-m comment --comment %s" % quote(m.text)


MATCHES = {
    model.Ports: _ports,
    model.Icmp: _icmp,
    model.DestinationType: _destination_type,
    model.Owner: _owner,
    model.Cgroup: _cgroup,
    model.Conntrack: _conntrack,
    model.Physdev: _physdev,
    model.Limit: _limit,
    model.Comment: _comment,
}


def _target(target, family):
    if isinstance(target, model.Verdict):
        return "-j %s" % target.name
    if isinstance(target, model.Reject):
        return "-j REJECT --reject-with %s" % REJECT_REASONS[target.reason][0 if family == 4 else 1]
    if isinstance(target, model.Log):
        out = "-j LOG"
        if target.prefix:
            out += " --log-prefix %s" % quote(target.prefix)
        if target.level != 4:
            out += " --log-level %d" % target.level
        return out
    if isinstance(target, model.Jump):
        return "-j %s" % target.chain
    if isinstance(target, model.Secmark):
        return "-j SECMARK --selctx %s" % target.context
    if isinstance(target, model.ConnSecmark):
        return "-j CONNSECMARK --%s" % target.mode
    # imported here: only NAT targets (netns_service's forwards) get this far
    from ansible_collections.paranoid.netconfine.plugins.module_utils import nat_render

    nat = nat_render.iptables_target(target, family)
    if nat is not None:
        return nat
    raise TypeError("no iptables form for target %r" % (target,))


def render_rule(chain, rule):
    """One rule as ``-A CHAIN ...`` exactly as iptables-save prints it."""
    parts = ["-A", chain]
    if rule.source is not None and (rule.source.prefixlen or rule.source_negate):
        parts += [_neg(rule.source_negate) + "-s", _network(rule.source)]
    if rule.destination is not None and (rule.destination.prefixlen or rule.destination_negate):
        parts += [_neg(rule.destination_negate) + "-d", _network(rule.destination)]
    if rule.in_interface is not None:
        parts += [_neg(rule.in_interface_negate) + "-i", rule.in_interface]
    if rule.out_interface is not None:
        parts += [_neg(rule.out_interface_negate) + "-o", rule.out_interface]
    if rule.protocol is not None:
        parts += ["-p", rule.protocol]
    for match in rule.matches:
        try:
            parts.append(MATCHES[type(match)](match))
        except KeyError:
            raise TypeError("no iptables form for match %r" % (match,))
    parts.append(_target(rule.target, rule.family))
    return " ".join(parts)


def render_jump(policy, chain):
    """The tagged jump from the built-in chain into an owned chain."""
    return "-A %s -m comment --comment %s -j %s" % (chain.hook.builtin, quote(policy.tag), chain.name)


def policy_marker(chain_name):
    """First rule of an owned chain whose task manages its hook's built-in policy.

    A rule without a target only counts packets. It records in the kernel that
    the policy is ours, so the policy is released to ACCEPT once no task
    declares it, even by a task that no longer says ``policy``.
    """
    return '-A %s -m comment --comment "netconfine:policy"' % chain_name


def render_chain(chain):
    return tuple(render_rule(chain.name, rule) for rule in chain.rules)
