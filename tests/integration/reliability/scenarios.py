"""The reliability suite's registry: which modules, with which parameters, on which backends.

A module joins the suite with a few lines here:

* one or more :class:`Scenario` entries in ``SCENARIOS`` - parameters for variant ``i`` (variants
  differ, so that each one replaces the owned state), and a behaviour check run against the real
  kernel (connections refused or accepted) after the scenario is applied;
* a :class:`HostileField` per field type the module accepts in ``HOSTILE_FIELDS`` - where a
  hostile value goes in its parameters and which field the error must name.

Every test is parametrised over :func:`backends`: ``iptables`` always, ``nftables`` as soon as
``netfilter_task.BACKENDS`` registers it (a registered backend that breaks fails the suite; it is
never skipped).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import nchelpers
from ansible_collections.paranoid.netconfine.plugins.module_utils import netfilter_task


# --------------------------------------------------------------------------- backends

@dataclasses.dataclass(frozen=True)
class Backend:
    name: str                   # the modules' ``backend`` option

    def __str__(self) -> str:
        return self.name


def backends() -> list[Backend]:
    """Every backend the modules can be told to use on this checkout (see netfilter_task.BACKENDS).

    ``NCT_RELIABILITY_BACKENDS=iptables`` narrows the list while developing; asking for a backend that
    is not registered is an error, never a silent skip.
    """
    registered = sorted(netfilter_task.BACKENDS, key=lambda n: (n != "iptables", n))
    wanted = [n for n in os.environ.get("NCT_RELIABILITY_BACKENDS", "").replace(",", " ").split() if n]
    missing = [n for n in wanted if n not in registered]
    if missing:
        raise RuntimeError("NCT_RELIABILITY_BACKENDS names %s, not registered in netfilter_task.BACKENDS (%s)"
                           % (", ".join(missing), ", ".join(registered)))
    return [Backend(name) for name in (wanted or registered)]


# --------------------------------------------------------------------------- the world a scenario runs in

@dataclasses.dataclass
class World:
    """A namespace host with the users, group and listener the scenarios' behaviour checks need."""
    ns: str
    backend: Backend
    user: str            # an ordinary user
    member: str          # a user with ``group`` as a supplementary group
    group: str
    port: int            # a TCP listener on 127.0.0.1 and ::1 inside ns

    def outcome(self, user: str, host: str, group: str | None = None) -> str:
        return nchelpers.try_connect(self.ns, user, host, self.port, group=group, timeout=1.0)


# --------------------------------------------------------------------------- scenarios

@dataclasses.dataclass(frozen=True)
class Scenario:
    id: str
    module: str
    params: Callable[[World, int], dict]          # (world, variant) -> module parameters (without backend)
    behaviour: Callable[[World], None] | None     # asserts what the applied policy does to real traffic
    undone: Callable[[World], None] | None = None  # asserts the traffic is free again after state=absent

    def args(self, world: World, variant: int = 0, **extra) -> dict:
        args = dict(self.params(world, variant), backend=world.backend.name)
        args.update(extra)
        return args


def _both_families(world: World, user: str, expected: str | tuple[str, ...], group: str | None = None) -> None:
    allowed = (expected,) if isinstance(expected, str) else expected
    for host in ("127.0.0.1", "::1"):
        got = world.outcome(user, host, group)
        assert got in allowed, "%s%s -> %s:%d: %s, expected %s" % (
            user, " (as group %s)" % group if group else "", host, world.port, got, " or ".join(allowed))


def _tunnel_guard(world, variant):
    return {"name": "rly-tunnel", "rules": [
        {"protocol": "tcp", "destination": ["localhost"], "destination_port": str(world.port),
         "uid_owner": "!root", "jump": "REJECT", "reject_with": "tcp-reset",
         "comment": "tunnel guard v%d" % variant},
    ]}


def _tunnel_guard_behaviour(world):
    _both_families(world, world.user, "refused")
    _both_families(world, "root", "connected")


def _group_egress(world, variant):
    rules = [{"gid_owner": world.group, "protocol": "tcp", "destination": ["localhost"],
              "destination_port": str(world.port), "jump": "REJECT", "reject_with": "tcp-reset"}]
    if variant % 2:
        rules.insert(0, {"protocol": "udp", "destination_port": "9", "jump": "DROP", "comment": "v%d" % variant})
    return {"name": "rly-noinet", "rules": rules}


def _group_egress_behaviour(world):
    _both_families(world, world.member, "refused", group=world.group)   # sg noinet -c CMD
    _both_families(world, world.member, "connected")                    # a normal session keeps the network


