"""owner_rule on iptables-nft: an nf_tables table only our run made goes again with our last chain (issue 16, part 4).

iptables-restore creates ``ip6 filter`` (or ``ip filter``, ``ip mangle``, ...) when it is not there; before,
``state: absent`` left it behind, empty. The backend records in the table that it made it (a chain
``NC-made-this-table``) and removes the table when the last netconfine task leaves and nothing else is
in it - never a table that existed before us, and never one that holds another tool's rule or chain
(only our record goes then). Real kernel, namespaces, ansible-playbook; the kernel is read with nft.
"""

from __future__ import annotations

import json

from nchelpers import nft_tables, run
from test_owner_rule import owner_rule

MARKER = "NC-made-this-table"


def task(name="made", state="present", table="filter", chain="OUTPUT", ip_version="both"):
    return {"name": name, "state": state, "table": table, "chain": chain, "ip_version": ip_version,
            "rules": [{"protocol": "udp", "destination_port": "5353", "jump": "DROP"}]}


def nft_chains(ns: str, family: str, table: str) -> list[str]:
    listed = json.loads(run("nft", "-j", "list", "table", family, table, ns=ns).stdout)["nftables"]
    return sorted(i["chain"]["name"] for i in listed if "chain" in i)


def test_absent_removes_the_tables_our_run_made(netns_host):
    ns = netns_host
    assert nft_tables(ns) == set()
    owner_rule(ns, task())
    assert nft_tables(ns) == {"ip filter", "ip6 filter"}
    assert MARKER in nft_chains(ns, "ip6", "filter")
    # check mode predicts the removal and changes nothing
    assert owner_rule(ns, task(state="absent"), check=True).changed
    assert nft_tables(ns) == {"ip filter", "ip6 filter"}
    assert owner_rule(ns, task(state="absent")).changed
    assert nft_tables(ns) == set()
    assert not owner_rule(ns, task(state="absent")).changed


def test_a_table_that_existed_before_us_stays(netns_host):
    ns = netns_host
    run("sh", "-c", "ip6tables -N BEFORE && ip6tables -X BEFORE", ns=ns)     # an empty ip6 filter, not ours
    owner_rule(ns, task())
    assert MARKER not in nft_chains(ns, "ip6", "filter")
    assert MARKER in nft_chains(ns, "ip", "filter")
    owner_rule(ns, task(state="absent"))
    assert nft_tables(ns) == {"ip6 filter"}
    assert MARKER not in nft_chains(ns, "ip6", "filter")


def test_a_table_another_tool_uses_stays_and_loses_only_our_record(netns_host):
    ns = netns_host
    owner_rule(ns, task())
    run("ip6tables", "-N", "DOCKER-USER", ns=ns)                  # another tool arrives after us
    run("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT", ns=ns)
    owner_rule(ns, task(state="absent"))
    assert nft_tables(ns) == {"ip filter", "ip6 filter"}
    assert nft_chains(ns, "ip6", "filter") == ["DOCKER-USER", "OUTPUT"]
    assert MARKER not in nft_chains(ns, "ip", "filter")
    assert "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT" in run("iptables-save", ns=ns).stdout


def test_the_last_of_two_tasks_removes_the_table(netns_host):
    ns = netns_host
    mangle = dict(table="mangle", chain="POSTROUTING", ip_version="ipv6")
    owner_rule(ns, task(name="first", **mangle))
    owner_rule(ns, task(name="second", **mangle))
    assert nft_tables(ns) == {"ip6 mangle"}
    owner_rule(ns, task(name="first", state="absent", **mangle))
    assert MARKER in nft_chains(ns, "ip6", "mangle")
    owner_rule(ns, task(name="second", state="absent", **mangle))
    assert nft_tables(ns) == set()
