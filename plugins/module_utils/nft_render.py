# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render the model as nftables JSON, in the exact form ``nft -j list`` prints.

Private to the paranoid.netconfine collection. Pure functions, no I/O.

What a task owns on the nftables backend lives in one table of ours,
``table inet netconfine``: one base chain per hook (and position) with an
explicit priority, holding only tagged jumps; one regular chain per task
(``model.Chain.name``) plus, where a rule needs them, numbered helper chains
(``NC-...-1234abcd.1``). A rule is a dict ``{"expr": [...], "comment": ...}``
whose ``expr`` is what ``nft -j list`` prints and ``nft -j -f`` accepts, so
the same value is applied, read back and compared (after :func:`normalise`,
which undoes the orderings nft does not keep).

Three translations carry the iptables meaning over:

* a rule of both families becomes one ``inet`` rule; a rule of one family
  gets ``meta nfproto`` unless another expression already implies it;
* an owner match whose options are all negated also matches packets without
  a socket in xt_owner, but ``meta skuid != N`` never does: such a rule jumps
  to a helper chain that returns for the owners it excludes (RETURN rules
  split the chain instead, see :func:`_emit`);
* ``gid_owner`` with ``suppl_groups`` becomes ``meta skgid G`` or ``meta skuid
  { members }`` (``Owner.gid_members``, resolved on the target);

and one makes the per-packet cost flat: consecutive rules of one shape that
differ only in owner ids and ports, end in accept/drop/return and cannot
match the same packet become one set or verdict-map lookup
(:func:`merge_lookups`).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import socket
from collections import namedtuple

from ansible_collections.paranoid.netconfine.plugins.module_utils import fields, model, secmark_render
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError

# One encoder each, made once: json.dumps() given any option builds a new JSONEncoder per call, and a
# 1,000-rule render encodes ~10,000 expressions (keys for merging and sorting, the canonical texts).
_sorted_json = json.JSONEncoder(sort_keys=True).encode
_canonical_json = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode

TABLE_FAMILY, TABLE_NAME, TABLE = fields.TABLE_FAMILY, fields.TABLE_NAME, fields.TABLE   # the table's name
MAX_ID = 4294967295

# Explicit priorities: one below (first) or above (last) the priority of the
# iptables table of the same name, so the order against iptables-nft, Docker
# and firewalld chains at the same hook is never left to creation order.
BaseChain = namedtuple("BaseChain", "name type hook prio")
_HOOKS = {
    ("filter", "INPUT"): ("filter", "input", 0),
    ("filter", "FORWARD"): ("filter", "forward", 0),
    ("filter", "OUTPUT"): ("filter", "output", 0),
    ("mangle", "PREROUTING"): ("filter", "prerouting", -150),
    ("mangle", "INPUT"): ("filter", "input", -150),
    ("mangle", "FORWARD"): ("filter", "forward", -150),
    ("mangle", "OUTPUT"): ("route", "output", -150),
    ("mangle", "POSTROUTING"): ("filter", "postrouting", -150),
    ("nat", "PREROUTING"): ("nat", "prerouting", -100),
    ("nat", "INPUT"): ("nat", "input", 100),
    ("nat", "OUTPUT"): ("nat", "output", -100),
    ("nat", "POSTROUTING"): ("nat", "postrouting", 100),
    # table bridge netconfine (nft_bridge): before the bridge family's filter priority and br_netfilter
    ("bridge", "PREROUTING"): ("filter", "prerouting", -200),
    ("bridge", "FORWARD"): ("filter", "forward", -200),
    # its conntrack form's service policy: guest to host, host to guest (the egress port is known there)
    ("bridge", "INPUT"): ("filter", "input", -200),
    ("bridge", "OUTPUT"): ("filter", "output", -200),
}
POSITION_OFFSET = {"first": -1, "last": 1}


def base_chain(table, builtin, position="first"):
    """The base chain of ours that stands for iptables' ``table``/``builtin`` at ``position``."""
    try:
        kind, hook, prio = _HOOKS[(table, builtin)]
    except KeyError:
        raise NetconfineError("the nftables backend has no hook for %s %s" % (table, builtin), "chain")
    name = "%s_%s" % (table, hook) + ("_last" if position == "last" else "")
    return BaseChain(name, kind, hook, prio + POSITION_OFFSET[position])


# ---------------------------------------------------------------- expressions

def meta(key):
    return {"meta": {"key": key}}


def payload(protocol, field):
    return {"payload": {"protocol": protocol, "field": field}}


def match(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


def span(pair):
    """An inclusive (low, high) pair as nft prints it: a number or a range."""
    low, high = pair
    return low if low == high else {"range": [low, high]}


def network(net):
    """An address or prefix as nft prints it (IPv6 as inet_ntop does: ::ffff:192.0.2.1)."""
    addr = str(net.network_address) if net.version == 4 else \
        socket.inet_ntop(socket.AF_INET6, net.network_address.packed)
    if net.prefixlen == net.max_prefixlen:
        return addr
    return {"prefix": {"addr": addr, "len": net.prefixlen}}


def _op(negate):
    return "!=" if negate else "=="


NFPROTO = {4: "ipv4", 6: "ipv6"}
L4PROTO = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "ipv6-icmp": "ipv6-icmp", "sctp": "sctp",
           "udplite": "udplite"}

