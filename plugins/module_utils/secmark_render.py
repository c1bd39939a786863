# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SELinux packet labels on the nftables backend: secmark objects and the SECMARK/CONNSECMARK targets.

Private to the paranoid.netconfine collection. Pure functions, no I/O, split out of
``nft_render`` by concern (as ``nat_render``). The forms are what nft 1.0.6 prints back:

* a label is a named object of our table, ``secmark NAME { "system_u:object_r:TYPE:s0" }``
  (JSON ``{"secmark": {"family": ..., "table": ..., "name": NAME, "context": CONTEXT}}``);
  the kernel turns the context into a SID when the object is added, so the policy that
  defines TYPE must be loaded first (the engine installs the SELinux module before the rules);
* ``-j SECMARK --selctx CONTEXT`` is ``meta secmark set "NAME"`` (JSON ``{"secmark": NAME}``,
  an object reference);
* ``-j CONNSECMARK --restore`` is ``meta secmark set ct secmark`` and ``--save`` is
  ``ct secmark set meta secmark`` (JSON ``{"mangle": {"key": ..., "value": ...}}``).

Same meaning as the iptables form for the chains ``secmark_model`` builds: restore runs for
RELATED/ESTABLISHED packets first (xt_CONNSECMARK restores only onto an unlabelled packet, and
nothing labelled them before our chain), save runs for NEW packets last (xt_CONNSECMARK saves
only into an unlabelled connection, and a NEW connection has no label yet; nft copies an
unlabelled packet's 0, which is what the connection already holds).

A task's objects belong to its chain: ``<chain>.<type>`` (plus ``-<8 hex of SHA-256 of the
context>`` when the context is not ``system_u:object_r:TYPE:s0``), so they are owned, compared,
replaced and removed with the chain, and a changed context is a new name, never an in-place
update (the kernel has none for secmark objects: adding an existing name keeps the old context).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib

from ansible_collections.paranoid.netconfine.plugins.module_utils import model

_META_SECMARK = {"meta": {"key": "secmark"}}
_CT_SECMARK = {"ct": {"key": "secmark"}}
RESTORE = {"mangle": {"key": _META_SECMARK, "value": _CT_SECMARK}}
SAVE = {"mangle": {"key": _CT_SECMARK, "value": _META_SECMARK}}


def object_name(chain, context):
    """The secmark object of ``chain`` that holds ``context`` (a full ``user:role:type:level``)."""
    type_name = context.split(":")[2]
    name = "%s.%s" % (chain, type_name)
    if context != "system_u:object_r:%s:s0" % type_name:
        name += "-" + hashlib.sha256(context.encode("utf-8")).hexdigest()[:8]
    return name


def is_object_of(name, chain):
    """Whether ``name`` is a secmark object of ``chain`` (helper chains are ``chain.N``, objects ``chain.TYPE``)."""
    rest = name[len(chain) + 1:]
    return name.startswith(chain + ".") and bool(rest) and not rest.isdigit()


def objects(chain):
    """The secmark objects the rules of a ``model.Chain`` name: sorted ((name, context), ...)."""
    return tuple(sorted(set((object_name(chain.name, r.target.context), r.target.context)
                            for r in chain.rules if isinstance(r.target, model.Secmark))))


def nft_target(target, c, chain):
    """Set ``c.statement`` for a label target of a rule in ``chain``; False when ``target`` is not one."""
    if isinstance(target, model.Secmark):
        c.statement = [{"secmark": object_name(chain, target.context)}]
    elif isinstance(target, model.ConnSecmark):
        c.statement = [RESTORE if target.mode == "restore" else SAVE]
    else:
        return False
    c.terminal = False
    return True


def references(rule):
    """The secmark object names a rule dict refers to."""
    return [e["secmark"] for e in rule.get("expr", []) if isinstance(e, dict) and isinstance(e.get("secmark"), str)]


def _fmt_key(expr):
    return "meta secmark" if "meta" in expr else "ct secmark"


def nft_format(expr):
    """nft syntax of a label statement (for people), or None."""
    (kind, body), = expr.items()
    if kind == "secmark" and isinstance(body, str):
        return 'meta secmark set "%s"' % body
    if kind == "mangle" and expr in (RESTORE, SAVE):
        return "%s set %s" % (_fmt_key(body["key"]), _fmt_key(body["value"]))
    return None


def object_line(name, context):
    """An object as one line of nft syntax (``nft -f`` accepts it after ``add``)."""
    return 'secmark %s { "%s" }' % (name, context)
