# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The iptables backend: reader, renderer glue and restore scripts.

Private to the paranoid.netconfine collection. One unit per IP family: one
``iptables-save`` to read, one ``iptables-restore --noflush --wait`` to
apply (each table in it commits atomically). Only chains the task owns and
the jumps into them are ever named in a script; foreign rules are never
flushed, reordered or rewritten.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
from dataclasses import dataclass
from typing import Tuple

from ansible_collections.paranoid.netconfine.plugins.module_utils import nf_netlink, shadowing
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError
from ansible_collections.paranoid.netconfine.plugins.module_utils.fields import CHAIN_PREFIX
from ansible_collections.paranoid.netconfine.plugins.module_utils.iptables_render import (
    policy_marker, render_chain, render_jump)

BUILTIN_CHAINS = frozenset(("INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"))
_TAGGED = re.compile(r'^-A \S+ -m comment --comment "?netconfine:')
NFT_FAMILY = {4: "ip", 6: "ip6", "bridge": "bridge"}  # the nf_tables family iptables-nft/ebtables-nft use
# A chain of ours in an iptables-nft table this backend created: the kernel's own record that the table
# was not there before us, so that it goes again once empty (never a table that existed before us).
MADE_TABLE = "NC-made-this-table"
_JUMP_TO = re.compile(r" -[jg] (\S+)$")
_TAG_OF = re.compile(r'--comment "?netconfine:([^" ]+)"? ')


@dataclass(frozen=True)
class Table:
    """One table as iptables-save printed it: chain policies and rules in order."""
    name: str
    policies: Tuple[Tuple[str, str], ...]          # (chain, policy or '-') in save order
    rules: Tuple[Tuple[str, Tuple[str, ...]], ...]  # (chain, lines) in save order

    def chain_rules(self, chain):
        return dict(self.rules).get(chain, ())


@dataclass(frozen=True)
class Owned:
    """What one task owns in one table, comparable between desired and read state.

    ``jumps`` are (from_chain, line, placement): placement is the declared
    position when the jump occurs once and sits where declared, otherwise a
    description of what is wrong (so that it never compares equal).
    """
    table: str
    chains: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()
    jumps: Tuple[Tuple[str, str, str], ...] = ()
    policies: Tuple[Tuple[str, str], ...] = ()

    def lines(self):
        out = ["*%s" % self.table]
        out += [":%s %s" % p for p in self.policies]
        for name, rules in self.chains:
            out.append(":%s -" % name)
            out.extend(rules)
        out += ["%s  # %s" % (line, placement) for _chain, line, placement in self.jumps]
        return out


class SavedTables(dict):
    """{table: Table} as one iptables-save printed it; ``nf_tables``: whether it came from iptables-nft."""
    nf_tables = False


def parse_save(text):
    """Parse iptables-save output into {table: Table}."""
    tables = {}
    name, policies, rules = None, [], {}
    for raw in text.splitlines():
        line = raw.rstrip("\n")
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            name, policies, rules = line[1:], [], {}
        elif line.startswith(":"):
            chain, policy = line[1:].split(" ", 2)[:2]
            policies.append((chain, policy))
            rules.setdefault(chain, [])
        elif line.startswith("-A "):
            chain = line.split(" ", 2)[1]
            rules.setdefault(chain, []).append(line)
        elif line == "COMMIT" and name is not None:
            order = [c for c, _p in policies] + [c for c in rules if c not in dict(policies)]
            tables[name] = Table(name, tuple(policies), tuple((c, tuple(rules[c])) for c in order))
            name = None
    return tables


def reachable(table, names):
    """``names`` plus every ``NC-`` chain of ``table`` that the owned chains jump to, transitively.

    An owned chain's whole content is ours, so what it jumps to is ours too: a helper chain
    that is no longer declared (a guest removed from a task's list) is found here and deleted.
    """
    rules = dict(table.rules)
    found, todo = set(), [n for n in names if n in rules]
    found.update(names)
    while todo:
        for line in rules.get(todo.pop(), ()):
            match = _JUMP_TO.search(line)
            if match and match.group(1).startswith(CHAIN_PREFIX) and match.group(1) in rules \
                    and match.group(1) not in found:
                found.add(match.group(1))
                todo.append(match.group(1))
    return frozenset(found)


