# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Remove an nf_tables table only if it is empty, in one kernel transaction (no race with other tools).

Private to the paranoid.netconfine collection. ``nft delete table`` and ``nft delete chain`` delete
recursively: a rule another tool adds between our check and our delete would go with it. The kernel
refuses a delete that carries ``NLM_F_NONREC`` while the object is in use (a chain holding a rule or
referenced by a jump, a table holding a chain or set: ``nf_tables_delchain``/``nf_tables_deltable``,
net/netfilter/nf_tables_api.c), and a batch commits all or nothing. So one batch deleting the given
chains and then the table, each non-recursively, removes the table exactly when nothing but those
empty chains is in it at commit time. Standard library only (a raw ``NETLINK_NETFILTER`` socket).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import socket
import struct

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_DELTABLE, NFT_MSG_DELCHAIN = 2, 5
NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME = 1, 1, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_NONREC = 0x1, 0x4, 0x100
NLMSG_ERROR = 2
NFPROTO = {4: 2, 6: 10, "bridge": 7}  # NFPROTO_IPV4/IPV6/BRIDGE: the nf_tables families ip, ip6, bridge


def _attr(kind, text):
    data = text.encode("ascii") + b"\0"
    raw = struct.pack("=HH", 4 + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


def _message(kind, flags, family, seq, payload=b"", res_id=0):
    body = struct.pack("=BBH", family, 0, socket.htons(res_id)) + payload
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def batch(family, table, chains, with_table=True):
    """The netlink batch deleting ``chains`` then (``with_table``) ``table`` of ``family`` (4 or 6), each
    only if unused. Returns (bytes, sequence numbers of the delete messages)."""
    parts = [_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, 1, res_id=NFNL_SUBSYS_NFTABLES)]
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_NONREC
    seqs = []
    for seq, chain in enumerate(chains, 2):
        parts.append(_message(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_DELCHAIN, flags, NFPROTO[family], seq,
                              _attr(NFTA_CHAIN_TABLE, table) + _attr(NFTA_CHAIN_NAME, chain)))
        seqs.append(seq)
    seq = len(chains) + 2
    if with_table:
        parts.append(_message(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_DELTABLE, flags, NFPROTO[family], seq,
                              _attr(NFTA_TABLE_NAME, table)))
        seqs.append(seq)
        seq += 1
    parts.append(_message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, seq, res_id=NFNL_SUBSYS_NFTABLES))
    return b"".join(parts), seqs


def delete_if_unused(family, table, chains, timeout=5.0):
    """Delete ``chains`` and then ``table`` in one transaction, only if nothing else is in them.

    Returns None on success, else the errno the kernel answered (EBUSY: something is in use, the
    table stays as it was) or the OSError's errno of the socket itself.
    """
    return _send(*batch(family, table, chains), timeout=timeout)


def delete_chain_if_unused(family, table, chain, timeout=5.0):
    """Delete one chain if it holds no rule and nothing jumps to it; as :func:`delete_if_unused`."""
    return _send(*batch(family, table, [chain], with_table=False), timeout=timeout)


def _send(data, seqs, timeout):
    pending = set(seqs)
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    except OSError as exc:
        return exc.errno or errno.EIO
    try:
        sock.settimeout(timeout)
        sock.bind((0, 0))
        sock.sendall(data)
        while pending:
            reply = sock.recv(65536)
            offset = 0
            while offset + 16 <= len(reply):
                length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", reply, offset)
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", reply, offset + 16)[0]
                    if code:
                        return code        # the whole batch was aborted
                    pending.discard(seq)
                offset += max(16, (length + 3) & ~3)
        return None
    except OSError as exc:
        return exc.errno or errno.EIO
    finally:
        sock.close()