# nft's symbolic names (src/proto.c, src/datatype.c); anything else prints as a number.
ICMP_TYPE_NAMES = {0: "echo-reply", 3: "destination-unreachable", 4: "source-quench", 5: "redirect",
                   8: "echo-request", 9: "router-advertisement", 10: "router-solicitation",
                   11: "time-exceeded", 12: "parameter-problem", 13: "timestamp-request",
                   14: "timestamp-reply", 15: "info-request", 16: "info-reply",
                   17: "address-mask-request", 18: "address-mask-reply"}
ICMP_CODE_NAMES = {0: "net-unreachable", 1: "host-unreachable", 2: "prot-unreachable",
                   3: "port-unreachable", 4: "frag-needed", 9: "net-prohibited", 10: "host-prohibited",
                   13: "admin-prohibited"}
ICMPV6_TYPE_NAMES = {1: "destination-unreachable", 2: "packet-too-big", 3: "time-exceeded",
                     4: "parameter-problem", 128: "echo-request", 129: "echo-reply",
                     130: "mld-listener-query", 131: "mld-listener-report", 132: "mld-listener-done",
                     133: "nd-router-solicit", 134: "nd-router-advert", 135: "nd-neighbor-solicit",
                     136: "nd-neighbor-advert", 137: "nd-redirect", 138: "router-renumbering",
                     141: "ind-neighbor-solicit", 142: "ind-neighbor-advert", 143: "mld2-listener-report"}
ICMPV6_CODE_NAMES = {0: "no-route", 1: "admin-prohibited", 3: "addr-unreachable", 4: "port-unreachable",
                     5: "policy-fail", 6: "reject-route"}

# a range bound nft prints by name must be written as a number in nft syntax ("echo-reply-255" is not)
_NUMBER_OF_NAME = {"icmp": dict((name, number) for number, name in ICMP_TYPE_NAMES.items()),
                   "icmpv6": dict((name, number) for number, name in ICMPV6_TYPE_NAMES.items())}

# model.Reject reasons -> (type, code) per family; None means the family-neutral icmpx form.
_ICMPX = {"port-unreachable": "port-unreachable", "net-unreachable": "no-route",
          "host-unreachable": "host-unreachable", "admin-prohibited": "admin-prohibited"}
_REJECT = {
    "proto-unreachable": {4: ("icmp", "prot-unreachable"), 6: ("icmpv6", "port-unreachable")},
    "net-prohibited": {4: ("icmp", "net-prohibited"), 6: ("icmpv6", "admin-prohibited")},
    "host-prohibited": {4: ("icmp", "host-prohibited"), 6: ("icmpv6", "admin-prohibited")},
}
LOG_LEVELS = ("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug")
LIMIT_UNITS = {"sec": "second", "min": "minute", "hour": "hour", "day": "day"}
CT_STATES = {"INVALID": "invalid", "NEW": "new", "RELATED": "related", "ESTABLISHED": "established",
             "UNTRACKED": "untracked"}
CT_STATUS = {"SNAT": "snat", "DNAT": "dnat"}
VERDICTS = {"ACCEPT": "accept", "DROP": "drop", "RETURN": "return"}


# ---------------------------------------------------------------- one model rule

class Compiled(object):
    """A model rule as nft pieces.

    The rule matches when every expression of ``pre`` and ``post`` matches,
    at least one alternative of ``alts`` matches (each a list of expressions)
    and no exclusion of ``excls`` matches in full. ``statement`` is the
    target (log, reject, verdict); ``terminal`` is whether it ends the chain.
    """

    def __init__(self, family):
        self.family = family
        self.pre = []
        self.alts = [[]]
        self.excls = []
        self.post = []
        self.statement = []
        self.terminal = True
        self.is_return = False
        self.comment = None
        self.implies_family = False

    def key(self):
        return _sorted_json([self.pre, self.alts, self.excls, self.post, self.statement, self.comment])


def _icmp_value(names, number):
    return names.get(number, number)


def _icmp(m, out, excls):
    proto, tnames, cnames = (("icmp", ICMP_TYPE_NAMES, ICMP_CODE_NAMES) if m.family == 4
                             else ("icmpv6", ICMPV6_TYPE_NAMES, ICMPV6_CODE_NAMES))
    if m.type == "any":
        if m.negate:
            # '! --icmp-type any' matches no packet at all; so does this
            out.append(match(payload(proto, "type"), {"range": [_icmp_value(tnames, 0), 255]}, "!="))
        else:
            out.append(match(meta("l4proto"), "icmp" if m.family == 4 else "ipv6-icmp"))
        return
    parts = [int(p) for p in m.type.split("/")]
    exprs = [match(payload(proto, "type"), _icmp_value(tnames, parts[0]))]
    if len(parts) > 1:
        exprs.append(match(payload(proto, "code"), _icmp_value(cnames, parts[1])))
    if not m.negate:
        out.extend(exprs)
    elif len(exprs) == 1:
        out.append(match(exprs[0]["match"]["left"], exprs[0]["match"]["right"], "!="))
    else:
        # not (type T and code C): still an ICMP packet, excluded when both match
        out.append(match(meta("l4proto"), "icmp" if m.family == 4 else "ipv6-icmp"))
        excls.append(exprs)