def _placement(rules, line, position):
    """Whether ``line`` occurs once in ``rules`` at the declared position."""
    hits = [i for i, r in enumerate(rules) if r == line]
    if len(hits) != 1:
        return "occurs %d times" % len(hits)
    idx = hits[0]
    before, after = rules[:idx], rules[idx + 1:]
    if position == "first" and all(_TAGGED.match(r) for r in before):
        return position
    if position == "last" and all(_TAGGED.match(r) for r in after):
        return position
    return "at %d of %d, not %s" % (idx + 1, len(rules), position)


def _tables_left(script):
    """The tables in which ``script`` deletes a chain or unhooks a jump (where a task may have left)."""
    out, table = [], None
    for line in script.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(("-X ", "-D ")) and table not in out:
            out.append(table)
    return out


def predict_chain(rules, script, table, chain):
    """The rules of ``chain`` in ``table`` after ``script`` (our restore input) if nobody else wrote to it.

    ``rules`` as read before applying. Our scripts touch a chain we do not own only with ``-D`` of a
    whole rule, ``-I CHAIN N`` and ``-A``; the result is in iptables-save form (``-A CHAIN ...``).
    """
    out, current = list(rules), None
    for line in script.splitlines():
        if line.startswith("*"):
            current = line[1:]
            continue
        if current != table:
            continue
        words = line.split(" ", 3)
        if len(words) < 3 or words[1] != chain:
            continue
        if words[0] == "-D":
            rule = "-A" + line[2:]
            if rule in out:
                out.remove(rule)
        elif words[0] == "-I" and words[2].isdigit():
            out.insert(int(words[2]) - 1, "-A %s %s" % (chain, words[3]))
        elif words[0] == "-A":
            out.append(line)
    return tuple(out)


def _named_variant(save):
    """``legacy`` or ``nf_tables`` where the binary's real name says so (Debian's ``xtables-*-multi``), else None."""
    real = os.path.basename(os.path.realpath(save))
    if "legacy" in real:
        return "legacy"
    if "nft" in real:
        return "nf_tables"
    return None


