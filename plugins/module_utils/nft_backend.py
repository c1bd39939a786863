# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The native nftables backend: reader, renderer glue and ``nft -j -f`` scripts.

Private to the paranoid.netconfine collection. It sits behind the same seam
as ``iptables_backend.IptablesBackend`` (``units``, ``read``, ``owned``,
``render``, ``script``, ``apply``, ``snapshot_jumps``); ``engine.converge``
is the applier.

One unit, ``ruleset``: everything a run changes in the tables we own (both
IP families, every hook) goes into one JSON batch for ``nft -j -f``, which the
kernel commits as one transaction, so a failure anywhere leaves the ruleset
as it was. We read with ``nft -j list table inet netconfine`` and compare
normalised JSON (``nft_render.normalise``), never nft's human output.

Nothing outside our table is ever written or named in a batch: Docker's,
firewalld's and iptables-nft's tables are left byte-identical. They are only
read (``shadows``) to warn about drops there that override our accepts.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
from dataclasses import dataclass, replace
from typing import Optional, Tuple

from ansible_collections.paranoid.netconfine.plugins.module_utils import nft_render, secmark_render, shadowing
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError
from ansible_collections.paranoid.netconfine.plugins.module_utils.nft_probe import PROBE_TABLE, kernel_refuses
from ansible_collections.paranoid.netconfine.plugins.module_utils.nft_render import TABLE, TABLE_FAMILY, TABLE_NAME

UNIT = "ruleset"
CGROUP_ROOT = "/sys/fs/cgroup"
_CGROUP2_KEY = '"cgroupv2"'
IN_ORDER = "in order"
TAG_PREFIX = "netconfine:"
_MISSING_TABLE = "No such file or directory"
SELINUXFS = "/sys/fs/selinux"


@dataclass(frozen=True)
class NftChain:
    """One chain of our table as nft listed it; ``rules`` are canonical rule texts in order."""
    name: str
    definition: Optional[Tuple[str, str, int]] = None     # (type, hook, prio) of a base chain
    policy: Optional[str] = None
    rules: Tuple[str, ...] = ()


@dataclass(frozen=True)
class NftTable:
    """One table as nft listed it; ``secmarks`` are its secmark objects as (name, context)."""
    name: str
    chains: Tuple[NftChain, ...] = ()
    secmarks: Tuple[Tuple[str, str], ...] = ()

    def chain(self, name):
        for chain in self.chains:
            if chain.name == name:
                return chain
        return None


@dataclass(frozen=True)
class Owned:
    """What one task owns in our table, comparable between desired and read state.

    ``bases``: (chain, type, hook, prio) of the base chains the task hooks;
    ``policies``: (base chain, policy) the task manages; ``chains``: the
    task's chain and helper chains with their canonical rules; ``jumps``:
    (base chain, canonical rule, placement) of the task's rules in base
    chains, placement ``in order`` when the rule occurs once in a chain that
    holds only netconfine rules in their deterministic order; ``objects``:
    (name, context) of the secmark objects of the task's chains.
    """
    table: str
    bases: Tuple[Tuple[str, str, str, int], ...] = ()
    policies: Tuple[Tuple[str, str], ...] = ()
    chains: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()
    jumps: Tuple[Tuple[str, str, str], ...] = ()
    objects: Tuple[Tuple[str, str], ...] = ()

    def lines(self):
        out = ["table %s" % self.table]
        out += [secmark_render.object_line(name, context) for name, context in self.objects]
        policies = dict(self.policies)
        for name, kind, hook, prio in self.bases:
            policy = "; policy %s" % policies.pop(name) if name in policies else ""
            out.append("chain %s { type %s hook %s priority %d%s; }" % (name, kind, hook, prio, policy))
        out += ["chain %s { policy %s; }" % item for item in sorted(policies.items())]
        out += ["%s: %s  # %s" % (chain, nft_render.format_rule(json.loads(rule)), placement)
                for chain, rule, placement in self.jumps]
        for name, rules in self.chains:
            out.append("chain %s {" % name)
            out += ["\t%s" % nft_render.format_rule(json.loads(rule)) for rule in rules]
            out.append("}")
        return out


def parse_list(text):
    """``nft -j list table ...`` output -> {"inet netconfine": NftTable}."""
    try:
        items = json.loads(text)["nftables"]
    except (ValueError, KeyError, TypeError) as exc:
        raise NetconfineError("cannot parse nft -j output (%s)" % exc, "backend")
    return parse_items(items)