def _owner(m, c):
    """Owner match (xt_owner semantics) into c.pre / c.alts / c.excls.

    xt_owner matches a packet without a (file-backed) socket exactly when
    every option given is negated; ``meta skuid``/``skgid`` never match such
    a packet. So a rule whose owner options are all negated is expressed as
    exclusions (the positive forms) rather than ``!=`` matches.
    """
    positives = []          # expressions that must all match
    alternatives = None     # one of these lists must match (supplementary groups)
    negated = []            # lists of expressions; the rule must not match any in full
    if m.socket_exists is True:
        positives.append(match(meta("skuid"), {"range": [0, MAX_ID]}))
    if m.uid is not None:
        (negated.append([match(meta("skuid"), span(m.uid))]) if m.uid_negate
         else positives.append(match(meta("skuid"), span(m.uid))))
    if m.gid is not None:
        gid_terms = [[match(meta("skgid"), span(m.gid))]]
        if m.suppl_groups and m.gid_members:
            gid_terms.append([match(meta("skuid"), id_set(m.gid_members))])
        if m.gid_negate:
            negated.extend(gid_terms)
        elif len(gid_terms) == 1:
            positives.extend(gid_terms[0])
        else:
            # skgid G, or else (skgid != G) a member uid: never both, so a LOG logs once
            alternatives = [gid_terms[0], [match(meta("skgid"), span(m.gid), "!=")] + gid_terms[1]]
    if m.socket_exists is False:
        negated.append([match(meta("skuid"), {"range": [0, MAX_ID]})])
    socketless = not positives and alternatives is None and m.socket_exists is not True
    if socketless:
        c.excls.extend(negated)
    else:
        for terms in negated:
            if len(terms) != 1:
                raise NetconfineError("cannot negate a combined owner condition", "uid_owner")
            inner = terms[0]["match"]
            positives.append(match(inner["left"], inner["right"], "!="))
    if alternatives is not None:
        c.alts = alternatives
    return positives


def _conntrack(m):
    states = [CT_STATES[s] for s in m.states if s in CT_STATES]
    status = [CT_STATUS[s] for s in m.states if s in CT_STATUS]
    if states and status:
        raise NetconfineError("conntrack states SNAT/DNAT cannot be combined with other states on the nftables "
                              "backend (they are 'ct status' there)", "ctstate")
    key, values = ("state", states) if states else ("status", status)
    return match({"ct": {"key": key}}, values[0] if len(values) == 1 else sorted(values), "in")


def _cgroup(m):
    path = m.path.strip("/")
    if not path:
        raise NetconfineError("the root cgroup matches every socket; give a path below it", "cgroup")
    return match({"socket": {"key": "cgroupv2", "level": path.count("/") + 1}}, path, _op(m.negate))


def _destination_type(m):
    """``fib daddr type local``: the kernel's route lookup says whether the destination is this host."""
    return match({"fib": {"result": "type", "flags": ["daddr"]}}, m.type.lower(), _op(m.negate))


def _limit(m):
    return {"limit": {"rate": m.rate, "burst": m.burst, "per": LIMIT_UNITS[m.unit]}}


# A rule that logs, rejects or drops counts its hits (``counter`` before the statement), as every
# iptables rule does: where LOG output is invisible (a network namespace without
# net.netfilter.nf_log_all_netns=1) the counter still shows the rule matched. The values are
# not state: ``normalise`` drops them, so traffic never reads as drift.
COUNTER = {"counter": None}


def _target(target, family, c, chain=None):
    if isinstance(target, model.Verdict):
        c.statement = [{VERDICTS[target.name]: None}]
        if target.name == "DROP":
            c.statement.insert(0, COUNTER)
        c.is_return = target.name == "RETURN"
    elif isinstance(target, model.Reject):
        if target.reason == "tcp-reset":
            c.statement = [{"reject": {"type": "tcp reset"}}]
        elif target.reason in _ICMPX:
            c.statement = [{"reject": {"type": "icmpx", "expr": _ICMPX[target.reason]}}]
        else:
            kind, code = _REJECT[target.reason][family]
            c.statement = [{"reject": {"type": kind, "expr": code}}]
            c.implies_family = True
        c.statement.insert(0, COUNTER)
    elif isinstance(target, model.Log):
        body = {}
        if target.prefix:
            body["prefix"] = target.prefix
        if target.level != 4:
            body["level"] = LOG_LEVELS[target.level]
        c.statement = [COUNTER, {"log": body or None}]
        c.terminal = False
    elif isinstance(target, model.Jump):
        c.statement = [{"jump": {"target": target.chain}}]
        c.terminal = False
    elif secmark_render.nft_target(target, c, chain):
        pass
    elif not _nat().nft_target(target, family, c):
        raise TypeError("no nftables form for target %r" % (target,))


def _nat():
    """nat_render, imported where a rule has a NAT target (netns_service's forwards) and only there."""
    from ansible_collections.paranoid.netconfine.plugins.module_utils import nat_render

    return nat_render


# Where the bridge table of ours (nft_bridge) records a frame's bridge ports in the packet mark, for
# the inet table's rules that br_netfilter shows bridged packets to (there the ports are not known:
# iifname/oifname are the bridge). Bits 8-15: the guest it came from; bits 16-23: the guest it goes to.
MARK_IN_MASK = 0x0000ff00
MARK_OUT_MASK = 0x00ff0000


