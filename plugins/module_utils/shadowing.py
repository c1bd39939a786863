# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find the netfilter layers beside ours that can still drop what our rules accept.

Private to the paranoid.netconfine collection.

A packet leaves the host only if every hook function at a hook lets it pass:
an ``ACCEPT`` in our chain ends our table's traversal, never another table's.
So whatever else sits at the same hook can decide the same packets first or
finally, and our result must say so:

* legacy xtables tables (``iptables-legacy``) beside iptables-nft, and the
  reverse: nf_tables tables beside ``iptables-legacy``. The kernel lists the
  legacy tables of a network namespace in ``/proc/net/ip_tables_names`` and
  ``/proc/net/ip6_tables_names`` (what makes iptables-nft print "# Warning:
  iptables-legacy tables present");
* another nftables table with a base chain at the same hook that can drop or
  reject (a ``drop`` policy, or a ``drop``/``reject`` statement in the base
  chain or a chain it jumps to).

:class:`Layers` reads (never writes) those layers, once per run;
:func:`xtables_deciders` and :func:`nft_deciders` are pure. Each backend's
``shadows(policy, layers)`` says which layers are "beside" it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.paranoid.netconfine.plugins.module_utils import model
from ansible_collections.paranoid.netconfine.plugins.module_utils.fields import CHAIN_PREFIX
from ansible_collections.paranoid.netconfine.plugins.module_utils.fields import TABLE as OUR_NFT_TABLE

PROC_TABLES = {4: "/proc/net/ip_tables_names", 6: "/proc/net/ip6_tables_names"}
FAMILY_NAME = {4: "IPv4", 6: "IPv6"}
# nf_tables families whose base chains see packets of our IP families
NFT_FAMILIES = {4: ("ip", "inet"), 6: ("ip6", "inet")}
# the tables iptables-nft creates: what iptables-save of that variant already shows
XTABLES_NAMES = ("filter", "mangle", "nat", "raw", "security")
_VERDICTS_THAT_DECIDE = ("DROP", "REJECT")
# built-in chain -> the nf_tables hook it runs at
NFT_HOOK_OF = {"PREROUTING": "prerouting", "INPUT": "input", "FORWARD": "forward", "OUTPUT": "output",
               "POSTROUTING": "postrouting"}


def means_to_allow(policy):
    """Whether the policy accepts anything: only then can another layer's drop override our verdict."""
    return policy.present and any(isinstance(rule.target, model.Verdict) and rule.target.name == "ACCEPT"
                                  for chain in policy.chains for rule in chain.rules)


def own_chains(policy):
    """The names of the policy's chains: the same on both backends, so a switch of backend finds its old ones."""
    return frozenset(chain.name for chain in policy.chains)


def hooked_builtins(policy):
    """The built-in chains (OUTPUT, POSTROUTING, ...) the policy's chains are hooked into."""
    return sorted(set(chain.hook.builtin for chain in policy.chains if chain.hook))


class Layers(object):
    """Read-only access to the layers beside ours, each read at most once.

    ``run(argv) -> (rc, out, err)``; ``nft`` is the path of nft or None;
    ``legacy_save`` maps family 4/6 to the path of ``ip(6)tables-legacy-save``
    or None; ``parse_save`` turns iptables-save text into ``{table: Table}``
    (``iptables_backend.parse_save``). ``proc`` maps family to the kernel's
    list of legacy tables.
    """

    def __init__(self, run, parse_save, nft=None, legacy_save=None, proc=None):
        self.run = run
        self.parse_save = parse_save
        self.nft = nft
        self.legacy_save = legacy_save or {}
        self.proc = proc or PROC_TABLES
        self._cache = {}

    def legacy_table_names(self, family):
        """Names of the legacy xtables tables the kernel holds for ``family`` (empty if none)."""
        try:
            with open(self.proc[family]) as handle:
                return sorted(line.strip() for line in handle if line.strip())
        except (IOError, OSError):
            return []

    def legacy_tables(self, family):
        """``{table: iptables_backend.Table}`` of the legacy variant, or None when it cannot be read."""
        key = ("legacy", family)
        if key not in self._cache:
            save = self.legacy_save.get(family)
            tables = None
            if save:
                rc, out, _err = self.run([save])
                tables = self.parse_save(out) if rc == 0 else None
            self._cache[key] = tables
        return self._cache[key]

    def xtables_held(self, family):
        """Whether the kernel holds any xtables table of ``family`` (4 or 6): iptables-legacy's
        (``legacy_table_names``) or iptables-nft's (nf_tables tables of family ``ip`` / ``ip6`` in
        :meth:`nft_ruleset`); None when that cannot be told (nft cannot list the ruleset)."""
        if self.legacy_table_names(family):
            return True
        items = self.nft_ruleset()
        if items is None:
            return None
        nft_family = NFT_FAMILIES[family][0]
        return any("table" in item and item["table"].get("family") == nft_family for item in items)

    def nft_table(self, family, name, read=True):
        """The items of :meth:`nft_ruleset` that belong to the nf_tables table ``family name`` (its table
        item, chains, rules, sets, objects: empty when the kernel holds no such table), or None when the
        ruleset cannot be listed (or, ``read=False``, was not listed yet in this run)."""
        items = self.nft_ruleset(read)
        if items is None:
            return None

        def of_table(item):
            body = next(iter(item.values()), None)
            return isinstance(body, dict) and body.get("family") == family and \
                body.get("name" if "table" in item else "table") == name
        return [item for item in items if of_table(item)]

    def nft_ruleset(self, read=True):
        """The items of ``nft -j list ruleset``, or None when nft is missing or cannot list.

        ``read=False``: only what an earlier call of this run read (None if none did), no command.
        """
        if "nft" not in self._cache and read:
            items = None
            if self.nft:
                rc, out, _err = self.run([self.nft, "-j", "list", "ruleset"])
                if rc == 0:
                    try:
                        items = json.loads(out)["nftables"]
                    except (ValueError, KeyError, TypeError):
                        items = None
            self._cache["nft"] = items
        return self._cache.get("nft")


# ---------------------------------------------------------------- xtables (iptables-save text)

def _xt_target(line):
    words = line.split()
    for flag in ("-j", "-g"):
        if flag in words and words.index(flag) + 1 < len(words):
            return words[words.index(flag) + 1]
    return None


def xtables_deciders(tables, builtins):
    """[(table, chain, n)] of built-in chains in ``builtins`` that can drop: a DROP policy (n = 0) or n rules
    whose target is DROP/REJECT or a chain of the table that (in turn) holds one."""
    out = []
    for name in sorted(tables):
        table = tables[name]
        chains = dict(table.rules)
        memo = {}

        def decides(chain, seen=()):
            if chain not in memo:
                memo[chain] = False
                memo[chain] = any(_line_decides(line, seen + (chain,)) for line in chains.get(chain, ()))
            return memo[chain]

        def _line_decides(line, seen):
            target = _xt_target(line)
            if target in _VERDICTS_THAT_DECIDE:
                return True
            return target in chains and target not in seen and decides(target, seen)

        policies = dict(table.policies)
        for builtin in builtins:
            if builtin not in chains and builtin not in policies:
                continue
            count = sum(1 for line in chains.get(builtin, ()) if _line_decides(line, (builtin,)))
            if count or policies.get(builtin) == "DROP":
                out.append((name, builtin, count))
    return out


def describe_xtables(variant, family, deciders):
    """Warning lines for xtables deciders of ``variant`` (``iptables-legacy``, ``iptables-nft``)."""
    lines = []
    for table, chain, count in deciders:
        what = ("%d rule(s) that drop or reject" % count) if count else "policy DROP"
        lines.append("%s table %s (%s), chain %s: %s. Those rules see the same packets as ours and an ACCEPT "
                     "of ours does not override them" % (variant, table, FAMILY_NAME[family], chain, what))
    return lines


# ---------------------------------------------------------------- nf_tables (nft -j list ruleset)

def _statements(value):
    """Every dict in a JSON value, depth first (verdicts hide in vmaps and sets)."""
    if isinstance(value, dict):
        yield value
        for inner in value.values():
            yield from _statements(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _statements(inner)


def nft_deciders(items, families, hooks, skip=(), own=()):
    """[(family, table, chain, hook, prio, why, ours)] of base chains outside ``skip`` ("family name" strings)
    at one of ``hooks`` ("output", ...) in a family that sees ``families`` (4, 6) and can drop or reject.

    ``own``: the task's own chain names (the same on both backends; ``NAME.N`` helper chains included). Their
    drops do not count: they are the task's own rules on the other backend, which this run removes.

    ``ours`` names the backend of this collection's own tasks whose rules decide there (``nftables``: the
    chain is in our table; ``iptables``: a drop or reject is in an ``NC-`` chain of iptables-nft's tables),
    else ``None``: tasks of one host on two backends put two layers at the hook."""
    wanted = set(f for family in families for f in NFT_FAMILIES[family])
    chains, rules = {}, {}
    for item in items or ():
        if "chain" in item:
            ch = item["chain"]
            chains[(ch["family"], ch["table"], ch["name"])] = ch
        elif "rule" in item:
            r = item["rule"]
            rules.setdefault((r["family"], r["table"], r["chain"]), []).append(r.get("expr", []))
    memo = {}

    def decides(key, seen=()):
        """-> (whether the chain can drop or reject, whether one of our NC- chains does)."""
        if key not in memo:
            memo[key] = (False, False)
            found = ours = False
            mine = key[2].split(".")[0] in own
            for expr in () if mine else rules.get(key, ()):
                for stmt in _statements(expr):
                    xt = stmt.get("xt")
                    if "drop" in stmt or "reject" in stmt or (
                            isinstance(xt, dict) and xt.get("type") == "target" and xt.get("name") in _VERDICTS_THAT_DECIDE):
                        found = True    # iptables-nft writes REJECT as an xtables target ("xt")
                        ours = ours or key[2].startswith(CHAIN_PREFIX)
                    for kind in ("jump", "goto"):
                        target = stmt.get(kind)
                        if isinstance(target, dict) and "target" in target:
                            inner = (key[0], key[1], target["target"])
                            if inner not in seen:
                                inner_found, inner_ours = decides(inner, seen + (key,))
                                found, ours = found or inner_found, ours or inner_ours
            memo[key] = (found, ours)
        return memo[key]

    out = []
    for key in sorted(chains):
        ch = chains[key]
        family, table, name = key
        if family not in wanted or "hook" not in ch or ch["hook"] not in hooks:
            continue
        if "%s %s" % (family, table) in skip:
            continue
        why = []
        if ch.get("policy") == "drop":
            why.append("policy drop")
        found, ours = decides(key)
        if found:
            why.append("rules that drop or reject")
        if why:
            backend = "nftables" if "%s %s" % (family, table) == OUR_NFT_TABLE else "iptables" if ours else None
            out.append((family, table, name, ch["hook"], ch.get("prio", 0), " and ".join(why), backend))
    return out


def describe_nft(deciders, ours):
    lines = []
    for family, table, chain, hook, prio, why, backend in deciders:
        line = ("nftables table %s %s, base chain %s (hook %s, priority %s): %s. Every table at a hook sees the "
                "packet: an accept in %s does not override a drop there" % (family, table, chain, hook, prio, why, ours))
        if backend:
            line += ("; those are paranoid.netconfine's own rules, of tasks on backend %s: give every task on this "
                     "host the same backend (the option backend, or the role's <role>_backend) to keep them in one "
                     "layer" % backend)
        lines.append(line)
    return lines


def xtables_skip(items):
    """The ``ip``/``ip6`` tables of iptables-nft in a ruleset (``ip filter``, ...), which iptables-save shows."""
    return set("%s %s" % (item["table"]["family"], item["table"]["name"]) for item in items or ()
               if "table" in item and item["table"]["family"] in ("ip", "ip6")
               and item["table"]["name"] in XTABLES_NAMES)


def legacy_warnings(layers, families, builtins, beside):
    """Warnings for legacy xtables tables of ``families`` that can drop at ``builtins`` (ours: ``beside``)."""
    out = []
    for family in families:
        names = layers.legacy_table_names(family)
        if not names:
            continue
        tables = layers.legacy_tables(family)
        if tables is None:
            out.append("iptables-legacy tables present (%s: %s) beside %s; they see the same packets as ours and "
                       "can drop what we accept (install iptables to read them with ip%stables-legacy-save)"
                       % (FAMILY_NAME[family], ", ".join(names), beside, "" if family == 4 else "6"))
            continue
        out.extend(describe_xtables("iptables-legacy", family, xtables_deciders(tables, builtins)))
    return out