def parse_items(items):
    """The items of an ``nft -j list`` -> {"FAMILY NAME": NftTable} for every table among them."""
    tables, chains, rules, secmarks = {}, {}, {}, {}
    for item in items:
        if "table" in item:
            tables["%s %s" % (item["table"]["family"], item["table"]["name"])] = []
        elif "secmark" in item:
            obj = item["secmark"]
            secmarks.setdefault("%s %s" % (obj["family"], obj["table"]), []).append((obj["name"], obj["context"]))
        elif "chain" in item:
            ch = item["chain"]
            key = "%s %s" % (ch["family"], ch["table"])
            chains.setdefault(key, []).append(ch)
        elif "rule" in item:
            r = item["rule"]
            key = ("%s %s" % (r["family"], r["table"]), r["chain"])
            rules.setdefault(key, []).append(nft_render.canonical(nft_render.normalise(r)))
    out = {}
    for table in tables:
        parsed = []
        for ch in chains.get(table, []):
            definition = (ch["type"], ch["hook"], ch["prio"]) if "hook" in ch else None
            parsed.append(NftChain(ch["name"], definition, ch.get("policy") if definition else None,
                                   tuple(rules.get((table, ch["name"]), ()))))
        out[table] = NftTable(table, tuple(parsed), tuple(sorted(secmarks.get(table, ()))))
    return out


def _rule_of(text):
    return json.loads(text)


def _targets(rule):
    out = []
    for expr in rule["expr"]:
        for kind in ("jump", "goto"):
            if isinstance(expr, dict) and kind in expr:
                out.append(expr[kind]["target"])
    return out


def _tag(rule):
    comment = rule.get("comment") or ""
    return comment if comment.startswith(TAG_PREFIX) else None


def order_key(text):
    """Deterministic order of the rules in our base chains: jumps before other rules, then by tag."""
    rule = _rule_of(text)
    return (0 if _targets(rule) else 1, rule.get("comment") or "", text)


def _placement(rules, text):
    hits = rules.count(text)
    if hits != 1:
        return "occurs %d times" % hits
    foreign = [r for r in rules if _tag(_rule_of(r)) is None]
    if foreign:
        return "base chain also holds %d rule(s) not made by netconfine" % len(foreign)
    if list(rules) != sorted(rules, key=order_key):
        return "base chain out of order"
    return IN_ORDER