def _mark_match(mask, value):
    return match({"&": [meta("mark"), mask]}, value)


def _physdev(m, c):
    """``-m physdev`` as nftables sees a bridged packet through br_netfilter: the bridge and our marks."""
    out = []
    for port, ifname, mask, value in ((m.in_port, "iifname", MARK_IN_MASK, m.in_mark),
                                      (m.out_port, "oifname", MARK_OUT_MASK, m.out_mark)):
        if port is None:
            continue
        if m.bridge is None or value is None:
            raise NetconfineError("a bridge port match needs the bridge table's marks on nftables (%s)" % port,
                                  "backend")
        out += [match(meta(ifname), m.bridge), _mark_match(mask, value)]
    return out


# Extension point: a later module adds its match class here (physdev, SECMARK, ...).
MATCHES = {
    model.Physdev: _physdev,
    model.Conntrack: lambda m, c: [_conntrack(m)],
    model.Cgroup: lambda m, c: [_cgroup(m)],
    model.DestinationType: lambda m, c: [_destination_type(m)],
    model.Limit: lambda m, c: [_limit(m)],
}


def compile_rule(rule, chain=None):
    """One model.Rule -> Compiled (nft expressions, not yet placed in a chain).

    ``chain``: the name of the chain the rule is rendered for (a SECMARK label names an object of it).
    """
    c = Compiled(rule.family)
    ip = "ip" if rule.family == 4 else "ip6"
    head = []
    if rule.in_interface is not None:
        head.append(match(meta("iifname"), _ifname(rule.in_interface), _op(rule.in_interface_negate)))
    if rule.out_interface is not None:
        head.append(match(meta("oifname"), _ifname(rule.out_interface), _op(rule.out_interface_negate)))
    # a /0 is no address match at all (its negation is refused by fields.addresses)
    if rule.source is not None and (rule.source.prefixlen or rule.source_negate):
        head.append(match(payload(ip, "saddr"), network(rule.source), _op(rule.source_negate)))
        c.implies_family = True
    if rule.destination is not None and (rule.destination.prefixlen or rule.destination_negate):
        head.append(match(payload(ip, "daddr"), network(rule.destination), _op(rule.destination_negate)))
        c.implies_family = True
    carried = any(isinstance(m, model.Icmp) or (isinstance(m, model.Ports) and _port_matches(m))
                  for m in rule.matches)
    if rule.protocol is not None and not carried:
        head.append(match(meta("l4proto"), L4PROTO[rule.protocol]))
    if rule.protocol == ("icmp" if rule.family == 4 else "ipv6-icmp"):
        c.implies_family = True      # nft hides 'meta nfproto' before an ICMP protocol of that family
    side = c.pre
    side.extend(head)
    for m in rule.matches:
        if isinstance(m, model.Comment):
            c.comment = m.text
        elif isinstance(m, model.Ports):
            side.extend(_port_matches(m))
        elif isinstance(m, model.Icmp):
            _icmp(m, side, c.excls)
        elif isinstance(m, model.Owner):
            side.extend(_owner(m, c))
            side = c.post        # what follows the owner match is evaluated after it (limit!)
        elif type(m) in MATCHES:
            side.extend(MATCHES[type(m)](m, c))
        else:
            raise TypeError("no nftables form for match %r" % (m,))
    _target(rule.target, rule.family, c, chain)
    return c


ALL_PORTS = (0, 65535)


def _port_matches(m):
    """sport/dport matches; the full range without '!' is no port match at all (only the protocol)."""
    out = []
    for field, pair, negate in (("sport", m.sport, m.sport_negate), ("dport", m.dport, m.dport_negate)):
        if pair is not None and (pair != ALL_PORTS or negate):
            out.append(match(payload(m.protocol, field), span(pair), _op(negate)))
    return out


def _ifname(name):
    return name[:-1] + "*" if name.endswith("+") else name


def id_set(ids):
    """A set of numeric ids with consecutive runs as ranges (nft's auto-merged form)."""
    return {"set": merge_spans([(i, i) for i in ids])}


def merge_spans(pairs):
    """Merge overlapping and adjacent (low, high) pairs; return nft values (numbers / ranges)."""
    out = []
    for low, high in sorted(pairs):
        if out and low <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], high)
        else:
            out.append([low, high])
    return [span(p) for p in out]


# ---------------------------------------------------------------- a chain

_ICMPX_OF_FAMILY = {
    4: {"port-unreachable": "port-unreachable", "no-route": "net-unreachable",
        "host-unreachable": "host-unreachable", "admin-prohibited": "admin-prohibited"},
    6: {"port-unreachable": "port-unreachable", "no-route": "no-route",
        "host-unreachable": "addr-unreachable", "admin-prohibited": "admin-prohibited"},
}
_VERSION_MARK = {4: ("ip", 4), 6: ("ip6", 6)}


