# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Strict parsers for every field type the netfilter modules accept.

Private to the paranoid.netconfine collection. Each parser takes the raw value
and the field's path (``rules[0].destination``) and returns a canonical value
or raises NetconfineError naming the field. Nothing here does I/O except
``resolve_host``, which asks the target's resolver.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import ipaddress
import re
import socket

from ansible.module_utils.common.parameters import DEFAULT_TYPE_VALIDATORS

from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError

# Free text that ends up inside iptables-restore or nft -f input. Anything
# that could close a quote, start a comment, end a statement or a block, or
# smuggle a second line is refused rather than escaped.
_TEXT_RE = re.compile(r"^[A-Za-z0-9 _.,:/@+=%()\[\]-]*\Z")
_IFACE_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,15}\+?\Z")
_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_ID_RANGE_RE = re.compile(r"^([0-9]{1,10})(?:-([0-9]{1,10}))?\Z")
_PORT_RE = re.compile(r"^([0-9]{1,5})(?:[:-]([0-9]{1,5}))?\Z")
_ACCOUNT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?\Z")

CHAIN_PREFIX = "NC-"
# the nftables backend's table (nft_render and nft_backend use it; shadowing and the other backend look for it)
TABLE_FAMILY = "inet"
TABLE_NAME = "netconfine"
TABLE = "%s %s" % (TABLE_FAMILY, TABLE_NAME)
CHAIN_MAX = 28
MAX_ID = 4294967294


def negation(value):
    """Split a leading ``!`` (with optional space) off a string value."""
    if isinstance(value, str) and value.startswith("!"):
        return value[1:].lstrip(" "), True
    return value, False


def text(value, field, max_len=128):
    """Free text (comment, log prefix, task name): printable, no quoting."""
    if not isinstance(value, str):
        raise NetconfineError("must be a string, got %r" % (value,), field)
    if len(value) > max_len:
        raise NetconfineError("is %d characters long, at most %d allowed" % (len(value), max_len), field)
    if not _TEXT_RE.match(value):
        bad = sorted(set(c for c in value if not _TEXT_RE.match(c)))
        raise NetconfineError(
            "contains characters that are not allowed (%s); use letters, digits, space and _.,:/@+=%%()[]-"
            % ", ".join(repr(c) for c in bad), field)
    return value