class NftablesBackend:
    """Reader and script writer for native nftables (our own ``inet`` table)."""

    name = "nftables"
    offline_units = (UNIT,)
    # the table this reader and script writer own (nft_bridge's state owns "bridge netconfine")
    table_family = TABLE_FAMILY
    table_name = TABLE_NAME
    table = TABLE

    def __init__(self, run, nft, unshare=None, cgroup_root=CGROUP_ROOT, selinuxfs=SELINUXFS):
        """``run(argv, data=None) -> (rc, out, err)``; ``nft`` is the path of the nft binary or None.

        ``unshare`` (its path, or None) lets nft see the cgroup v2 hierarchy where it looks for
        cgroup paths, ``/sys/fs/cgroup``, on hosts that mount it elsewhere (cgroup v1 + unified) and
        under ``ip netns exec``, which remounts /sys without cgroups: :meth:`_with_cgroup2`.
        """
        self.run = run
        self.nft = nft
        self.unshare = unshare
        self.cgroup_root = cgroup_root
        self.selinuxfs = selinuxfs
        self._usable = None
        self.unusable_reason = None

    # ---------------------------------------------------------- the seam

    def installed(self):
        return bool(self.nft)

    def usable(self):
        """nft is installed, the kernel has nf_tables and nft speaks JSON (else ``unusable_reason`` says why)."""
        if self._usable is None:
            self._usable = False
            if not self.nft:
                self.unusable_reason = "nft is not installed (Debian package nftables)"
                return False
            argv = [self.nft, "-j", "list", "tables"]
            rc, out, err = self.run(argv)
            if rc != 0:
                self.unusable_reason = "%s failed (rc=%d): %s" % (" ".join(argv), rc, (err or out).strip())
                return False
            try:
                self._usable = "nftables" in json.loads(out)
            except ValueError:
                self._usable = False
            if not self._usable:
                self.unusable_reason = "%s printed no JSON (nft built without JSON support?)" % " ".join(argv)
        return self._usable

    def refuses(self, policy):
        """Why this host cannot hold what ``policy`` needs on nftables (text), or None when it can.

        SECMARK labels need secmark objects, which the kernel only accepts with SELinux active (it
        turns the context into a SID when the object is added). Asked with ``nft -c`` (the kernel
        checks the batch and commits nothing) for a throwaway table holding one object with the
        loaded policy's own context for unlabeled packets (``/sys/fs/selinux/initial_contexts/unlabeled``),
        since the task's own types may be installed only later in the same run.
        """
        if not policy.present or not any(secmark_render.objects(chain) for chain in policy.chains):
            return None
        path = os.path.join(self.selinuxfs, "initial_contexts", "unlabeled")
        try:
            with open(path, "rb") as handle:
                context = handle.read().rstrip(b"\0\n").decode("ascii")
        except (IOError, OSError, UnicodeDecodeError) as exc:
            return "SELinux is not active, so the kernel cannot hold nftables secmark objects (%s)" % exc
        if _UNSAFE & set(context) or not context:
            return "unexpected context %r in %s" % (context, path)
        script = 'add table inet %s\nadd secmark inet %s probe { "%s" }\n' % (PROBE_TABLE, PROBE_TABLE, context)
        refused = kernel_refuses(self.run, self.nft, script)
        return "the kernel refuses nftables secmark objects (nft -c: %s)" % refused if refused else None

    def units(self, policy):
        return (UNIT,)

    def read(self, unit):
        argv = [self.nft, "-j", "list", "table", self.table_family, self.table_name]
        rc, out, err = self.run(argv)
        if rc == 0 and _CGROUP2_KEY in out and self._cgroup2_hidden():
            # nft prints a cgroup it cannot find under /sys/fs/cgroup as a number: read where it can
            argv = self._with_cgroup2(argv)
            rc, out, err = self.run(argv)
        if rc != 0:
            if _MISSING_TABLE in err:
                return {}
            raise NetconfineError("%s failed (rc=%d): %s" % (" ".join(argv), rc, err.strip()), "backend",
                                  command=" ".join(argv), stderr=err)
        return parse_list(out)

    def read_shared(self, unit, layers, policy):
        """What :meth:`read` returns, taken from the ruleset the run already read under the same lock
        (``layers.nft_ruleset``, read for the shadowing check), or None: then :meth:`read` asks nft.

        None too where our rules match cgroup v2 paths that only nft in a mount namespace of its own can
        print (:meth:`_with_cgroup2`).
        """
        mine = layers.nft_table(self.table_family, self.table_name, read=False)
        if mine is None:
            return None
        if self._cgroup2_hidden() and any(_CGROUP2_KEY in json.dumps(item) for item in mine if "rule" in item):
            return None
        return parse_items(mine)

    def render(self, policy, unit):
        """Desired Owned of one task: {"inet netconfine": Owned} (empty when nothing is wanted)."""
        bases, policies, chains, jumps, objects = {}, {}, [], [], []
        if not policy.present:
            return {}
        for chain in policy.chains:
            managed = _managed(policy, chain)
            marker = (nft_render.canonical(nft_render.policy_marker()),) if "policy" in dict(managed) else ()
            rules = tuple(r for r in chain.rules if r.family in policy.families)
            objects += secmark_render.objects(_with_rules(chain, rules))
            for index, (name, rendered) in enumerate(nft_render.render_chain(_with_rules(chain, rules))):
                chains.append((name, (marker if index == 0 else ()) + tuple(nft_render.canonical(r)
                                                                            for r in rendered)))
            if not chain.hook:
                continue
            base = nft_render.base_chain(chain.table, chain.hook.builtin, chain.hook.position)
            bases[base.name] = tuple(base)
            jumps.append((base.name, nft_render.canonical(nft_render.jump_rule(policy, chain)), IN_ORDER))
            for kind, value in managed:
                if kind == "policy":
                    policies[base.name] = value
                else:
                    jumps.append((base.name, nft_render.canonical(value), IN_ORDER))
        return _freeze(bases, policies, chains, jumps, objects, self.table)

    def owned(self, tables, policy, unit):
        """What our table holds of this task (its ``retired`` chains too: another form of it held them)."""
        table = tables.get(self.table) or NftTable(self.table)
        mains = [c.name for c in policy.chains + tuple(getattr(policy, "retired", ()))]

        def ours(name):
            return any(name == m or self.is_helper(m, name) for m in mains)

        chains = [(c.name, c.rules) for c in table.chains if c.definition is None and ours(c.name)]
        objects = [o for o in table.secmarks if any(secmark_render.is_object_of(o[0], m) for m in mains)]
        bases, policies, jumps = {}, {}, []
        marker = nft_render.canonical(nft_render.policy_marker())
        for chain in policy.chains:
            if not chain.hook:
                continue
            base = nft_render.base_chain(chain.table, chain.hook.builtin, chain.hook.position)
            found = table.chain(base.name)
            if policy.present and found is not None:
                bases[base.name] = (base.name,) + (found.definition or ("", "", 0))
            owned_chain = table.chain(chain.name)
            if owned_chain is not None and owned_chain.rules[:1] == (marker,):
                # the kernel records that this task set the base chain's policy: released when undeclared
                policies[base.name] = (found.policy if found is not None and found.definition else None) or "accept"
        for chain in table.chains:
            if chain.definition is None:
                continue
            for text in sorted(set(chain.rules), key=chain.rules.index):
                rule = _rule_of(text)
                targets = [t for t in _targets(rule) if ours(t)]
                tag = _tag(rule)
                if tag != policy.tag and not targets:
                    continue
                if targets and tag is not None and tag != policy.tag:
                    raise NetconfineError(
                        "chain %s is already owned by task %r (rule %s in %s); choose another name"
                        % (targets[0], tag[len(TAG_PREFIX):], nft_render.format_rule(rule), chain.name), "name")
                jumps.append((chain.name, text, _placement(chain.rules, text)))
        return _freeze(bases, policies, chains, jumps, objects, self.table)

    @staticmethod
    def is_helper(main, name):
        """Whether chain ``name`` is a helper of the task's chain ``main`` (``main.N``)."""
        return name.startswith(main + ".") and name[len(main) + 1:].isdigit()

    def script(self, tables, current, desired, restore_jumps=None):
        """The ``nft -j -f`` batch taking ``current`` to ``desired`` ("" when they are equal).

        Base chains are ours alone: a base chain that changes is flushed and
        refilled with every netconfine rule it held (other tasks' jumps kept,
        foreign rules dropped) plus this task's, in deterministic order.
        """
        if current == desired:
            return ""
        cur = current.get(self.table, Owned(self.table))
        want = desired.get(self.table, Owned(self.table))
        table = tables.get(self.table) or NftTable(self.table)
        existing = dict((c.name, c) for c in table.chains)
        want_chains = dict(want.chains)
        cur_chains = dict(cur.chains)
        ours_old = set(rule for _b, rule, _p in cur.jumps) | set(rule for _b, rule, _p in want.jumps)
        want_bases = dict((b[0], b[1:]) for b in want.bases)
        want_policies = dict(want.policies)
        want_objects, cur_objects, existing_objects = dict(want.objects), dict(cur.objects), dict(table.secmarks)

        # the whole table after this change
        regular = dict((c.name, c.rules) for c in table.chains if c.definition is None)
        for name in cur_chains:
            regular.pop(name, None)
        regular.update(want_chains)
        objects = dict(existing_objects)
        for name in cur_objects:
            objects.pop(name, None)
        objects.update(want_objects)
        base_names = (set(c.name for c in table.chains if c.definition is not None) | set(want_bases)
                      | set(want_policies) | set(b for b, _r, _p in want.jumps))
        final = {}
        for name in sorted(base_names):
            found = existing.get(name)
            definition = want_bases.get(name) or (found.definition if found is not None else None)
            if definition is None:
                continue      # a managed policy on a chain that does not exist: it accepts already
            kept = [] if found is None else [r for r in found.rules if r not in ours_old and _tag(_rule_of(r))]
            rules = sorted(set(kept) | set(r for b, r, _p in want.jumps if b == name), key=order_key)
            policy = want_policies.get(name)
            if policy is None and name not in dict(cur.policies) and found is not None and found.definition:
                policy = found.policy      # not ours: left as it is
            final[name] = (tuple(definition), policy or "accept", tuple(rules))

        empty = not regular and not objects and all(not rules and policy == "accept"
                                                    for _d, policy, rules in final.values())
        table_ref = {"family": self.table_family, "name": self.table_name}
        if empty:
            return _batch([{"delete": {"table": table_ref}}]) if tables.get(self.table) else ""

        def chain_ref(name, **extra):
            ref = {"family": self.table_family, "table": self.table_name, "name": name}
            ref.update(extra)
            return ref

        def add_rules(name, rules):
            for text in rules:
                rule = _rule_of(text)
                rule.update({"family": self.table_family, "table": self.table_name, "chain": name})
                cmds.append({"add": {"rule": rule}})

        object_ref = chain_ref      # a secmark object is named like a chain: family, table, name

        cmds = [{"add": {"table": table_ref}}]
        # 0. secmark objects, before any rule names them. One whose context differs (made by hand) is
        #    deleted and added again once no rule refers to it: the kernel cannot update a secmark object.
        replaced = sorted(n for n, context in want_objects.items() if existing_objects.get(n, context) != context)
        referring = sorted(c.name for c in table.chains if c.definition is None and any(
            set(secmark_render.references(_rule_of(r))) & set(replaced) for r in c.rules))
        cmds += [{"flush": {"chain": chain_ref(n)}} for n in referring]
        cmds += [{"delete": {"secmark": object_ref(n)}} for n in replaced]
        cmds += [{"add": {"secmark": object_ref(n, context=want_objects[n])}} for n in sorted(want_objects)
                 if n not in existing_objects or n in replaced]
        # 1. the task's chains: declare all (jumps between them), then refill those that differ
        changed = [(n, r) for n, r in want.chains if n not in existing or existing[n].rules != r
                   or existing[n].definition is not None or n in referring]
        for name, _rules in changed:
            if name in existing and existing[name].definition is not None:
                cmds += [{"flush": {"chain": chain_ref(name)}}, {"delete": {"chain": chain_ref(name)}}]
            cmds.append({"add": {"chain": chain_ref(name)}})
        for name, rules in changed:
            if name in existing and existing[name].definition is None:
                cmds.append({"flush": {"chain": chain_ref(name)}})
            add_rules(name, rules)
        # 2. base chains: (re)define, refill in order
        doomed_bases = []
        for name, (definition, policy, rules) in sorted(final.items()):
            found = existing.get(name)
            if found is not None and (found.definition, found.policy, found.rules) == (definition, policy, rules):
                continue
            kind, hook, prio = definition
            spec = chain_ref(name, type=kind, hook=hook, prio=prio, policy=policy)
            if found is not None and found.definition != definition:
                cmds += [{"flush": {"chain": chain_ref(name)}}, {"delete": {"chain": chain_ref(name)}}]
                found = None
            if not rules and policy == "accept" and name not in want_bases:
                if found is not None:
                    cmds.append({"flush": {"chain": chain_ref(name)}})
                    doomed_bases.append(name)
                continue
            cmds.append({"add": {"chain": spec}})
            if found is not None:
                cmds.append({"flush": {"chain": chain_ref(name)}})
            add_rules(name, rules)
        # 3. chains no longer owned: flush all, then delete (nothing refers to them any more)
        doomed = [n for n in cur_chains if n not in want_chains and n in existing]
        cmds += [{"flush": {"chain": chain_ref(n)}} for n in doomed]
        cmds += [{"delete": {"chain": chain_ref(n)}} for n in doomed + doomed_bases]
        # 4. secmark objects no longer owned, now that no rule refers to them
        cmds += [{"delete": {"secmark": object_ref(n)}} for n in sorted(cur_objects)
                 if n not in want_objects and n in existing_objects]
        if any(_needs_text(c) for c in cmds):
            return batch_text(cmds)
        return _batch(cmds)

    def apply(self, unit, script):
        """One ``nft -f`` (JSON or, where nft's JSON parser lacks a statement, nft syntax): one transaction."""
        argv = [self.nft, "-j", "-f", "-"] if script.startswith("{") else [self.nft, "-f", "-"]
        if "cgroupv2" in script and self._cgroup2_hidden():
            argv = self._with_cgroup2(argv)
        rc, out, err = self.run(argv, data=script)
        if rc != 0:
            raise NetconfineError(
                "nft rejected the change, nothing was applied (rc=%d): %s" % (rc, (err or out).strip()),
                "backend", command=" ".join(argv), stdin=script, stderr=err)

    def shadows(self, policy, layers):
        """Warnings about layers beside our table that can drop what the policy accepts: other nftables
        tables at the same hooks (iptables-nft's included) and legacy xtables tables."""
        builtins = shadowing.hooked_builtins(policy)
        hooks = [shadowing.NFT_HOOK_OF[b] for b in builtins]
        out = shadowing.describe_nft(shadowing.nft_deciders(layers.nft_ruleset(), policy.families, hooks,
                                                            skip=(TABLE,), own=shadowing.own_chains(policy)),
                                     "table %s" % TABLE)
        return out + shadowing.legacy_warnings(layers, policy.families, builtins, "nftables")

    def _cgroup2_hidden(self):
        return bool(self.unshare) and not os.path.exists(os.path.join(self.cgroup_root, "cgroup.controllers"))

    def _with_cgroup2(self, argv):
        """argv run in a private mount namespace with the cgroup v2 hierarchy mounted on /sys/fs/cgroup.

        nft resolves ``socket cgroupv2`` paths to ids (and back) under /sys/fs/cgroup only. The mount
        is private to this one nft process; the host's mounts are not touched.
        """
        return [self.unshare, "--mount", "--propagation", "private", "sh", "-c",
                'mount -t cgroup2 cgroup2 %s 2>/dev/null; exec "$@"' % self.cgroup_root, "nft"] + argv

    def snapshot_jumps(self, tables, current):
        """Jump positions are deterministic here; nothing to remember for rollback."""
        return None


