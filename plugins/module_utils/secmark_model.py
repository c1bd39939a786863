# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build the model of a ``secmark_label`` task from its validated parameters.

Private to the paranoid.netconfine collection. A task owns:

- one CIL module ``netconfine_<name>`` in the SELinux policy store
  (``selinux_store.SelinuxModule`` resource, rendered by ``secmark_cil``), and
- one chain per direction in table ``mangle`` (``NC-<name>-output-<hash>`` hooked
  from OUTPUT, ``...-input-...`` from INPUT, ``...-forward-...`` from FORWARD), laid
  out like refpolicy's netfilter skeleton: ``CONNSECMARK --restore`` for
  RELATED/ESTABLISHED first, one ``SECMARK --selctx`` per label, ``CONNSECMARK
  --save`` for NEW last, so replies and related packets carry the label of the
  packet that opened the connection. INPUT and OUTPUT both restore as soon as
  anything is labelled (the reply to an outgoing labelled packet comes in
  through INPUT); FORWARD only has a chain when a label asks for it.

Everything is checked here before anything touches the host, each error
naming its field; the labels' addresses and ports use owner_rule's parsers.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import dataclasses
import re

from ansible_collections.paranoid.netconfine.plugins.module_utils import fields, model, owner_model, secmark_cil, selinux_store
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError

DIRECTIONS = {"output": "OUTPUT", "input": "INPUT", "forward": "FORWARD"}
TABLE = "mangle"
PACKET_SUFFIX = "_packet_t"
# user:role:type:level[-level] with MCS/MLS categories; nothing else can reach the rules or the CIL
_CONTEXT_RE = re.compile(r"^([a-z][a-z0-9_]*):([a-z][a-z0-9_]*):([a-z][a-z0-9_]*):"
                         r"(s[0-9]{1,4}(?::c[0-9]{1,4}(?:[.,]c[0-9]{1,4})*)?"
                         r"(?:-s[0-9]{1,4}(?::c[0-9]{1,4}(?:[.,]c[0-9]{1,4})*)?)?)\Z")
PRIORITY_RANGE = (1, 999)
SSH_PORT = 22


def context(value, field):
    """A full SELinux context ``user:role:type:level`` -> (context, type). Raises naming ``field``."""
    match = _CONTEXT_RE.match(value) if isinstance(value, str) else None
    if not match:
        raise NetconfineError(
            "must be an SELinux context user:role:type:level like system_u:object_r:myhttp_client_packet_t:s0 "
            "(lower-case names, an s0-style level), got %r" % (value,), field)
    return value, match.group(3)


def packet_context(name):
    """The context SECMARK gives a packet of type ``name`` (what refpolicy's netfilter contexts use)."""
    return "system_u:object_r:%s:s0" % name


def build_policy(params):
    """secmark_label parameters -> model.Policy (raises NetconfineError naming the field)."""
    name = fields.task_name(params["name"])
    present = params.get("state") != "absent"
    families = owner_model.FAMILY_OF[params.get("ip_version") or "both"]
    priority = params.get("priority")
    priority = 400 if priority is None else priority
    if not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
        raise NetconfineError("must be between %d and %d, got %r" % (PRIORITY_RANGE + (priority,)), "priority")

    ours, packet_types, types = [], [], []
    for index, raw in enumerate(params.get("packet_types") or []):
        where = "packet_types[%d]" % index
        type_name = secmark_cil.selinux_name(raw.get("name"), where + ".name", PACKET_SUFFIX)
        if type_name in ours:
            raise NetconfineError("packet type %s is declared twice" % type_name, where + ".name")
        kind = raw.get("kind") or "client"
        if kind not in secmark_cil.KIND_ATTRIBUTE:
            raise NetconfineError("must be client or server, got %r" % (kind,), where + ".kind")
        domains = _domains(raw.get("domains") or [], where + ".domains", types)
        ours.append(type_name)
        packet_types.append((type_name, kind, domains, where))

    allow_unlabeled = None
    raw_unlabeled = params.get("allow_unlabeled")
    if raw_unlabeled is not None:
        domains = raw_unlabeled.get("domains")
        if domains is None:
            domains = [secmark_cil.ALL_DOMAINS]
        if not domains:
            raise NetconfineError("must name at least one domain (or 'domain' for all)", "allow_unlabeled.domains")
        audit = raw_unlabeled.get("audit")
        allow_unlabeled = (_domains(domains, "allow_unlabeled.domains", types), True if audit is None else audit,
                           "allow_unlabeled")
    unlabeled = params.get("unlabeled") or "check"
    if unlabeled == "deny" and allow_unlabeled is not None:
        raise NetconfineError("unlabeled: deny contradicts allow_unlabeled; drop one of them", "unlabeled")

    chains, resolved = _chains(name, params.get("labels") or [], families, ours, types, resolved={})
    if present and chains and allow_unlabeled is None and unlabeled != "deny":
        _check_management(params.get("labels") or [], params.get("ssh_port") or SSH_PORT)

    if not present:
        # removal needs only the names: every direction's chain and the module, whatever is still declared
        chains = tuple(model.Chain(TABLE, fields.chain_name(name, d), (), model.Hook(b, "first"))
                       for d, b in DIRECTIONS.items())
        resources = (selinux_store.SelinuxModule(secmark_cil.module_name(name), priority, ""),)
    elif packet_types or allow_unlabeled is not None:
        lines = secmark_cil.render_cil(packet_types, allow_unlabeled, task=name)
        resources = (selinux_store.SelinuxModule(secmark_cil.module_name(name), priority, secmark_cil.cil_text(lines),
                                                 secmark_cil.line_fields(lines), tuple(types)),)
    elif chains:
        # labels with existing packet types only: no module of ours, but a task renamed from one that had
        # a module must not leave it behind, so the (empty) module is still owned and removed
        resources = (selinux_store.SelinuxModule(secmark_cil.module_name(name), priority, "", types=tuple(types)),)
    else:
        raise NetconfineError("declares nothing: give packet_types, labels or allow_unlabeled", "packet_types")
    return model.Policy(name=name, chains=chains, families=families, present=present, resources=resources,
                        resolved=resolved)


