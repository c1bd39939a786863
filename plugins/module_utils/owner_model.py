# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build the model of an ``owner_rule`` task from its validated parameters.

Private to the paranoid.netconfine collection. Everything the user typed is
checked here, before anything touches the kernel; each error names its field.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.paranoid.netconfine.plugins.module_utils import fields, identity, model
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError

# Where the kernel knows a packet's owning socket: locally generated packets only.
OWNER_HOOKS = {
    "filter": ("OUTPUT",),
    "mangle": ("OUTPUT", "POSTROUTING"),
    "nat": ("OUTPUT", "POSTROUTING"),
}
# protocols with a port match of their own (iptables has no "-m udplite")
PORT_PROTOCOLS = ("tcp", "udp", "sctp")
FAMILY_OF = {"ipv4": (4,), "ipv6": (6,), "both": (4, 6)}
REMOVED_MATCHES = {
    "pid_owner": "--pid-owner",
    "sid_owner": "--sid-owner",
}
_LOG_ONLY = ("log_prefix", "log_level")
# Tables whose chains accept a verdict target: REJECT is filter-only in the kernel, nat refuses DROP.
TARGET_TABLES = {"REJECT": ("filter",), "DROP": ("filter", "mangle")}
CGROUP_ROOT = "/sys/fs/cgroup"


def build_policy(params):
    """owner_rule parameters -> model.Policy (raises NetconfineError naming the field)."""
    name = fields.task_name(params["name"])
    table, builtin = params.get("table") or "filter", params.get("chain") or "OUTPUT"
    if table not in OWNER_HOOKS:
        raise NetconfineError("must be one of %s, got %r" % (", ".join(sorted(OWNER_HOOKS)), table), "table")
    if builtin not in OWNER_HOOKS[table]:
        raise NetconfineError(
            "owner matching is only possible in %s of table %s: the kernel knows the owning socket only "
            "for locally generated packets (OUTPUT, POSTROUTING), got %r"
            % (" and ".join(OWNER_HOOKS[table]), table, builtin), "chain")
    families = FAMILY_OF[params.get("ip_version") or "both"]
    builtin_policy = params.get("policy")
    if builtin_policy is not None and table != "filter":
        raise NetconfineError("a built-in chain policy is only managed in table filter", "policy")
    rules = []
    if builtin_policy == "drop":
        for family in families:
            rules.append(model.Rule(family, model.Verdict("ACCEPT"),
                                    matches=(model.Conntrack(("RELATED", "ESTABLISHED")),), field="policy"))
    resolved = {}
    for index, raw in enumerate(params.get("rules") or []):
        if table not in TARGET_TABLES.get(raw.get("jump"), (table,)):
            raise NetconfineError("the kernel does not accept %s in table %s (only in %s)"
                                  % (raw["jump"], table, ", ".join(TARGET_TABLES[raw["jump"]])),
                                  "rules[%d].jump" % index)
        rules.extend(build_rules(raw, "rules[%d]" % index, families, resolved))
    chain = model.Chain(
        table=table,
        name=fields.chain_name(name),
        rules=tuple(rules),
        hook=model.Hook(builtin, params.get("position") or "first"),
        builtin_policy=builtin_policy.upper() if builtin_policy else None,
    )
    return model.Policy(name=name, chains=(chain,), families=families,
                        present=params.get("state") != "absent", resolved=resolved)


def build_rules(raw, where, families, resolved):
    """One rule entry -> one model.Rule per IP family (and address) it applies to."""
    def field(key):
        return "%s.%s" % (where, key)

    for key, option in REMOVED_MATCHES.items():
        if raw.get(key) is not None:
            raise NetconfineError(
                "the owner match option %s was removed from Linux in 2.6.14 and no kernel accepts it; "
                "match the process by cgroup (cgroup: /system.slice/NAME.service) or run it in its own "
                "network namespace (paranoid.netconfine.netns_service)" % option, field(key))
    jump = raw.get("jump")
    if jump is None:
        raise NetconfineError("is required (ACCEPT, DROP, REJECT, LOG or RETURN)", field("jump"))
    for key in _LOG_ONLY:
        if raw.get(key) is not None and jump != "LOG":
            raise NetconfineError("only applies to jump LOG (this rule jumps to %s)" % jump, field(key))
    if raw.get("reject_with") is not None and jump != "REJECT":
        raise NetconfineError("only applies to jump REJECT (this rule jumps to %s)" % jump, field("reject_with"))

    proto = fields.protocol(raw.get("protocol"), field("protocol"))
    rule_families = [f for f in families if f in FAMILY_OF[raw.get("ip_version") or "both"]]
    if proto == "icmp":
        rule_families = [f for f in rule_families if f == 4]
    elif proto == "ipv6-icmp":
        rule_families = [f for f in rule_families if f == 6]

    sources, src_neg, found = fields.addresses(raw.get("source"), field("source"))
    resolved.update(found)
    dests, dst_neg, found = fields.addresses(raw.get("destination"), field("destination"))
    resolved.update(found)

    common = _common_matches(raw, proto, field)
    target = _target(raw, jump, proto, field)

    out = []
    for family in rule_families:
        src = _of_family(sources, src_neg, family)
        dst = _of_family(dests, dst_neg, family)
        icmp = ()
        if raw.get("icmp_type") is not None:
            if proto not in ("icmp", "ipv6-icmp"):
                raise NetconfineError("needs protocol icmp or ipv6-icmp", field("icmp_type"))
            icmp = (model.Icmp(family, *fields.icmp_type(raw["icmp_type"], family, field("icmp_type"))),)
        for s in src:
            for d in dst:
                out.append(model.Rule(
                    family=family, target=target, protocol=proto,
                    source=s, source_negate=src_neg, destination=d, destination_negate=dst_neg,
                    out_interface=common["out_interface"][0], out_interface_negate=common["out_interface"][1],
                    matches=icmp + common["matches"], field=where))
    if not out:
        raise NetconfineError(
            "applies to no IP family: its protocol or addresses exclude every family in ip_version %s"
            % "/".join("ipv%d" % f for f in families), where)
    return out