def task_name(value, field="name"):
    """The task name that owns chains; becomes part of chain names and tags."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise NetconfineError(
            "must be 1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit; got %r"
            % (value,), field)
    return value


def chain_name(name, suffix=""):
    """Derive the owned chain name from a task name.

    ``NC-`` + a readable slug + ``-`` + 8 hex digits of SHA-256 of the full
    name (and suffix), at most 28 characters. Distinct names give distinct
    chains; the jump's tag carries the full name so that a hash collision is
    detected instead of silently shared.
    """
    digest = hashlib.sha256((name + "\0" + suffix).encode("utf-8")).hexdigest()[:8]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name + ("-" + suffix if suffix else "")).strip("-")
    room = CHAIN_MAX - len(CHAIN_PREFIX) - 1 - len(digest)
    return "%s%s-%s" % (CHAIN_PREFIX, slug[:room].rstrip("-"), digest)


def interface(value, field):
    value, negate = negation(value)
    # IFNAMSIZ is 16 with the NUL: a wildcard '+' counts against the 15 characters
    if not isinstance(value, str) or not _IFACE_RE.match(value) or len(value) > 15:
        raise NetconfineError(
            "must be an interface name of 1-15 characters (letters, digits, '_', '.', '@', '-', "
            "optional trailing '+' included in the 15), got %r" % (value,), field)
    return value, negate


_ADDRESSES = {}      # text -> network, each text parsed once per run (a policy repeats the same few addresses)


def address(value, field):
    """One strict address or network. Host bits set, short forms, hex: refused."""
    known = _ADDRESSES.get(value) if isinstance(value, str) else None
    if known is not None:
        return known
    _ADDRESSES[value] = known = _address(value, field)
    return known


def _address(value, field):
    if not isinstance(value, str):
        raise NetconfineError("must be a string, got %r" % (value,), field)
    text_value = value.strip()
    if not text_value or text_value != value:
        raise NetconfineError("must be an address or CIDR without surrounding spaces, got %r" % (value,), field)
    try:
        if "/" in value:
            addr, plen = value.split("/", 1)
            if not plen.isdigit() or (len(plen) > 1 and plen[0] == "0"):
                raise ValueError("prefix length must be a decimal number")
            return ipaddress.ip_network(u"%s/%s" % (ipaddress.ip_address(u"%s" % addr), plen), strict=True)
        return ipaddress.ip_network(u"%s" % ipaddress.ip_address(u"%s" % value))
    except ValueError as exc:
        raise NetconfineError("%r is not a valid address or CIDR (%s)" % (value, exc), field)


_ADDRESS_LIKE_RE = re.compile(r"^[0-9a-fA-F:.]+(/[0-9]+)?\Z")
_DOTTED_RE = re.compile(r"^[0-9./]+\Z")


def looks_like_address(value):
    return bool(_ADDRESS_LIKE_RE.match(value)) and (":" in value or bool(_DOTTED_RE.match(value)))


def _inet_aton_accepts(value):
    """True for the lenient IPv4 forms (0x7f.1, 0x7f000001) the resolver would turn into an address."""
    try:
        socket.inet_aton(value)
    except (OSError, ValueError):
        return False
    return True


def resolve_host(value, field):
    """A hostname, resolved by the target's resolver into IPv4 and IPv6 networks."""
    if not _HOSTNAME_RE.match(value) or re.match(r"^[0-9.]+\Z", value) or _inet_aton_accepts(value):
        raise NetconfineError("%r is neither a valid address/CIDR nor a valid hostname" % (value,), field)
    try:
        infos = socket.getaddrinfo(value, None, 0, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NetconfineError("hostname %r does not resolve on this host (%s)" % (value, exc), field)
    nets = []
    for info in infos:
        net = ipaddress.ip_network(u"%s" % info[4][0].split("%")[0])
        if net not in nets:
            nets.append(net)
    return sorted(nets, key=lambda n: (n.version, n))


def addresses(values, field):
    """A list of address specs: CIDR, address, ``localhost`` or hostname.

    Returns ``(networks, negate, resolved)`` where ``resolved`` maps each
    hostname to the addresses it stood for (reported to the user).
    """
    if values is None:
        return None, False, {}
    if isinstance(values, str):
        values = [values]
    nets, resolved, negates = [], {}, set()
    for i, raw in enumerate(values):
        item_field = "%s[%d]" % (field, i) if len(values) > 1 else field
        if not isinstance(raw, str):
            raise NetconfineError("must be a string, got %r" % (raw,), item_field)
        spec, negate = negation(raw)
        negates.add(negate)
        if spec == "localhost":
            found = [ipaddress.ip_network(u"127.0.0.1/32"), ipaddress.ip_network(u"::1/128")]
        elif looks_like_address(spec):
            found = [address(spec, item_field)]
        else:
            found = resolve_host(spec, item_field)
            resolved[spec] = [str(n.network_address) for n in found]
        for net in found:
            if net not in nets:
                nets.append(net)
    if len(negates) > 1:
        raise NetconfineError("cannot mix negated ('!') and plain addresses in one rule", field)
    negate = negates.pop() if negates else False
    if negate and any(n.prefixlen == 0 for n in nets):
        raise NetconfineError("'!%s' matches no address at all; remove the rule instead"
                              % [n for n in nets if n.prefixlen == 0][0], field)
    if negate and len(nets) > 1 and len(set(n.version for n in nets)) != len(nets):
        raise NetconfineError("a negated match takes one address per IP version", field)
    return nets, negate, resolved


DESTINATION_TYPES = {"local": "LOCAL"}


def destination_type(value, field):
    """``local`` or ``!local`` -> (rtnetlink address type, negate).

    ``local`` is every address the kernel delivers to this host (``ip route show table local``):
    all of 127.0.0.0/8, ::1 and every address of every interface, also those added later.
    """
    raw, negate = negation(value)
    if not isinstance(raw, str) or raw.lower() not in DESTINATION_TYPES:
        raise NetconfineError("must be 'local' (any address of this host) or '!local', got %r" % (value,), field)
    return DESTINATION_TYPES[raw.lower()], negate


def port_range(value, field):
    """``992``, ``1000:2000`` or ``1000-2000`` → (low, high)."""
    value, negate = negation(str(value) if isinstance(value, int) and not isinstance(value, bool) else value)
    if not isinstance(value, str):
        raise NetconfineError("must be a port or port range, got %r" % (value,), field)
    match = _PORT_RE.match(value)
    if not match:
        raise NetconfineError("must be a port (0-65535) or range 'low:high', got %r" % (value,), field)
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) is not None else low
    if high > 65535 or low > 65535:
        raise NetconfineError("port must be between 0 and 65535, got %r" % (value,), field)
    if low > high:
        raise NetconfineError("range %r is reversed" % (value,), field)
    if negate and (low, high) == (0, 65535):
        raise NetconfineError("%r matches no port at all; remove the rule instead" % (value,), field)
    return (low, high), negate