def _domains(values, where, types):
    out = []
    for index, value in enumerate(values):
        field = "%s[%d]" % (where, index)
        domain = secmark_cil.selinux_name(value, field)
        if domain in out:
            raise NetconfineError("domain %s is listed twice" % domain, field)
        out.append(domain)
        if domain != secmark_cil.ALL_DOMAINS and domain not in [t for t, _f in types]:
            types.append((domain, field))
    return tuple(out)


def _chains(name, labels, families, ours, types, resolved):
    by_direction = dict((d, []) for d in DIRECTIONS)
    for index, raw in enumerate(labels):
        where = "labels[%d]" % index
        direction = raw.get("direction") or "output"
        if direction not in DIRECTIONS:
            raise NetconfineError("must be one of %s, got %r" % (", ".join(DIRECTIONS), direction),
                                  where + ".direction")
        target = model.Secmark(_label_context(raw, where, ours, types))
        # addresses, ports, protocol and families exactly as owner_rule parses them; only the target differs
        match_keys = ("protocol", "source", "destination", "source_port", "destination_port", "ip_version")
        spec = dict((k, raw.get(k)) for k in match_keys)
        spec["jump"] = "ACCEPT"
        rules = owner_model.build_rules(spec, where, families, resolved)
        by_direction[direction] += [dataclasses.replace(rule, target=target) for rule in rules]
    chains = []
    labelled_families = set(r.family for rules in by_direction.values() for r in rules)
    for direction, builtin in DIRECTIONS.items():
        # replies come in the other direction: INPUT and OUTPUT restore the connection's label whenever
        # anything is labelled, so the reply to a labelled packet carries its label (not unlabeled_t)
        if not by_direction[direction] and not (labelled_families and direction in ("input", "output")):
            continue
        # per family: restore, the labels in the order declared, save; the families side by side (each
        # backend takes its families' rules in order, and nftables makes one inet rule of a v4/v6 pair)
        labelled = by_direction[direction]
        rules = [model.Rule(family, model.ConnSecmark("restore"), matches=(model.Conntrack(("RELATED", "ESTABLISHED")),))
                 for family in families if family in labelled_families]
        rules += labelled
        rules += [model.Rule(family, model.ConnSecmark("save"), matches=(model.Conntrack(("NEW",)),))
                  for family in families if any(r.family == family for r in labelled)]
        chains.append(model.Chain(TABLE, fields.chain_name(name, direction), tuple(rules),
                                  model.Hook(builtin, "first")))
    return tuple(chains), resolved


def _label_context(raw, where, ours, types):
    if (raw.get("packet_type") is None) == (raw.get("context") is None):
        raise NetconfineError("give exactly one of packet_type and context", where + ".packet_type")
    if raw.get("context") is not None:
        value, type_name = context(raw["context"], where + ".context")
        field = where + ".context"
    else:
        type_name = secmark_cil.selinux_name(raw["packet_type"], where + ".packet_type", PACKET_SUFFIX)
        value, field = packet_context(type_name), where + ".packet_type"
    if type_name not in ours and type_name not in [t for t, _f in types]:
        types.append((type_name, field))
    return value


def _covers(port_spec, port):
    if port_spec is None:
        return True
    (low, high), negate = fields.port_range(port_spec, "ssh_port")
    return (low <= port <= high) != negate


def _check_management(labels, ssh_port):
    """Refuse labels that would make SSH's packets unlabeled_t (and cut the management session).

    Once any SECMARK rule exists, the kernel checks ``packet send/recv`` for every packet; one that
    no rule labelled is ``unlabeled_t``, which refpolicy's sshd_t may neither send nor receive.
    A label for incoming TCP to the SSH port (saved to the connection, restored for the replies)
    or for outgoing TCP from it covers the session.
    """
    for raw in labels:
        proto = fields.protocol(raw.get("protocol"), "labels.protocol")
        if proto not in (None, "tcp") or raw.get("source") is not None or raw.get("destination") is not None:
            continue
        direction = raw.get("direction") or "output"
        # the client's port is any ephemeral one: a label restricting it does not cover every session
        if direction == "input" and raw.get("source_port") is None and _covers(raw.get("destination_port"), ssh_port):
            return
        if direction == "output" and raw.get("destination_port") is None and \
                _covers(raw.get("source_port"), ssh_port):
            return
    raise NetconfineError(
        "would make SSH unusable: once any SECMARK rule exists every packet no label matches is unlabeled_t, "
        "which sshd_t (and most domains) may not send or receive, so the management session on port %d is cut. "
        "Add allow_unlabeled (the article's allow domain unlabeled_t, audited), a label for tcp port %d "
        "(direction input, destination_port %d, packet_type ssh_server_packet_t), or set unlabeled: deny "
        "if that is really wanted" % (ssh_port, ssh_port, ssh_port), "labels")