def _with_rules(chain, rules):
    return replace(chain, rules=rules)


def _managed(policy, chain):
    """The declared built-in policy of ``chain`` as ('policy', accept|drop) or ('rule', drop rule) items.

    Both families: our base chain's policy, and a marker rule first in the
    task's chain records in the kernel that the task set it, so that it is
    released to accept by any run of the task that no longer declares it
    (``state: absent`` without ``policy`` too). One family: an inet base
    chain's policy would hit the other family too, so a tagged ``meta nfproto X
    drop`` at the end of the base chain stands for it (its tag is the record).
    """
    if not chain.hook or not chain.builtin_policy or not policy.present:
        return []
    if set(policy.families) >= {4, 6}:
        return [("policy", chain.builtin_policy.lower())]
    if chain.builtin_policy == "DROP":
        return [("rule", nft_render.family_drop_rule(policy, f)) for f in policy.families]
    return []


def _freeze(bases, policies, chains, jumps, objects=(), table=TABLE):
    if not (bases or policies or chains or jumps or objects):
        return {}
    return {table: Owned(table, tuple(sorted(bases.values())), tuple(sorted(policies.items())),
                         tuple(sorted(chains)), tuple(sorted(jumps)), tuple(sorted(set(objects))))}


# Characters that could end a quoted string, a statement or a block, start a comment or a
# variable, or smuggle a second line into nft syntax: fields.py refuses them in every input;
# this is the last check before text is written.
_UNSAFE = frozenset('"\\;#{}\'$') | frozenset(chr(c) for c in range(32)) | frozenset(chr(127))