def id_range(value, field):
    """A numeric id or range ``1000-2000`` → (low, high), or None if not numeric."""
    match = _ID_RANGE_RE.match(value)
    if not match:
        return None
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) is not None else low
    if high > MAX_ID:
        raise NetconfineError("id must be at most %d, got %r" % (MAX_ID, value), field)
    if low > high:
        raise NetconfineError("range %r is reversed" % (value,), field)
    return (low, high)


def account_name(value, field):
    if not _ACCOUNT_RE.match(value):
        raise NetconfineError("%r is not a valid user or group name" % (value,), field)
    return value


LIMIT_UNITS = {"s": "sec", "sec": "sec", "second": "sec", "m": "min", "min": "min", "minute": "min",
               "h": "hour", "hour": "hour", "d": "day", "day": "day"}
_LIMIT_RE = re.compile(r"^([0-9]{1,6})/([a-z]+)\Z")


# xt_limit keeps the period between packets in 1/10000 s; iptables-save prints it in the largest
# unit that still gives a sensible count (libxt_limit print_rate): 60/min reads back as 1/sec.
_LIMIT_SCALE = 10000
_LIMIT_SECONDS = (("day", 86400), ("hour", 3600), ("min", 60), ("sec", 1))


def limit(value, field):
    """``5/min`` style rate → (count, unit), unit in sec/min/hour/day, in the form the kernel prints back."""
    match = _LIMIT_RE.match(value) if isinstance(value, str) else None
    if not match or match.group(2) not in LIMIT_UNITS or int(match.group(1)) == 0:
        raise NetconfineError("must be a rate like '5/min' (units: second, minute, hour, day), got %r" % (value,), field)
    period = _LIMIT_SCALE * dict(_LIMIT_SECONDS)[LIMIT_UNITS[match.group(2)]] // int(match.group(1))
    if period == 0:
        raise NetconfineError("rate %r is too fast: the limit match allows at most %d/second"
                              % (value, _LIMIT_SCALE), field)
    index = 1
    while index < len(_LIMIT_SECONDS):
        mult = _LIMIT_SCALE * _LIMIT_SECONDS[index][1]
        if period > mult or mult // period < mult % period:
            break
        index += 1
    unit, seconds = _LIMIT_SECONDS[index - 1]
    return _LIMIT_SCALE * seconds // period, unit


LOG_LEVELS = {"emerg": 0, "alert": 1, "crit": 2, "error": 3, "err": 3, "warning": 4, "warn": 4,
              "notice": 5, "info": 6, "debug": 7}