def _family_pass(compiled):
    """Pair consecutive IPv4/IPv6 copies of one rule into one inet rule; restrict the rest to their family.

    A one-family reject says its family another way: a family-specific ICMP
    type (``_rule`` adds the ``meta nfproto`` nft itself adds and prints
    before it), or ``ip version 4`` / ``ip6 version 6`` before a TCP reset.
    Everywhere else ``meta nfproto`` is kept as printed.
    """
    out = []
    i = 0
    while i < len(compiled):
        c = compiled[i]
        nxt = compiled[i + 1] if i + 1 < len(compiled) else None
        if (nxt is not None and c.family == 4 and nxt.family == 6 and not c.implies_family
                and not nxt.implies_family and c.key() == nxt.key()):
            c.family = None
            out.append(c)
            i += 2
            continue
        reject = c.statement[-1].get("reject") if c.statement and isinstance(c.statement[-1], dict) else None
        if reject and reject.get("type") == "icmpx":
            kind = "icmp" if c.family == 4 else "icmpv6"
            c.statement = c.statement[:-1] + [
                {"reject": {"type": kind, "expr": _ICMPX_OF_FAMILY[c.family][reject["expr"]]}}]
        elif not c.implies_family and reject:
            proto, version = _VERSION_MARK[c.family]
            c.pre.insert(0, match(payload(proto, "version"), version))
        elif not c.implies_family:
            c.pre.insert(0, match(meta("nfproto"), NFPROTO[c.family]))
        out.append(c)
        i += 1
    return out


def _mentions_tcp(expr):
    text = json.dumps(expr)
    return '"protocol": "tcp"' in text or ('"l4proto"' in text and '"tcp"' in text)


_REJECT_NFPROTO = {"icmp": "ipv4", "icmpv6": "ipv6"}


def _says_family(expr):
    """Whether an expression already restricts the rule to one IP family (so nft adds no ``meta nfproto``)."""
    m = expr.get("match") if isinstance(expr, dict) else None
    if not m:
        return False
    left = m["left"]
    if "payload" in left:
        return left["payload"]["protocol"] in ("ip", "ip6", "icmp", "icmpv6")
    if "meta" in left:
        key = left["meta"]["key"]
        return key == "nfproto" or (key == "l4proto" and m["right"] in ("icmp", "ipv6-icmp"))
    return False


def _rule(exprs, comment=None):
    reject = exprs[-1].get("reject") if exprs and isinstance(exprs[-1], dict) else None
    if (reject and reject.get("type") in _REJECT_NFPROTO and COUNTER in exprs
            and not any(_says_family(e) for e in exprs)):
        # an ICMP reject needs its family: nft adds 'meta nfproto' first in the rule and, once a
        # counter stands between them, prints it; say it ourselves so the read-back compares equal
        exprs = [match(meta("nfproto"), _REJECT_NFPROTO[reject["type"]])] + exprs
    if exprs and exprs[-1] == {"reject": {"type": "tcp reset"}} and not any(_mentions_tcp(e) for e in exprs[:-1]):
        # nft adds (and prints) this dependency itself; a helper chain's reject has no protocol match
        tail = 2 if len(exprs) > 1 and exprs[-2] == COUNTER else 1
        exprs = exprs[:-tail] + [match(meta("l4proto"), "tcp")] + exprs[-tail:]
    rule = {"expr": exprs}
    if comment is not None:
        rule["comment"] = comment
    return rule


def _emit(name, compiled):
    """Place compiled rules into the task's chain and its helper chains: [(chain, [rule])]."""
    chains = [(name, [])]
    helpers = {}

    def helper(rules):
        key = _sorted_json(rules)
        if key not in helpers:
            helpers[key] = "%s.%d" % (name, len(chains))
            chains.append((helpers[key], rules))
        return helpers[key]

    current = chains[0][1]
    for c in compiled:
        body = [_rule(c.pre + alt + c.post + c.statement, c.comment) for alt in c.alts]
        if not c.excls:
            current.extend(body)
        elif not c.is_return:
            # jump to a helper that returns for what is excluded, then applies the rule's target
            rules = [_rule(e + [{"return": None}]) for e in c.excls]
            rules += [_rule(alt + c.post + c.statement, c.comment) for alt in c.alts]
            current.append(_rule(c.pre + [{"jump": {"target": helper(rules)}}], c.comment))
        else:
            # RETURN cannot be delegated to a helper: split the chain instead
            rest = "%s.%d" % (name, len(chains))
            chains.append((rest, []))
            for e in c.excls:
                current.append(_rule(c.pre + e + [{"goto": {"target": rest}}]))
            current.extend(body)
            current.append(_rule([{"goto": {"target": rest}}]))
            current = chains[-1][1]
    return chains


# Lookup merging: which matches may become a dimension of a set / verdict-map key.
_DIM_META = ("skuid", "skgid")
_DIM_PORT_PROTOCOLS = ("tcp", "udp", "sctp", "udplite")
_MERGE_VERDICTS = ("accept", "drop", "return")


def _dimension(expr):
    """(left, (low, high)) if expr is an '==' match on an owner id or a port with a number or range."""
    m = expr.get("match") if isinstance(expr, dict) else None
    if not m or m["op"] != "==":
        return None
    left = m["left"]
    if "meta" in left and left["meta"]["key"] in _DIM_META:
        pass
    elif ("payload" in left and left["payload"]["protocol"] in _DIM_PORT_PROTOCOLS
          and left["payload"]["field"] in ("sport", "dport")):
        pass
    else:
        return None
    right = m["right"]
    if isinstance(right, int) and not isinstance(right, bool):
        return left, (right, right)
    if isinstance(right, dict) and "range" in right:
        return left, tuple(right["range"])
    return None