class IptablesBackend:
    """Reader and script writer for iptables (nf_tables or legacy variant)."""

    name = "iptables"
    # how a restore script declares (and so flushes) an owned chain; ebtables wants a policy there
    CHAIN_DECL = ":%s - [0:0]"

    def __init__(self, run, bins, wait=10, nft=None, legacy=None):
        """``run(argv, data=None) -> (rc, out, err)``; ``bins[family]`` = (save, restore) paths or None;
        ``nft``: the nft binary's path or None (used only to ask iptables-nft's kernel tables more than
        iptables-save prints, and whether the kernel has nf_tables for a family); ``legacy[family]``: the
        (save, restore) paths of iptables-legacy, used where ``bins`` are iptables-nft and the kernel has no
        nf_tables for that family (:meth:`_kernel_variant`)."""
        self.run = run
        self.bins = dict(bins)
        self.wait = wait
        self.nft = nft
        self.legacy = legacy or {}
        self._variant = {}
        self._checked = set()
        self._nft_families = None      # the IP families the kernel's nf_tables has, once asked

    # ---------------------------------------------------------- the seam

    def usable(self):
        return any(self.bins.get(f) for f in (4, 6))

    def units(self, policy):
        missing = [f for f in policy.families if policy.present and not self.bins.get(f)]
        if missing:
            raise NetconfineError("ip%stables-save/-restore not found on this host; install the iptables package "
                                  "or set ip_version" % ("" if missing[0] == 4 else "6"), "backend")
        return tuple(f for f in (4, 6) if self.bins.get(f))

    def read(self, family):
        save = self.bins[family][0]
        rc, out, err = self.run([save])
        if family not in self._checked:
            self._checked.add(family)
            if self._kernel_variant(family, rc, out) == "legacy":
                return self.read(family)
        if rc != 0:
            raise NetconfineError("%s failed (rc=%d): %s" % (save, rc, err.strip()), "backend",
                                  command=save, stderr=err)
        tables = SavedTables(self.parse(out))
        tables.nf_tables = self._nf_tables(family, out)
        return tables

    def read_shared(self, family, layers, policy):
        """For a family the task does not converge here (``policy`` absent: cleaning up after a backend
        switch; or a family outside its ``ip_version``): no table at all where the kernel holds no
        ``family`` table in either variant (``shadowing.Layers.xtables_held``: the nft ruleset the run reads
        anyway, and /proc/net/ip(6)_tables_names), known without iptables-save; else None (then :meth:`read`
        asks iptables-save). A family the task converges is always read (the restore needs its variant and
        the legacy fallback).
        """
        if policy.present and family in policy.families:
            return None
        return SavedTables() if layers.xtables_held(family) is False else None

    @staticmethod
    def parse(out):
        """``*-save`` output -> {table: Table}."""
        return parse_save(out)

    def restore_argv(self, family):
        """The restore command for ``family``, adding to what the kernel holds (never flushing)."""
        return [self.bins[family][1], "--noflush", "--wait", str(self.wait)]

    def _nf_tables(self, family, out):
        """Whether ``family``'s iptables is iptables-nft: its save header says so ("(nf_tables)"), or
        where it printed no table at all, the binary's name (Debian's alternatives) or else
        ``iptables-save --version`` does."""
        if family not in self._variant:
            header = next((line for line in out.splitlines() if line.startswith("# Generated by")), None)
            named = _named_variant(self.bins[family][0]) if header is None else None
            if named is not None:
                header = "(%s)" % named
            elif header is None:
                rc, version, _err = self.run([self.bins[family][0], "--version"])
                header = version if rc == 0 else ""
            self._variant[family] = "(nf_tables)" in header
        return self._variant[family]

    def render(self, policy, family):
        """Desired Owned per table for one family."""
        tables = {}
        for chain in policy.chains_for(family):
            tables.setdefault(chain.table, {"chains": [], "jumps": [], "policies": []})
            entry = tables[chain.table]
            marker = (policy_marker(chain.name),) if chain.hook and chain.builtin_policy else ()
            entry["chains"].append((chain.name, marker + render_chain(chain)))
            if chain.hook:
                entry["jumps"].append((chain.hook.builtin, render_jump(policy, chain), chain.hook.position))
                if chain.builtin_policy:
                    entry["policies"].append((chain.hook.builtin, chain.builtin_policy))
        return self._freeze(tables)

    def owned(self, tables, policy, family):
        """What the kernel holds of this task, per table."""
        positions = dict((c.name, c.hook.position) for c in policy.chains if c.hook)
        hooks = dict((c.name, c.hook.builtin) for c in policy.chains if c.hook)
        out = {}
        for table in tables.values():
            names = reachable(table, policy.chain_names)
            entry = {"chains": [], "jumps": [], "policies": []}
            for chain, rules in table.rules:
                if chain in names:
                    entry["chains"].append((chain, rules))
                    continue
                seen = set()
                for line in rules:
                    target = line.rsplit(" -j ", 1)[-1]
                    if target not in names or line in seen:
                        continue
                    seen.add(line)
                    tag = _TAG_OF.search(line)
                    if tag and tag.group(1) != policy.name:
                        raise NetconfineError(
                            "chain %s is already owned by task %r (jump %r); choose another name"
                            % (target, tag.group(1), line), "name")
                    entry["jumps"].append((chain, line, _placement(rules, line, positions.get(target, "first"))))
            # the task owns a built-in policy while its chain starts with the policy marker
            owned_builtins = set(hooks[name] for name, rules in entry["chains"]
                                 if name in hooks and rules[:1] == (policy_marker(name),))
            for chain, verdict in table.policies:
                if chain in owned_builtins:
                    entry["policies"].append((chain, verdict))
            if entry["chains"] or entry["jumps"] or entry["policies"]:
                out[table.name] = entry
        return self._freeze(out)

    def script(self, tables, current, desired, restore_jumps=None):
        """The ``iptables-restore --noflush`` input taking ``current`` to ``desired``.

        ``restore_jumps`` maps (table, chain, line) to the 1-based index a jump
        had in a snapshot; rollback uses it to put jumps back where they were.
        """
        blocks = []
        for table in sorted(set(current) | set(desired)):
            cur = current.get(table, Owned(table))
            want = desired.get(table, Owned(table))
            if cur == want:
                continue
            lines = ["*%s" % table]
            if want.chains and table not in tables and getattr(tables, "nf_tables", False):
                lines.append(self.CHAIN_DECL % MADE_TABLE)       # this restore creates the table
            cur_chains, want_chains = dict(cur.chains), dict(want.chains)
            doomed = [name for name in cur_chains if name not in want_chains]
            # 1. unhook: every jump that is not wanted exactly where it is
            keep = set(j[:2] for j in cur.jumps if j in want.jumps)
            for chain, line, _placement_ in cur.jumps:
                if (chain, line) in keep:
                    continue
                count = tables[table].chain_rules(chain).count(line)
                lines += ["-D" + line[2:]] * count
            # 2. (re)define changed chains: declaring an owned chain flushes it in the same commit; declare
            #    them all before the first rule, since owned chains may jump to each other
            redefined = [(name, rules) for name, rules in want.chains if cur_chains.get(name) != rules]
            lines += [self.CHAIN_DECL % name for name, _rules in redefined]
            for _name, rules in redefined:
                lines.extend(rules)
            # 3. hook
            for chain, line, position in want.jumps:
                if (chain, line) in keep:
                    continue
                spec = line.split(" ", 2)[2]
                if restore_jumps and (table, chain, line) in restore_jumps:
                    lines.append("-I %s %d %s" % (chain, restore_jumps[(table, chain, line)], spec))
                elif position == "last":
                    lines.append(line)
                else:
                    lines.append("-I %s 1 %s" % (chain, spec))
            # 4. drop chains no longer owned (flush first: nf_tables refuses to delete a referenced chain)
            lines += [self.CHAIN_DECL % name for name in doomed]
            lines += ["-X %s" % name for name in doomed]
            # 5. managed built-in policies
            for chain, verdict in want.policies:
                if (chain, verdict) not in cur.policies:
                    lines.append("-P %s %s" % (chain, verdict))
            # a policy the task stops managing (policy unset, state absent) is released to ACCEPT
            for chain, verdict in cur.policies:
                if chain not in dict(want.policies) and verdict != "ACCEPT":
                    lines.append("-P %s ACCEPT" % chain)
            lines.append("COMMIT")
            blocks.append("\n".join(lines))
        return "\n".join(blocks) + "\n" if blocks else ""

    def apply(self, family, script):
        argv = self.restore_argv(family)
        rc, out, err = self.run(argv, data=script)
        if rc != 0:
            raise NetconfineError(
                "%s rejected the change (rc=%d): %s" % (argv[0], rc, (err or out).strip()), "backend",
                command=" ".join(argv), stdin=script, stderr=err)
        if self._variant.get(family) and self.nft:
            for table in _tables_left(script):
                self._release_table(family, table)

    def _release_table(self, family, table):
        """After a task left ``table`` (iptables-nft): remove the table if we made it and it is now empty.

        Nothing happens unless the table holds our record (:data:`MADE_TABLE`). While another
        netconfine task still has a chain there, the table stays as it is. While another tool uses it
        (a rule, a chain of its own, a base chain's policy other than accept), it is theirs now: only the
        record goes. Otherwise the record, the empty base chains and the table go in one transaction that
        the kernel refuses if anything was added meanwhile (:func:`nf_netlink.delete_if_unused`); then the
        table simply stays. Best effort: a run that converged never fails over this cleanup.
        """
        rc, out, _err = self.run([self.nft, "-j", "list", "table", NFT_FAMILY[family], table])
        if rc != 0:
            return
        try:
            items = json.loads(out)["nftables"]
        except (ValueError, KeyError, TypeError):
            return
        chains = [i["chain"] for i in items if "chain" in i]
        names = [c.get("name") for c in chains]
        if MADE_TABLE not in names or any(n.startswith(CHAIN_PREFIX) and n != MADE_TABLE for n in names):
            return
        others = [c for c in chains if c.get("name") != MADE_TABLE]
        used = any("rule" in i or "set" in i for i in items) or any(
            "hook" not in c or c.get("policy", "accept") != "accept" for c in others)
        if used:
            nf_netlink.delete_chain_if_unused(family, table, MADE_TABLE)
        else:
            nf_netlink.delete_if_unused(family, table, names)

    def moved_by_others(self, family, read, now, after, desired, script):
        """Whether the read-back ``after`` (owned state in ``now``) differs from ``desired`` only in where
        our jumps sit in built-in chains that another tool changed after our commit.

        What the task owns outright is compared strictly: its chains' content, the managed policies and
        its jumps (each exactly once, no other). A jump's position alone is excused only in a chain that
        changed under us. ``script`` commits atomically and places every jump where declared, so a chain
        nobody else wrote to reads back exactly as :func:`predict_chain` computes from ``read`` (the
        pre-apply read) and ``script``, foreign rules included, in order; one that does but misplaces a
        jump means our script is wrong: not excused. Text alone cannot tell a restore that misplaced the
        jump from another tool that deleted and re-inserted a rule with the same text (kube-proxy's
        re-sync): where the kernel numbers rules (iptables-nft, with nft installed) a foreign rule on the
        wrong side that is older than our jump proves the former (:meth:`_older_on_wrong_side`).
        """
        for table in set(after) | set(desired):
            got, want = after.get(table, Owned(table)), desired.get(table, Owned(table))
            if got.chains != want.chains or got.policies != want.policies:
                return False
            if sorted(j[:2] for j in got.jumps) != sorted(j[:2] for j in want.jumps):
                return False
            positions = dict((j[:2], j[2]) for j in want.jumps)
            for chain, line, placement in got.jumps:
                position = positions[(chain, line)]
                if placement == position:
                    continue
                if not placement.startswith("at "):
                    return False        # doubled or gone: never excused
                before = read[table].chain_rules(chain) if table in read else ()
                if now[table].chain_rules(chain) == predict_chain(before, script, table, chain):
                    return False        # nobody else wrote to the chain: our own placement is wrong
                if self._older_on_wrong_side(family, table, chain, line.rsplit(" -j ", 1)[1], position):
                    return False
        return True

    def _older_on_wrong_side(self, family, table, chain, target, position):
        """Whether a foreign rule that is older than our jump to ``target`` sits on its wrong side.

        nf_tables gives every rule a handle that grows with each rule added to a table, and a rule never
        moves: only a rule added after our jump can sit above a "first" jump our commit put on top. Asked
        only with iptables-nft and nft installed; False where the kernel cannot tell (legacy xtables).
        """
        if not self.nft:
            return False
        rc, out, _err = self.run([self.nft, "-a", "-j", "list", "chain", NFT_FAMILY[family], table, chain])
        if rc != 0:
            return False
        try:
            rules = [item["rule"] for item in json.loads(out)["nftables"] if "rule" in item]
        except (ValueError, KeyError, TypeError):
            return False
        jumps = [[e["jump"]["target"] for e in r.get("expr", ()) if isinstance(e, dict) and "jump" in e]
                 for r in rules]
        ours = [i for i, targets in enumerate(jumps) if target in targets]
        if len(ours) != 1:
            return False
        index = ours[0]
        wrong = range(index) if position == "first" else range(index + 1, len(rules))
        return any(rules[i]["handle"] < rules[index]["handle"] for i in wrong
                   if not any(t.startswith(CHAIN_PREFIX) for t in jumps[i]))

    def snapshot_jumps(self, tables, current):
        """(table, chain, line) -> index of every owned jump, for rollback."""
        out = {}
        for table, owned in current.items():
            for chain, line, _p in owned.jumps:
                rules = tables[table].chain_rules(chain)
                out[(table, chain, line)] = rules.index(line) + 1
        return out

    def _kernel_variant(self, family, rc, out):
        """Switch ``family`` to iptables-legacy (and say ``legacy``) where iptables-nft cannot work on this kernel.

        A kernel can lack nf_tables for the IP families while it has xtables: User-Mode-Linux's builds only
        the bridge family of nf_tables (others none at all). There iptables-nft-save prints nothing (or fails) and every restore
        fails ("Operation not supported"), while iptables-legacy holds the rules; reading the nf_tables
        variant would miss what the task owns there. Asked only when the nf_tables variant printed no table
        and legacy binaries exist: ``nft -c`` (commits nothing) of a throwaway table of the family."""
        legacy = self.legacy.get(family)
        if not legacy or not self.nft or (rc == 0 and "*" in out) or self.variant(family) != "nf_tables":
            return None
        if self._nft_families is None:
            # both families in one question first: on a kernel that has them (nearly every host) one command
            self._nft_families = ()
            if self._probe(*sorted(self.bins)) is None:
                self._nft_families = tuple(sorted(self.bins))
        if family in self._nft_families:
            return None
        err = self._probe(family)
        # "Operation not supported": nf_tables without the family; "Protocol not supported": no nf_tables at all
        if err is None or "not supported" not in err:
            return None
        self.bins[family] = legacy
        self._variant.pop(family, None)
        return "legacy"

    def _probe(self, *families):
        """None when the kernel takes a throwaway nf_tables table of each family, else nft's reason."""
        # imported here, and not from nft_backend: an iptables run where iptables-save shows no table (a
        # converge from empty) asks this, and loads no nftables backend code for it
        from ansible_collections.paranoid.netconfine.plugins.module_utils.nft_probe import PROBE_TABLE, kernel_refuses
        return kernel_refuses(self.run, self.nft, "".join("add table %s %s\n" % (NFT_FAMILY[f], PROBE_TABLE)
                                                          for f in families))

    def variant(self, family):
        """``nf_tables`` or ``legacy``: the kernel layer this family's iptables-restore writes.

        Debian's alternatives end in ``xtables-nft-multi`` or ``xtables-legacy-multi``; anything else is
        asked (``iptables-save --version`` prints ``(nf_tables)`` or ``(legacy)``)."""
        save = self.bins[family][0]
        named = _named_variant(save)
        if named is not None:
            return named
        rc, out, err = self.run([save, "--version"])
        return "legacy" if "legacy" in (out or "") + (err or "") else "nf_tables"

    def shadows(self, policy, layers):
        """Warnings about layers beside ours that can drop what the policy accepts.

        iptables-nft: legacy xtables tables, and nftables tables that are not iptables-nft's own
        (those iptables-save already shows). iptables-legacy: every nftables table."""
        builtins = shadowing.hooked_builtins(policy)
        hooks = [shadowing.NFT_HOOK_OF[b] for b in builtins]
        own = shadowing.own_chains(policy)
        families = [f for f in policy.families if self.bins.get(f)]
        by_variant = {"nf_tables": [], "legacy": []}
        for family in families:
            by_variant[self.variant(family)].append(family)
        out = shadowing.legacy_warnings(layers, by_variant["nf_tables"], builtins, "iptables-nft")
        if families:
            items = layers.nft_ruleset()
            if by_variant["nf_tables"]:
                out += shadowing.describe_nft(shadowing.nft_deciders(
                    items, by_variant["nf_tables"], hooks, skip=shadowing.xtables_skip(items), own=own),
                    "iptables-nft's table")
            if by_variant["legacy"]:
                out += shadowing.describe_nft(shadowing.nft_deciders(items, by_variant["legacy"], hooks, own=own),
                                              "iptables-legacy's table")
        return out

    # ---------------------------------------------------------- helpers

    @staticmethod
    def _freeze(tables):
        return dict(
            (name, Owned(name, tuple(sorted(e["chains"])), tuple(sorted(e["jumps"])), tuple(sorted(e["policies"]))))
            for name, e in tables.items())
