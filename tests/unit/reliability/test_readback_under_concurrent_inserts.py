"""The read-back after apply excuses only what another tool did after our commit (iptables backend).

Found by the reliability suite's coexistence test: a Docker/kube-proxy-style ``-I OUTPUT 1`` landing
between our commit and our read-back made a good run fail "did not converge" and roll back; issue 23:
a tool that deletes and re-inserts a rule with the same text (kube-proxy's re-sync) did it too, because
the excuse looked only at which rule texts were new.

The decision: what the task owns outright (its chains, the managed policy, each jump exactly once) is
strict; a jump's position alone is excused when the built-in chain changed under us, i.e. it does not
read back as predicted from the pre-apply read and the committed script - and, where nf_tables numbers
the rules, no foreign rule older than our jump sits on its wrong side.
"""

from __future__ import annotations

import json

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils.iptables_backend import (
    IptablesBackend, parse_save, predict_chain)

JUMP = '-A OUTPUT -m comment --comment "netconfine:t" -j NC-t-1'
OTHER_TASK = '-A OUTPUT -m comment --comment "netconfine:u" -j NC-u-2'
RULE = "-A NC-t-1 -j DROP"
OLD = "-A OUTPUT -p tcp -m tcp --dport 7 -j ACCEPT"
NEW = '-A OUTPUT -p udp -m udp --dport 53 -m comment --comment fw-top -j ACCEPT'
KUBE = "-A OUTPUT -j KUBE-X"


def save(*output_rules, chain_rules=(RULE,), policy="ACCEPT"):
    return parse_save("*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT %s [0:0]\n:NC-t-1 - [0:0]\n%s\nCOMMIT\n"
                      % (policy, "\n".join(list(output_rules) + list(chain_rules))))


class _Policy:
    name = "t"
    chain_names = frozenset(["NC-t-1"])
    chains = ()
    families = (4,)
    present = True


def nft_listing(*rules):
    """What ``nft -a -j list chain ip filter OUTPUT`` prints: rules as (handle, jump target or None)."""
    items = [{"metainfo": {"version": "1.0.6"}}, {"chain": {"family": "ip", "table": "filter", "name": "OUTPUT"}}]
    for handle, target in rules:
        expr = [{"counter": {"packets": 0, "bytes": 0}}, {"jump": {"target": target}} if target else {"accept": None}]
        items.append({"rule": {"family": "ip", "table": "filter", "chain": "OUTPUT", "handle": handle, "expr": expr}})
    return json.dumps({"nftables": items})


def backend(listing=None):
    calls = []

    def run(argv, data=None):
        calls.append(argv)
        return (0, listing, "") if listing is not None else (1, "", "Error: No such file or directory")
    b = IptablesBackend(run=run, bins={4: ("s", "r")}, nft="/usr/sbin/nft" if listing is not None else None)
    b.calls = calls
    return b


def desired(b, position="first"):
    return b._freeze({"filter": {"chains": [("NC-t-1", (RULE,))], "jumps": [("OUTPUT", JUMP, position)],
                                 "policies": []}})


def decide(read, now, position="first", listing=None, script=None):
    b = backend(listing)
    want = desired(b, position)
    current = b.owned(read, _Policy(), 4)
    if script is None:
        script = b.script(read, current, want)
    after = b.owned(now, _Policy(), 4)
    assert after != want
    return b.moved_by_others(4, read, now, after, want, script), b.calls


