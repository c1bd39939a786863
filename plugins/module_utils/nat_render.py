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

import socket

from ansible_collections.paranoid.netconfine.plugins.module_utils import model

_NFT_FAMILY = {4: "ip", 6: "ip6"}


def _address_text(address):
    if address.version == 6:
        return socket.inet_ntop(socket.AF_INET6, address.packed)
    return str(address)


# ---------------------------------------------------------------- iptables

def iptables_target(target, family):
    """``-j ...`` of a NAT target, or None when ``target`` is not one."""
    if isinstance(target, model.Dnat):
        addr = _address_text(target.address)
        if target.port is None:
            return "-j DNAT --to-destination %s" % addr
        return "-j DNAT --to-destination %s:%d" % ("[%s]" % addr if family == 6 else addr, target.port)
    if isinstance(target, model.Masquerade):
        return "-j MASQUERADE"
    return None


# ---------------------------------------------------------------- nftables

def nft_target(target, family, c):
    """Set ``c.statement`` for a NAT target; False when ``target`` is not one."""
    if isinstance(target, model.Dnat):
        body = {"family": _NFT_FAMILY[family], "addr": _address_text(target.address)}
        if target.port is not None:
            body["port"] = target.port
        c.statement = [{"dnat": body}]
        c.implies_family = True
        return True
    if isinstance(target, model.Masquerade):
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
