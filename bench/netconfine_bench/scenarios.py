"""What is measured: one scenario per module.

A scenario is four things, so that benchmarking another module is a few lines:

* ``module``: the FQCN of the module under test;
* ``params(n)``: the arguments of the *one* task that holds ``n`` rules (the
  benchmark adds ``backend``);
* ``floor(n, backend)``: the same ruleset as plain input for one
  ``iptables-restore --noflush`` (backend ``iptables``) or one ``nft -f``
  (backend ``nftables``), what the module could at best do;
* ``peer(n)``: the same ruleset as a list of ``ansible.builtin.iptables``
  arguments, one per rule (looped over in one task), or ``None``;
* ``kernel_tokens(n)``: words that must all appear in ``iptables-save`` /
  ``nft list ruleset`` once the N rules are in (so a run that did nothing is
  caught).

``data_key`` names the parameter that holds the rules: the benchmark also hands
it to a module that does nothing (``bench/library/ncb_carry.py``) to measure
what Ansible alone costs to carry the N rules through one task.

All rulesets are IPv4 only (``ansible.builtin.iptables`` handles one family per
task) and use numeric uids, which need not exist.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable, Optional

FIRST_PORT = 10000
FIRST_UID = 20000
DESTINATION = "127.0.0.1"
TASK_NAME = "bench"
# The chain owner_rule owns for a task called "bench" (NC- + name + 8 hex of SHA-256, see
# plugins/module_utils/fields.py chain_name): the floor loads exactly the module's ruleset.
OWNED_CHAIN = "NC-%s-%s" % (TASK_NAME, hashlib.sha256((TASK_NAME + "\0").encode()).hexdigest()[:8])


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    module: str
    params: Callable[[int], dict]
    floor: Callable[[int, str], str]
    peer: Optional[Callable[[int], list]] = None
    kernel_tokens: Callable[[int], set] = lambda n: set()
    backends: tuple = ("iptables", "nftables")
    data_key: str = "rules"


def owner_rule_items(n: int) -> list:
    """``n`` distinct owner rules: port FIRST_PORT+i, uid FIRST_UID+i, to 127.0.0.1, ACCEPT."""
    return [{"port": FIRST_PORT + i, "uid": FIRST_UID + i} for i in range(n)]


def owner_rule_params(n: int) -> dict:
    return {
        "name": TASK_NAME,
        "ip_version": "ipv4",
        "rules": [
            {"protocol": "tcp", "destination": [DESTINATION], "destination_port": str(r["port"]),
             "uid_owner": str(r["uid"]), "jump": "ACCEPT"}
            for r in owner_rule_items(n)
        ],
    }


def owner_rule_floor(n: int, backend: str) -> str:
    items = owner_rule_items(n)
    if backend == "iptables":
        lines = ["*filter", ":%s - [0:0]" % OWNED_CHAIN]
        lines += ["-A %s -d %s/32 -p tcp -m tcp --dport %d -m owner --uid-owner %d -j ACCEPT"
                  % (OWNED_CHAIN, DESTINATION, r["port"], r["uid"]) for r in items]
        lines += ["-I OUTPUT 1 -m comment --comment netconfine:%s -j %s" % (TASK_NAME, OWNED_CHAIN), "COMMIT"]
        return "\n".join(lines) + "\n"
    if backend == "nftables":
        # The backend's own form (nft_render): rules that differ only in port and uid share one rule
        # with an anonymous set of "port . uid" pairs - the cheapest equivalent nft can load.
        elements = ", ".join("%d . %d" % (r["port"], r["uid"]) for r in items)
        return ("table inet netconfine {\n"
                "\tchain %s {\n\t\tip daddr %s tcp dport . meta skuid { %s } accept\n\t}\n"
                "\tchain filter_output {\n\t\ttype filter hook output priority filter - 1; policy accept;\n"
                "\t\tjump %s comment \"netconfine:%s\"\n\t}\n"
                "}\n" % (OWNED_CHAIN, DESTINATION, elements, OWNED_CHAIN, TASK_NAME))
    raise ValueError("no floor for backend %r" % backend)


def owner_rule_peer(n: int) -> list:
    return [
        {"chain": "OUTPUT", "ip_version": "ipv4", "protocol": "tcp", "destination": DESTINATION,
         "destination_port": str(r["port"]), "uid_owner": str(r["uid"]), "jump": "ACCEPT"}
        for r in owner_rule_items(n)
    ]


SCENARIOS = {
    "owner_rule": Scenario(
        name="owner_rule",
        module="paranoid.netconfine.owner_rule",
        params=owner_rule_params,
        floor=owner_rule_floor,
        peer=owner_rule_peer,
        kernel_tokens=lambda n: set(str(r["uid"]) for r in owner_rule_items(n)),
    ),
}