# (case, read, now, position, nft listing or None, excused)
CASES = [
    ("a rule inserted above after our commit", save(OLD), save(NEW, JUMP, OLD), "first", None, True),
    ("two rules inserted above", save(OLD), save(NEW, NEW, JUMP, OLD), "first", None, True),
    ("a rule appended below our last jump", save(OLD), save(OLD, JUMP, NEW), "last", None, True),
    ("a rule that was there, deleted and re-inserted on top (kube-proxy re-sync)",
     save(KUBE, OLD), save(KUBE, JUMP, OLD), "first", None, True),
    ("the same, and nf_tables says the rule is newer than our jump",
     save(KUBE, OLD), save(KUBE, JUMP, OLD), "first", nft_listing((9, None), (7, "NC-t-1"), (3, None)), True),
    ("the same text, and nf_tables says the rule above is older: our restore misplaced the jump",
     save(OLD), save(OLD, JUMP), "first", nft_listing((3, None), (7, "NC-t-1")), False),
    ("older rule below a last jump: misplaced by us", save(OLD), save(JUMP, OLD), "last",
     nft_listing((7, "NC-t-1"), (3, None)), False),
    ("another task's older jump above ours does not count", save(OLD), save(OTHER_TASK, KUBE, JUMP, OLD), "first",
     nft_listing((2, "NC-u-2"), (9, None), (7, "NC-t-1"), (3, None)), True),
    ("nf_tables listing unavailable: trust the atomic commit", save(OLD), save(OLD, JUMP), "first", "not json", True),
    ("our jump missing", save(OLD), save(NEW, OLD), "first", None, False),
    ("our jump doubled", save(OLD), save(NEW, JUMP, JUMP, OLD), "first", None, False),
    ("our chain's content differs", save(OLD), save(NEW, JUMP, OLD, chain_rules=("-A NC-t-1 -j ACCEPT",)), "first",
     None, False),
    ("our jump's tag dropped", save(OLD), save(NEW, JUMP.replace('-m comment --comment "netconfine:t" ', ""), OLD),
     "first", None, False),
]


@pytest.mark.parametrize("case,read,now,position,listing,excused", CASES, ids=[c[0] for c in CASES])
def test_only_a_chain_changed_under_us_excuses_a_misplaced_jump(case, read, now, position, listing, excused):
    got, _calls = decide(read, now, position, listing)
    assert got is excused, case


def test_a_chain_that_reads_back_as_predicted_is_never_excused():
    # nobody else wrote to OUTPUT (it reads back as read + script), yet the jump is below OLD: our own fault
    got, calls = decide(save(OLD, JUMP), save(OLD, JUMP), script="*filter\n:NC-t-1 - [0:0]\n-A NC-t-1 -j DROP\n"
                        "COMMIT\n", listing=nft_listing((9, None), (7, "NC-t-1")))
    assert got is False
    assert calls == []      # decided from text alone


def test_the_kernel_is_asked_only_when_text_cannot_tell():
    _got, calls = decide(save(OLD), save(NEW, JUMP, OLD, chain_rules=("-A NC-t-1 -j ACCEPT",)),
                         listing=nft_listing((9, None), (7, "NC-t-1")))
    assert calls == []
    _got, calls = decide(save(KUBE, OLD), save(KUBE, JUMP, OLD), listing=nft_listing((9, None), (7, "NC-t-1")))
    assert calls == [["/usr/sbin/nft", "-a", "-j", "list", "chain", "ip", "filter", "OUTPUT"]]


S = '-m comment --comment "netconfine:t" -j NC-t-1'

# (rules before, script, chain, predicted rules after)
PREDICTIONS = [
    ((OLD,), "*filter\n-I OUTPUT 1 %s\nCOMMIT\n" % S, "OUTPUT", (JUMP, OLD)),
    ((OLD, JUMP), "*filter\n-D OUTPUT %s\n-I OUTPUT 1 %s\nCOMMIT\n" % (S, S), "OUTPUT", (JUMP, OLD)),
    ((OLD,), "*filter\n-A OUTPUT %s\nCOMMIT\n" % S, "OUTPUT", (OLD, JUMP)),
    ((OLD, NEW), "*filter\n-I OUTPUT 2 %s\nCOMMIT\n" % S, "OUTPUT", (OLD, JUMP, NEW)),
    ((OLD, JUMP, JUMP), "*filter\n-D OUTPUT %s\n-D OUTPUT %s\nCOMMIT\n" % (S, S), "OUTPUT", (OLD,)),
    ((OLD,), "*mangle\n-I OUTPUT 1 %s\nCOMMIT\n" % S, "OUTPUT", (OLD,)),                # another table
    ((OLD,), "*filter\n-I INPUT 1 %s\n:NC-t-1 - [0:0]\n-A NC-t-1 -j DROP\n-P OUTPUT DROP\nCOMMIT\n" % S.replace(
        "OUTPUT", "INPUT"), "OUTPUT", (OLD,)),                                           # other chains, policy
    ((), "", "OUTPUT", ()),
]


@pytest.mark.parametrize("rules,script,chain,expected", PREDICTIONS)
def test_predict_chain(rules, script, chain, expected):
    assert predict_chain(rules, script, "filter", chain) == expected