def log_level(value, field):
    if value is None:
        return 4
    raw = str(value)
    if raw.isdigit() and int(raw) <= 7:
        return int(raw)
    if raw in LOG_LEVELS:
        return LOG_LEVELS[raw]
    raise NetconfineError("must be 0-7 or one of %s, got %r" % (", ".join(sorted(LOG_LEVELS)), value), field)


ICMP_TYPES = {
    "any": "any", "echo-reply": "0", "pong": "0", "destination-unreachable": "3",
    "network-unreachable": "3/0", "host-unreachable": "3/1", "protocol-unreachable": "3/2",
    "port-unreachable": "3/3", "fragmentation-needed": "3/4", "source-route-failed": "3/5",
    "network-unknown": "3/6", "host-unknown": "3/7", "network-prohibited": "3/9",
    "host-prohibited": "3/10", "TOS-network-unreachable": "3/11", "TOS-host-unreachable": "3/12",
    "communication-prohibited": "3/13", "host-precedence-violation": "3/14",
    "precedence-cutoff": "3/15", "source-quench": "4", "redirect": "5", "network-redirect": "5/0",
    "host-redirect": "5/1", "TOS-network-redirect": "5/2", "TOS-host-redirect": "5/3",
    "echo-request": "8", "ping": "8", "router-advertisement": "9", "router-solicitation": "10",
    "time-exceeded": "11", "ttl-exceeded": "11", "ttl-zero-during-transit": "11/0",
    "ttl-zero-during-reassembly": "11/1", "parameter-problem": "12", "ip-header-bad": "12/0",
    "required-option-missing": "12/1", "timestamp-request": "13", "timestamp-reply": "14",
    "address-mask-request": "17", "address-mask-reply": "18",
}
ICMPV6_TYPES = {
    "destination-unreachable": "1", "no-route": "1/0", "communication-prohibited": "1/1",
    "beyond-scope": "1/2", "address-unreachable": "1/3", "port-unreachable": "1/4",
    "failed-policy": "1/5", "reject-route": "1/6", "packet-too-big": "2", "time-exceeded": "3",
    "ttl-exceeded": "3", "ttl-zero-during-transit": "3/0", "ttl-zero-during-reassembly": "3/1",
    "parameter-problem": "4", "bad-header": "4/0", "unknown-header-type": "4/1",
    "unknown-option": "4/2", "echo-request": "128", "ping": "128", "echo-reply": "129", "pong": "129",
    "mld-listener-query": "130", "mld-listener-report": "131", "mld-listener-done": "132",
    "router-solicitation": "133", "router-advertisement": "134", "neighbour-solicitation": "135",
    "neighbor-solicitation": "135", "neighbour-advertisement": "136", "neighbor-advertisement": "136",
    "redirect": "137",
}
_ICMP_NUM_RE = re.compile(r"^([0-9]{1,3})(?:/([0-9]{1,3}))?\Z")


def icmp_type(value, family, field):
    """ICMP (family 4) or ICMPv6 (family 6) type name or ``type[/code]`` → canonical numeric text."""
    raw, negate = negation(str(value))
    table = ICMP_TYPES if family == 4 else ICMPV6_TYPES
    if raw in table:
        return table[raw], negate
    match = _ICMP_NUM_RE.match(raw)
    # type 255 is how iptables stores "any" ICMP type: a numeric 255 would read back as "any"
    if match and int(match.group(1)) <= (254 if family == 4 else 255) and \
            (match.group(2) is None or int(match.group(2)) <= 255):
        # canonical: no leading zeros (iptables-restore refuses "08")
        if match.group(2) is None:
            return "%d" % int(match.group(1)), negate
        return "%d/%d" % (int(match.group(1)), int(match.group(2))), negate
    raise NetconfineError(
        "%r is not an %s type name or number 'type[/code]' (type 0-%d, code 0-255)"
        % (raw, "ICMP" if family == 4 else "ICMPv6", 254 if family == 4 else 255),
        field)


