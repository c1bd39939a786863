# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Resolve users and groups to numeric ids on the managed host.

Private to the paranoid.netconfine collection.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import grp
import pwd
from contextlib import contextmanager
from functools import lru_cache

from ansible_collections.paranoid.netconfine.plugins.module_utils import fields
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError


# Stands for a user or group that does not exist yet, in check mode only: the largest 32-bit id, which the
# kernel never gives an account (it is (uid_t)-1, "no id") and fields.id_range refuses as input, so a
# rule holding it never equals one in the kernel and the task predicts a change.
PENDING_ID = 4294967295
_pending = []   # a stack: the warning lists of the active pending_accounts(True) blocks


@contextmanager
def pending_accounts(enabled):
    """In check mode (``enabled``), let an unknown user or group name stand for one an earlier task creates.

    Yields the list of warnings collected meanwhile ("rules[0].uid_owner: user 'alice' does not exist yet;
    ..."); the name resolves to PENDING_ID. Outside it (real runs) an unknown name stays an error.
    """
    if not enabled:
        yield []
        return
    collected = []
    _pending.append(collected)
    try:
        yield collected
    finally:
        _pending.pop()


def _ids(value, field, lookup, kind):
    """Name, id or id range (optionally ``!``-negated) -> ((low, high), negate)."""
    raw, negate = fields.negation(str(value) if isinstance(value, int) and not isinstance(value, bool) else value)
    if not isinstance(raw, str) or not raw:
        raise NetconfineError("must be a %s name, numeric id or id range, got %r" % (kind, value), field)
    numeric = fields.id_range(raw, field)
    if numeric is not None:
        return numeric, negate
    fields.account_name(raw, field)
    try:
        ident = lookup(raw)
    except KeyError:
        if not _pending:
            raise NetconfineError("unknown %s %r on this host" % (kind, raw), field)
        _pending[-1].append("%s: %s %r does not exist yet; assuming an earlier task creates it (check mode: the "
                            "rules show id %d in its place, and the real run fails if it still does not exist)"
                            % (field, kind, raw, PENDING_ID))
        ident = PENDING_ID
    return (ident, ident), negate


def uid(value, field):
    return _ids(value, field, lambda n: pwd.getpwnam(n).pw_uid, "user")


def gid(value, field):
    return _ids(value, field, lambda n: grp.getgrnam(n).gr_gid, "group")


@lru_cache(maxsize=None)
def group_members(gid_range):
    """Every uid whose primary or supplementary group falls in ``gid_range``."""
    low, high = gid_range
    names = set()
    uids = set()
    for group in grp.getgrall():
        if low <= group.gr_gid <= high:
            names.update(group.gr_mem)
    for user in pwd.getpwall():
        if low <= user.pw_gid <= high or user.pw_name in names:
            uids.add(user.pw_uid)
    return tuple(sorted(uids))