def _needs_text(cmd):
    """nft 1.0.6 cannot parse 'socket cgroupv2' from JSON; such a batch goes as nft syntax."""
    return '"cgroupv2"' in json.dumps(cmd)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, (dict, list)):
        for inner in value.values() if isinstance(value, dict) else value:
            yield from _strings(inner)


def batch_text(cmds):
    """The same batch in nft syntax, one command per line (``nft -f`` commits it as one transaction)."""
    lines = []
    for cmd in cmds:
        (verb, obj), = cmd.items()
        (kind, spec), = obj.items()
        bad = [t for t in _strings(spec) if _UNSAFE & set(t)]
        if bad:
            raise NetconfineError("refusing to write %r into an nft script" % bad[0], "backend")
        if kind == "table":
            lines.append("%s table %s %s" % (verb, spec["family"], spec["name"]))
        elif kind == "secmark":
            line = "%s secmark %s %s %s" % (verb, spec["family"], spec["table"], spec["name"])
            lines.append(line + (' { "%s" }' % spec["context"] if verb == "add" else ""))
        elif kind == "chain":
            line = "%s chain %s %s %s" % (verb, spec["family"], spec["table"], spec["name"])
            if verb == "add" and "hook" in spec:
                line += " { type %s hook %s priority %d ; policy %s ; }" % (
                    spec["type"], spec["hook"], spec["prio"], spec.get("policy", "accept"))
            lines.append(line)
        else:
            rule = dict((k, spec[k]) for k in ("expr", "comment") if k in spec)
            lines.append("add rule %s %s %s %s" % (spec["family"], spec["table"], spec["chain"],
                                                   nft_render.format_rule(rule)))
    return "\n".join(lines) + "\n"


def _batch(cmds):
    return '{"nftables": [\n%s\n]}\n' % ",\n".join(json.dumps(c, sort_keys=True) for c in cmds)