def _shape(rule):
    """(shape, box, verdict, dims) of a mergeable rule, or None.

    ``shape``: the rule's matches as one JSON text, each dimension by its left side only (two rules of one
    shape differ in their ids / ports alone); ``box``: the dimensions' (low, high) values; ``dims``: which
    match is a dimension, by position.
    """
    if "comment" in rule or not rule["expr"]:
        return None
    matches, verdict = rule["expr"][:-1], rule["expr"][-1]
    if not (isinstance(verdict, dict) and len(verdict) == 1 and next(iter(verdict)) in _MERGE_VERDICTS):
        return None
    tail = (verdict,)
    if matches and matches[-1] == COUNTER:
        matches, tail = matches[:-1], (COUNTER, verdict)
    parts, box, dims = [], [], []
    for expr in matches:
        if "match" not in expr:
            return None          # a statement (limit, log, counter) is stateful: never shared
        dim = _dimension(expr)
        dims.append(dim is not None)
        if dim is None:
            parts.append(expr)
        else:
            parts.append({"dim": dim[0]})
            box.append(dim[1])
    if not box:
        return None
    return _sorted_json(parts), tuple(box), tail, tuple(dims)


def _disjoint(a, b):
    return any(x[1] < y[0] or y[1] < x[0] for x, y in zip(a, b))


class _Run:
    """The boxes of a run being merged, for the pairwise-disjoint test without comparing every pair.

    Boxes of one run have the same dimensions. Two point boxes (low == high in
    every dimension) overlap only when equal, so points are kept in a set; a
    box with a range is compared one by one. A run of N single ids or ports is
    checked in O(N) instead of O(N^2).
    """

    def __init__(self, box):
        self.points, self.ranges = set(), []
        self.add(box)

    @staticmethod
    def _is_point(box):
        return all(low == high for low, high in box)

    def disjoint(self, box):
        if not all(_disjoint(box, other) for other in self.ranges):
            return False
        if self._is_point(box):
            return box not in self.points
        return all(_disjoint(box, other) for other in self.points)

    def add(self, box):
        if self._is_point(box):
            self.points.add(box)
        else:
            self.ranges.append(box)


def merge_lookups(rules, minimum=2, verdict_chain=None):
    """Merge runs of rules that differ only in owner ids / ports into one set or verdict-map rule.

    Only consecutive rules with the same other matches, ending in accept, drop
    or return, whose keys cannot match the same packet (pairwise disjoint
    boxes) are merged: a packet then matches at most one element, exactly as
    it matched at most one of the rules, so first-match order is kept.

    A counted verdict (``counter drop``) stays counted: a run with one verdict
    becomes ``... @set counter drop``; in a verdict map, whose elements cannot
    carry a statement, it becomes ``goto`` a chain named by
    ``verdict_chain(tail)`` that holds the counter and the verdict. Without
    ``verdict_chain`` counted rules only merge with rules of the same verdict.
    """
    out = []
    shapes = [_shape(rule) for rule in rules]
    i = 0
    while i < len(rules):
        first = shapes[i]
        j = i + 1
        if first is not None:
            boxes = _Run(first[1])
            tails = {_sort_key(first[2]): len(first[2])}      # the run's verdicts -> counted (2) or not (1)
            while j < len(rules):
                nxt = shapes[j]
                if nxt is None or nxt[0] != first[0] or not boxes.disjoint(nxt[1]):
                    break
                both = dict(tails, **{_sort_key(nxt[2]): len(nxt[2])})
                if verdict_chain is None and len(both) > 1 and max(both.values()) > 1:
                    break
                boxes.add(nxt[1])
                tails = both
                j += 1
        if first is None or j - i < minimum:
            out.append(rules[i])
            i += 1
            continue
        out.append(_merged(rules[i:j], shapes[i:j], verdict_chain))
        i = j
    return out


def _merged(group, shapes, verdict_chain=None):
    """One set or verdict-map rule for ``group`` (rules of one run; ``shapes``: their ``_shape``)."""
    ndims = len(shapes[0][1])
    varying = [d for d in range(ndims) if len(set(s[1][d] for s in shapes)) > 1]
    exprs, lefts, dim = [], [], 0
    for index, is_dim in enumerate(shapes[0][3]):
        expr = group[0]["expr"][index]
        if is_dim:
            if dim in varying:
                lefts.append(expr["match"]["left"])
            else:
                exprs.append(expr)
            dim += 1
        else:
            exprs.append(expr)

    def key_of(box):
        values = [span(box[d]) for d in varying]
        return values[0] if len(values) == 1 else {"concat": values}

    key = lefts[0] if len(lefts) == 1 else {"concat": lefts}
    verdicts = [s[2] for s in shapes]
    if all(v == verdicts[0] for v in verdicts):
        elements = [key_of(s[1]) for s in shapes]
        if len(varying) == 1:
            elements = merge_spans([(e, e) if isinstance(e, int) else tuple(e["range"]) for e in elements])
        exprs.append(match(key, {"set": elements} if len(elements) > 1 else elements[0]))
        exprs.extend(verdicts[0])
    else:
        def element_verdict(tail):
            return tail[0] if len(tail) == 1 else {"goto": {"target": verdict_chain(tail)}}
        exprs.append({"vmap": {"key": key, "data": {"set": [[key_of(s[1]), element_verdict(s[2])]
                                                            for s in shapes]}}})
    return _rule(exprs)