# Reject reasons, neutral name -> (iptables v4, ip6tables v6, nft icmpx/icmp name).
REJECT_REASONS = {
    "port-unreachable": ("icmp-port-unreachable", "icmp6-port-unreachable"),
    "net-unreachable": ("icmp-net-unreachable", "icmp6-no-route"),
    "host-unreachable": ("icmp-host-unreachable", "icmp6-addr-unreachable"),
    "proto-unreachable": ("icmp-proto-unreachable", "icmp6-port-unreachable"),
    "net-prohibited": ("icmp-net-prohibited", "icmp6-adm-prohibited"),
    "host-prohibited": ("icmp-host-prohibited", "icmp6-adm-prohibited"),
    "admin-prohibited": ("icmp-admin-prohibited", "icmp6-adm-prohibited"),
    "tcp-reset": ("tcp-reset", "tcp-reset"),
}
_REJECT_ALIASES = {
    "icmp-port-unreachable": "port-unreachable", "icmp6-port-unreachable": "port-unreachable",
    "icmp-net-unreachable": "net-unreachable", "icmp6-no-route": "net-unreachable", "no-route": "net-unreachable",
    "icmp-host-unreachable": "host-unreachable", "icmp6-addr-unreachable": "host-unreachable",
    "addr-unreachable": "host-unreachable", "icmp-proto-unreachable": "proto-unreachable",
    "icmp-net-prohibited": "net-prohibited", "icmp-host-prohibited": "host-prohibited",
    "icmp-admin-prohibited": "admin-prohibited", "icmp6-adm-prohibited": "admin-prohibited",
    "adm-prohibited": "admin-prohibited", "tcp-rst": "tcp-reset",
}


def reject_reason(value, field):
    if value is None:
        return "port-unreachable"
    key = _REJECT_ALIASES.get(value, value)
    if key not in REJECT_REASONS:
        raise NetconfineError("must be one of %s, got %r" % (", ".join(sorted(REJECT_REASONS)), value), field)
    return key


CTSTATES = ("INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT")


def ctstates(values, field):
    if values is None:
        return None
    if isinstance(values, str):
        values = values.split(",")
    found = set()
    for value in values:
        state = str(value).strip().upper()
        if state not in CTSTATES:
            raise NetconfineError("%r is not a conntrack state (%s)" % (value, ", ".join(CTSTATES)), field)
        found.add(state)
    if not found:
        raise NetconfineError("must name at least one conntrack state", field)
    return tuple(s for s in CTSTATES if s in found)


PROTOCOLS = {"tcp": "tcp", "6": "tcp", "udp": "udp", "17": "udp", "icmp": "icmp", "1": "icmp",
             "ipv6-icmp": "ipv6-icmp", "icmpv6": "ipv6-icmp", "58": "ipv6-icmp", "sctp": "sctp", "132": "sctp",
             "udplite": "udplite", "136": "udplite", "all": None, "any": None}


def protocol(value, field):
    if value is None:
        return None
    key = str(value).lower()
    if key not in PROTOCOLS:
        raise NetconfineError("must be one of tcp, udp, icmp, ipv6-icmp, sctp, udplite, all; got %r" % (value,), field)
    return PROTOCOLS[key]


# ---------------------------------------------------------------- suboptions, checked in one pass

def split_suboptions(spec):
    """``(spec for AnsibleModule, {parameter: its suboptions})``: every ``options`` taken out of ``spec``.

    The modules check their suboptions themselves (:func:`check_suboptions`, one walk over the entries)
    instead of AnsibleModule's generic walk: at 1,000 rules that walk was most of the module's argument
    handling, and it filled every rule with ~20 ``null`` keys that ``invocation`` then echoed back (a
    result 3.6 times larger for the controller to decode). The option specs and the
    DOCUMENTATION stay the same (tests/unit/plugins/modules/test_suboption_docs.py compares them, as
    ansible-test's validate-modules does for the options AnsibleModule sees).
    """
    top, nested = {}, {}
    for name, option in spec.items():
        if option.get("options"):
            nested[name] = option
            option = dict((k, v) for k, v in option.items() if k != "options")
        top[name] = option
    return top, nested