def _drop_policy(world, variant):
    return {"name": "rly-dropout", "policy": "drop", "rules": [
        {"protocol": "tcp", "destination": ["localhost"], "destination_port": str(world.port),
         "uid_owner": "root", "jump": "ACCEPT", "comment": "root tunnel %d" % variant},
        {"jump": "LOG", "log_prefix": "rly-drop v%d: " % variant, "limit": "5/min", "limit_burst": 3},
    ]}


def _drop_policy_behaviour(world):
    _both_families(world, world.user, ("timeout", "denied"))    # a SYN dropped in OUTPUT is retried, then times out
    _both_families(world, "root", "connected")


def _all_users_free(world):
    _both_families(world, world.user, "connected")
    _both_families(world, world.member, "connected", group=world.group)


def _mangle_members(world, variant):
    return {"name": "rly-mangle", "table": "mangle", "chain": "POSTROUTING", "position": "last", "rules": [
        {"gid_owner": "!%s" % world.group, "suppl_groups": True, "protocol": "udp",
         "destination": ["127.0.0.0/8", "::1"], "destination_port": "1000:2000", "jump": "RETURN"},
        {"uid_owner": "0-%d" % (999 + variant), "socket_exists": True, "ctstate": ["NEW", "RELATED"],
         "jump": "LOG", "log_prefix": "rly-m%d " % variant, "log_level": "info"},
    ]}


SCENARIOS = [
    Scenario("owner_rule-tunnel_guard", "owner_rule", _tunnel_guard, _tunnel_guard_behaviour, _all_users_free),
    Scenario("owner_rule-group_egress", "owner_rule", _group_egress, _group_egress_behaviour, _all_users_free),
    Scenario("owner_rule-drop_policy", "owner_rule", _drop_policy, _drop_policy_behaviour, _all_users_free),
    Scenario("owner_rule-mangle_members", "owner_rule", _mangle_members, None, None),
]


def scenario(scenario_id: str) -> Scenario:
    return next(s for s in SCENARIOS if s.id == scenario_id)


# --------------------------------------------------------------------------- hostile input placement

@dataclasses.dataclass(frozen=True)
class HostileField:
    """Where a value of one field type goes in a module's parameters, and the field its error names."""
    module: str
    field_type: str
    place: Callable[[object], dict]     # value -> module parameters (name included)
    field: str                          # what NetconfineError.field / the result's ``field`` must be

    def names_field(self, result: dict) -> bool:
        """The failure names the field: engine errors carry ``field``; argument-spec errors name the option."""
        got = result.get("field")
        if got is not None:
            return got == self.field or got.startswith(self.field + "[")
        leaf = self.field.rsplit(".", 1)[-1].split("[")[0]
        return leaf in str(result.get("msg", ""))


_V = object()   # marks where the hostile value goes


def _rule(**rule):
    def place(value):
        return {"name": "rly-hostile", "rules": [{k: (value if v is _V else v) for k, v in rule.items()}]}
    return place


HOSTILE_FIELDS = {
    "comment": HostileField("owner_rule", "comment", _rule(jump="ACCEPT", comment=_V), "rules[0].comment"),
    "log_prefix": HostileField("owner_rule", "log_prefix", _rule(jump="LOG", log_prefix=_V), "rules[0].log_prefix"),
    "user": HostileField("owner_rule", "user", _rule(jump="REJECT", uid_owner=_V), "rules[0].uid_owner"),
    "group": HostileField("owner_rule", "group", _rule(jump="REJECT", gid_owner=_V), "rules[0].gid_owner"),
    "interface": HostileField("owner_rule", "interface", _rule(jump="DROP", out_interface=_V),
                              "rules[0].out_interface"),
    "task_name": HostileField("owner_rule", "task_name", lambda value: {"name": value, "rules": [{"jump": "ACCEPT"}]},
                              "name"),
    "address": HostileField("owner_rule", "address", _rule(jump="DROP", destination=_V), "rules[0].destination"),
    "port": HostileField("owner_rule", "port", _rule(jump="DROP", protocol="tcp", destination_port=_V),
                         "rules[0].destination_port"),
    "icmp_type": HostileField("owner_rule", "icmp_type", _rule(jump="DROP", protocol="icmp", icmp_type=_V),
                              "rules[0].icmp_type"),
}


def hostile_params(field_type: str, value, backend: Backend | None = None) -> dict:
    """Module parameters carrying ``value`` in the field of ``field_type`` (address values become a list)."""
    hostile = HOSTILE_FIELDS[field_type]
    params = hostile.place([value] if field_type == "address" else value)
    if backend is not None:
        params["backend"] = backend.name
    return params