def render_chain(chain, merge=True):
    """A model.Chain -> [(chain name, [rule])]: the task's chain first, then its helpers."""
    compiled = _family_pass([compile_rule(r, chain.name) for r in chain.rules])
    chains = _emit(chain.name, compiled)
    if merge:
        counted = {}      # a counted verdict of a verdict map -> the helper chain holding it

        def verdict_chain(tail):
            key = _sorted_json(tail)
            if key not in counted:
                counted[key] = ("%s.%d" % (chain.name, len(chains) + len(counted)), list(tail))
            return counted[key][0]

        chains = [(name, merge_lookups(rules, verdict_chain=verdict_chain)) for name, rules in chains]
        chains += [(name, [_rule(tail)]) for name, tail in counted.values()]
    return [(name, tuple(normalise(r) for r in rules)) for name, rules in chains]


def jump_rule(policy, chain):
    """The tagged jump from our base chain into the task's chain."""
    return normalise(_rule([{"jump": {"target": chain.name}}], policy.tag))


POLICY_TAG = "netconfine:policy"


def policy_marker():
    """First rule of a task's chain while the task manages its base chain's policy (it only counts)."""
    return normalise(_rule([{"counter": None}], POLICY_TAG))


def family_drop_rule(policy, family):
    """Managed DROP policy for one family only: a tagged rule at the end of the shared base chain."""
    return normalise(_rule([match(meta("nfproto"), NFPROTO[family]), {"drop": None}], policy.tag))


# ---------------------------------------------------------------- normal form

def _sort_key(value):
    """The JSON text of ``value`` (sort keys), written out directly for the elements sets hold by the
    thousand (a number, a concatenation of numbers): the same text, without the encoder's overhead."""
    kind = value.__class__
    if kind is int:
        return str(value)
    if kind is dict and len(value) == 1 and "concat" in value and all(x.__class__ is int for x in value["concat"]):
        return '{"concat": [%s]}' % ", ".join(map(str, value["concat"]))
    return _sorted_json(value)


def _normal_value(value, plain_set):
    if isinstance(value, dict) and "set" in value:
        elements = [_normal_value(e, False) for e in value["set"]]
        if plain_set and all(isinstance(e, int) or (isinstance(e, dict) and set(e) == {"range"})
                             for e in elements):
            elements = merge_spans([(e, e) if isinstance(e, int) else tuple(e["range"]) for e in elements])
        else:
            elements = sorted(elements, key=_sort_key)
        # a concatenation stays in its set: nft refuses a singleton value there (and prints the set)
        single = len(elements) == 1 and plain_set and not (isinstance(elements[0], dict) and "concat" in elements[0])
        return elements[0] if single else {"set": elements}
    if isinstance(value, dict) and "range" in value and value["range"][0] == value["range"][1]:
        return value["range"][0]
    if isinstance(value, list):
        return [_normal_value(v, False) for v in value]
    if isinstance(value, dict):
        return dict((k, _normal_value(v, False)) for k, v in value.items())
    return value


def _normal_expr(expr):
    if isinstance(expr, dict) and "counter" in expr:
        return {"counter": None}          # the values count packets; they are not state
    if isinstance(expr, dict) and "match" in expr:
        m = dict(expr["match"])
        if "socket" in m["left"] and m["left"]["socket"].get("key") == "cgroupv2":
            # nft -j prints no level (it is the depth of the path)
            m["left"] = {"socket": {"key": "cgroupv2"}}
        right = m["right"]
        if m["op"] == "in" and isinstance(right, list):
            right = sorted(right)
            right = right[0] if len(right) == 1 else right
        else:
            right = _normal_value(right, True)
        m["right"] = right
        return {"match": m}
    if isinstance(expr, dict) and "mangle" in expr and isinstance(expr["mangle"].get("value"), dict) \
            and "map" in expr["mangle"]["value"]:
        # a map's elements come back in the kernel's order (nft_bridge's mark by port)
        mapped = dict(expr["mangle"]["value"]["map"])
        mapped["data"] = {"set": sorted(([_normal_value(k, False), v] for k, v in mapped["data"]["set"]),
                                        key=_sort_key)}
        return {"mangle": dict(expr["mangle"], value={"map": mapped})}
    if isinstance(expr, dict) and "vmap" in expr:
        vmap = dict(expr["vmap"])
        data = vmap["data"]
        if isinstance(data, dict) and "set" in data:
            pairs = [[_normal_value(k, False), v] for k, v in data["set"]]
            vmap["data"] = {"set": sorted(pairs, key=_sort_key)}
        return {"vmap": vmap}
    return expr


def normalise(rule):
    """A rule dict (ours or read back) in the normal form used for comparison: handles dropped,
    set elements sorted and adjacent ranges merged, one-element sets unwrapped."""
    out = {"expr": [_normal_expr(e) for e in rule.get("expr", [])]}
    if rule.get("comment") is not None:
        out["comment"] = rule["comment"]
    return out


def canonical(rule):
    """The comparison text of a normalised rule."""
    return _canonical_json(rule)


# ---------------------------------------------------------------- nft text (for people)

