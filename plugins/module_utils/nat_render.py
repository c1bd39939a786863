# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Address translation in both renderers: the DNAT and MASQUERADE targets.

Private to the paranoid.netconfine collection. Pure functions, no I/O, split
out of ``iptables_render`` / ``nft_render`` by concern (those import the
tables at the bottom of this file). The forms are what the tools print back:

* iptables-save (1.8): ``-j DNAT
  --to-destination 192.0.2.2:10105`` (IPv6 ``[fd00::2]:10105``), ``-j MASQUERADE``;
* nft -j (1.0): ``{"dnat": {"family": "ip", "addr":
  "192.0.2.2", "port": 10105}}``, ``{"masquerade": null}``. A ``dnat ip`` in
  an ``inet`` table acts on IPv4 packets only (the kernel's nft_nat skips the
  other family) and nft adds no ``meta nfproto`` for it: the rule's family is
  implied.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Dnat:
    """Destination NAT (table nat, PREROUTING/OUTPUT) to ``address`` (an ipaddress address) and ``port``."""
    address: object
    port: Optional[int] = None


@dataclass(frozen=True)
class Masquerade:
    """Source NAT to the outgoing interface's address (table nat, POSTROUTING)."""


_NFT_FAMILY = {4: "ip", 6: "ip6"}


def _address_text(address):
    if address.version == 6:
        return socket.inet_ntop(socket.AF_INET6, address.packed)
    return str(address)


# ---------------------------------------------------------------- iptables

def iptables_target(target, family):
    """``-j ...`` of a NAT target, or None when ``target`` is not one."""
    if isinstance(target, Dnat):
        addr = _address_text(target.address)
        if target.port is None:
            return "-j DNAT --to-destination %s" % addr
        return "-j DNAT --to-destination %s:%d" % ("[%s]" % addr if family == 6 else addr, target.port)
    if isinstance(target, Masquerade):
        return "-j MASQUERADE"
    return None


# ---------------------------------------------------------------- nftables

def nft_target(target, family, c):
    """Set ``c.statement`` for a NAT target; False when ``target`` is not one."""
    if isinstance(target, Dnat):
        body = {"family": _NFT_FAMILY[family], "addr": _address_text(target.address)}
        if target.port is not None:
            body["port"] = target.port
        c.statement = [{"dnat": body}]
        c.implies_family = True
        return True
    if isinstance(target, Masquerade):
        c.statement = [{"masquerade": None}]
        return True
    return False


def nft_format(expr):
    """nft syntax of a NAT statement (for people), or None."""
    (kind, body), = expr.items()
    if kind == "dnat":
        addr = body["addr"] if body["family"] == "ip" or "port" not in body else "[%s]" % body["addr"]
        return "dnat %s to %s" % (body["family"], addr + (":%d" % body["port"] if "port" in body else ""))
    if kind == "masquerade":
        return "masquerade"
    return None


# ---------------------------------------------------------------- reading back: the host ports a rule forwards

_IPT_PROTOCOL = re.compile(r"(?:^| )-p (tcp|udp)(?: |$)")
_IPT_DPORT = re.compile(r" --dports? (\S+)")
_IPT_DESTINATION = re.compile(r"(?:^| )(! )?-d (\S+)")


def _ranges(text):
    """``80``, ``80:90`` or ``80,443,1000:1010`` (iptables) -> ((low, high), ...)."""
    out = []
    for part in text.split(","):
        low, _sep, high = part.partition(":")
        out.append((int(low), int(high or low)))
    return tuple(out)


def iptables_forward(line, family):
    """What one ``iptables-save`` rule forwards, if it is a DNAT of a TCP/UDP destination port:
    ``(family, protocol, ((low, high), ...), destination network or None)``; else None.

    A negated destination (``! -d 127.0.0.0/8``) counts as any address.
    """
    if " -j DNAT" not in line:
        return None
    protocol, ports = _IPT_PROTOCOL.search(line), _IPT_DPORT.search(line)
    if not protocol or not ports:
        return None
    destination = _IPT_DESTINATION.search(line)
    address = None
    if destination and not destination.group(1):
        address = ipaddress.ip_network(u"%s" % destination.group(2), strict=False)
    return (family, protocol.group(1), _ranges(ports.group(1)), address)


def _nft_ports(right):
    if isinstance(right, int):
        return ((right, right),)
    if isinstance(right, dict) and "range" in right:
        return (tuple(right["range"]),)
    if isinstance(right, dict) and "set" in right:
        return tuple(p for item in right["set"] for p in _nft_ports(item))
    return ()


def nft_forward(rule):
    """What one rule of ``nft -j`` (a dict with ``expr``) forwards, as :func:`iptables_forward` says."""
    family = protocol = address = None
    ports = ()
    for expr in rule.get("expr", ()):
        if not isinstance(expr, dict):
            continue
        if "dnat" in expr:
            family = dict((v, k) for k, v in _NFT_FAMILY.items()).get(expr["dnat"].get("family"))
        match = expr.get("match")
        if not match or match.get("op") != "==" or "payload" not in match.get("left", {}):
            continue
        payload, right = match["left"]["payload"], match["right"]
        if payload.get("field") == "dport" and payload.get("protocol") in ("tcp", "udp"):
            protocol, ports = payload["protocol"], _nft_ports(right)
        elif payload.get("field") == "daddr" and payload.get("protocol") in ("ip", "ip6"):
            if isinstance(right, str):
                address = ipaddress.ip_network(u"%s" % right)
            elif isinstance(right, dict) and "prefix" in right:
                address = ipaddress.ip_network(u"%s/%d" % (right["prefix"]["addr"], right["prefix"]["len"]))
    if family is None or protocol is None or not ports:
        return None
    return (family, protocol, ports, address)