def _of_family(nets, negate, family):
    """The address matches one family's rule gets: [None] for no match at all, [] for no rule.

    A negated list without an address of this family ('!192.0.2.1' for IPv6) is true of every
    packet of the family, so the rule applies there without an address match.
    """
    if nets is None:
        return [None]
    mine = [n for n in nets if n.version == family]
    return mine or ([None] if negate else [])


def _common_matches(raw, proto, field):
    matches = []
    if raw.get("source_port") is not None or raw.get("destination_port") is not None:
        if proto not in PORT_PROTOCOLS:
            key = "destination_port" if raw.get("destination_port") is not None else "source_port"
            raise NetconfineError("needs protocol %s" % ", ".join(PORT_PROTOCOLS), field(key))
        sport, sneg = (fields.port_range(raw["source_port"], field("source_port"))
                       if raw.get("source_port") is not None else (None, False))
        dport, dneg = (fields.port_range(raw["destination_port"], field("destination_port"))
                       if raw.get("destination_port") is not None else (None, False))
        matches.append(model.Ports(proto, sport, sneg, dport, dneg))
    if raw.get("destination_type") is not None:
        matches.append(model.DestinationType(*fields.destination_type(raw["destination_type"],
                                                                      field("destination_type"))))
    owner = _owner(raw, field)
    if owner is not None:
        matches.append(owner)
    if raw.get("cgroup") is not None:
        matches.append(_cgroup(raw["cgroup"], field("cgroup")))
    states = fields.ctstates(raw.get("ctstate"), field("ctstate"))
    if states:
        matches.append(model.Conntrack(states))
    if raw.get("limit") is not None:
        rate, unit = fields.limit(raw["limit"], field("limit"))
        burst = 5 if raw.get("limit_burst") is None else raw["limit_burst"]
        if not 1 <= burst <= 10000:
            raise NetconfineError("must be between 1 and 10000, got %r" % burst, field("limit_burst"))
        matches.append(model.Limit(rate, unit, burst))
    elif raw.get("limit_burst") is not None:
        raise NetconfineError("needs limit", field("limit_burst"))
    if raw.get("comment") is not None:
        matches.append(model.Comment(fields.text(raw["comment"], field("comment"), 128)))
    out_iface = (None, False)
    if raw.get("out_interface") is not None:
        out_iface = fields.interface(raw["out_interface"], field("out_interface"))
    return {"matches": tuple(matches), "out_interface": out_iface}


def _owner(raw, field):
    uid = gid = None
    uid_neg = gid_neg = False
    if raw.get("uid_owner") is not None:
        uid, uid_neg = identity.uid(raw["uid_owner"], field("uid_owner"))
    if raw.get("gid_owner") is not None:
        gid, gid_neg = identity.gid(raw["gid_owner"], field("gid_owner"))
    suppl = bool(raw.get("suppl_groups"))
    if suppl and gid is None:
        raise NetconfineError("needs gid_owner", field("suppl_groups"))
    socket_exists = raw.get("socket_exists")
    if uid is None and gid is None and socket_exists is None:
        return None
    return model.Owner(uid, uid_neg, gid, gid_neg, suppl, socket_exists,
                       identity.group_members(gid) if suppl else ())


def _cgroup(value, field):
    path, negate = fields.negation(value)
    fields.text(path, field, 255)
    if not path.startswith("/") or "//" in path or "/../" in path + "/" or "/./" in path + "/":
        raise NetconfineError("must be an absolute, normalised cgroup v2 path like /system.slice/stunnel4.service, "
                              "got %r" % (path,), field)
    if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")) and \
            not os.path.isdir(CGROUP_ROOT + path.rstrip("/")):
        raise NetconfineError("cgroup %r does not exist under %s (start the service first; sockets opened "
                              "before the rule keep their old verdicts until restarted)" % (path, CGROUP_ROOT), field)
    return model.Cgroup(path, negate)


def _target(raw, jump, proto, field):
    if jump in ("ACCEPT", "DROP", "RETURN"):
        return model.Verdict(jump)
    if jump == "REJECT":
        reason = fields.reject_reason(raw.get("reject_with"), field("reject_with"))
        if reason == "tcp-reset" and proto != "tcp":
            raise NetconfineError("tcp-reset needs protocol tcp", field("reject_with"))
        return model.Reject(reason)
    if jump == "LOG":
        prefix = raw.get("log_prefix")
        if prefix is not None:
            fields.text(prefix, field("log_prefix"), 29)
        return model.Log(prefix or None, fields.log_level(raw.get("log_level"), field("log_level")))
    raise NetconfineError("must be one of ACCEPT, DROP, REJECT, LOG, RETURN, got %r" % (jump,), field("jump"))