_BARE_META = ("iifname", "oifname", "iif", "oif", "mark")
_QUOTED = ("iifname", "oifname")


def _fmt_left(left, right=None):
    if "meta" in left:
        key = left["meta"]["key"]
        return key if key in _BARE_META else "meta %s" % key
    if "payload" in left:
        return "%s %s" % (left["payload"]["protocol"], left["payload"]["field"])
    if "ct" in left:
        return "ct %s" % left["ct"]["key"]
    if "socket" in left:
        sock = left["socket"]
        level = sock.get("level")
        if level is None and sock["key"] == "cgroupv2" and isinstance(right, str):
            level = right.strip("/").count("/") + 1
        return "socket %s" % sock["key"] + (" level %d" % level if level is not None else "")
    if "fib" in left:
        return "fib %s %s" % (" . ".join(left["fib"]["flags"]), left["fib"]["result"])
    if "concat" in left:
        return " . ".join(_fmt_left(x) for x in left["concat"])
    for op in ("&", "|"):
        if op in left and isinstance(left[op], list) and len(left[op]) == 2:
            return "%s %s 0x%08x" % (_fmt_left(left[op][0]), op, left[op][1])
    return _sorted_json(left)


def _quoted_key(left):
    """Whether the values matched against ``left`` are interface names (quoted, as nft prints them)."""
    parts = left["concat"] if "concat" in left else [left]
    return any("meta" in p and p["meta"]["key"] in _QUOTED for p in parts if isinstance(p, dict))


def _fmt_value(value, quoted=False):
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"%s"' % value if quoted else value
    if isinstance(value, list):
        return ",".join(_fmt_value(v, quoted) for v in value)
    if "range" in value:
        return "%s-%s" % tuple(_fmt_value(v) for v in value["range"])
    if "prefix" in value:
        return "%s/%d" % (value["prefix"]["addr"], value["prefix"]["len"])
    if "set" in value:
        return "{ %s }" % ", ".join(_fmt_value(v, quoted) for v in value["set"])
    if "concat" in value:
        return " . ".join(_fmt_value(v, quoted) for v in value["concat"])
    return _sorted_json(value)


def _fmt_verdict(value):
    (name, arg), = value.items()
    return name if arg is None else "%s %s" % (name, arg["target"])


_NAT_STATEMENTS = ("dnat", "masquerade")


def format_expr(expr):
    (kind, body), = expr.items()
    for concern in ((_nat(),) if kind in _NAT_STATEMENTS else ()) + (secmark_render,):
        text = concern.nft_format(expr)
        if text is not None:
            return text
    if kind == "match":
        left = body["left"]
        quoted = _quoted_key(left) or "socket" in left
        if "&" in left and isinstance(body["right"], int):
            return "meta %s %s 0x%08x" % (_fmt_left(left), body["op"], body["right"])
        op = "" if body["op"] in ("==", "in") else body["op"] + " "
        right = body["right"]
        if isinstance(right, dict) and "range" in right and "payload" in left:
            names = _NUMBER_OF_NAME.get(left["payload"]["protocol"], {})
            right = {"range": [names.get(v, v) for v in right["range"]]}
        return "%s %s%s" % (_fmt_left(left, right), op, _fmt_value(right, quoted))
    if kind in ("accept", "drop", "return", "continue", "jump", "goto"):
        return _fmt_verdict(expr)
    if kind == "vmap":
        quoted = _quoted_key(body["key"])
        items = ", ".join("%s : %s" % (_fmt_value(k, quoted), _fmt_verdict(v)) for k, v in body["data"]["set"])
        return "%s vmap { %s }" % (_fmt_left(body["key"]), items)
    if kind == "mangle":
        value = body["value"]
        if isinstance(value, dict) and "map" in value:
            quoted = _quoted_key(value["map"]["key"])
            items = ", ".join("%s : 0x%08x" % (_fmt_value(k, quoted), v) for k, v in value["map"]["data"]["set"])
            text = "%s map { %s }" % (_fmt_left(value["map"]["key"]), items)
        elif isinstance(value, dict) and "|" in value:
            text = "%s | 0x%08x" % (_fmt_left(value["|"][0]), value["|"][1])
        else:
            text = _fmt_value(value)
        return "%s set %s" % (_fmt_left(body["key"]), text)
    if kind == "reject":
        if body.get("type") == "icmpx" and body.get("expr") == "port-unreachable":
            return "reject"
        return "reject with %s" % body["type"] + (" %s" % body["expr"] if "expr" in body else "")
    if kind == "log":
        body = body or {}
        out = "log"
        if "prefix" in body:
            out += ' prefix "%s"' % body["prefix"]
        if "level" in body:
            out += " level %s" % body["level"]
        return out
    if kind == "limit":
        out = "limit rate %d/%s" % (body["rate"], body["per"])
        return out + (" burst %d packets" % body["burst"] if body.get("burst", 5) != 5 else "")
    if kind == "counter":
        return "counter"
    return _sorted_json(expr)


def format_rule(rule):
    """A rule dict as one line of nft syntax (as ``nft list`` prints it, for people)."""
    text = " ".join(format_expr(e) for e in rule.get("expr", []))
    if rule.get("comment") is not None:
        text += ' comment "%s"' % rule["comment"]
    return text
