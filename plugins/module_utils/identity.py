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
from functools import lru_cache

from ansible_collections.paranoid.netconfine.plugins.module_utils import fields
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError


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
        raise NetconfineError("unknown %s %r on this host" % (kind, raw), field)
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