def check_suboptions(params, nested):
    """Check and convert, in ``params``, each parameter of ``nested`` (from :func:`split_suboptions`).

    Each entry gets what AnsibleModule gives an option with suboptions: types converted by Ansible's own
    type checkers (``"80"`` for a port given as ``80``, ``["a", "b"]`` for ``"a,b"``), ``choices`` and
    ``required`` enforced, ``default`` filled in, unknown keys refused; keys not given stay absent (no
    ``null`` filler). Raises NetconfineError naming the field (``rules[3].jump``); ``params`` is changed
    only when every entry passed.
    """
    done = dict((name, _suboptions(params[name], option, name))
                for name, option in nested.items() if params.get(name) is not None)
    params.update(done)
    return params


def _suboptions(value, option, field):
    """One parameter with suboptions: a dict, or a list of dicts (``elements: dict``)."""
    if option.get("type") == "list":
        if not isinstance(value, list):
            raise NetconfineError("must be a list of dicts, got %r" % (value,), field)
        return [_one_entry(item, option["options"], "%s[%d]" % (field, index)) for index, item in enumerate(value)]
    return _one_entry(value, option["options"], field)


def _one_entry(entry, spec, field):
    if not isinstance(entry, dict):
        raise NetconfineError("must be a dict, got %r" % (entry,), field)
    unknown = [key for key in entry if key not in spec]
    if unknown:
        raise NetconfineError("unsupported option %s (supported: %s)"
                              % (", ".join(sorted(map(str, unknown))), ", ".join(sorted(spec))), field)
    out = dict((key, _typed(value, spec[key], "%s.%s" % (field, key)))
               for key, value in entry.items() if value is not None)
    required, defaults = _spec_summary(spec)
    for key in required:
        if key not in out:
            raise NetconfineError("is required", "%s.%s" % (field, key))
    for key, default in defaults:
        if key not in out:
            out[key] = _copy_default(default)
    return out


_SUMMARIES = {}


def _spec_summary(spec):
    """(required keys, [(key, default)]) of one options spec, worked out once per spec."""
    summary = _SUMMARIES.get(id(spec))
    if summary is None or summary[0] is not spec:
        summary = (spec, [k for k, o in spec.items() if o.get("required")],
                   [(k, o["default"]) for k, o in spec.items() if o.get("default") is not None])
        _SUMMARIES[id(spec)] = summary
    return summary[1], summary[2]


def _copy_default(value):
    return list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value


def _typed(value, option, where):
    kind = option.get("type", "str")
    if kind == "str" and value.__class__ is str and "choices" not in option:
        return value            # the common case, as check_type_str would return it
    try:
        value = DEFAULT_TYPE_VALIDATORS[kind](value)
        if kind == "list" and option.get("elements"):
            if option.get("options"):
                return _suboptions(value, option, where)
            convert = DEFAULT_TYPE_VALIDATORS[option["elements"]]
            value = [convert(item) for item in value]
        elif kind == "dict" and option.get("options"):
            return _one_entry(value, option["options"], where)
    except (TypeError, ValueError) as exc:
        raise NetconfineError("is %s and cannot be converted to %s%s: %s" % (
            type(value).__name__, kind, " of %s" % option["elements"] if option.get("elements") else "", exc), where)
    choices = option.get("choices")
    if choices is not None:
        bad = [v for v in (value if kind == "list" else [value]) if v not in choices]
        if bad:
            raise NetconfineError("must be one of %s, got %r" % (", ".join(map(str, choices)), bad[0]), where)
    return value
