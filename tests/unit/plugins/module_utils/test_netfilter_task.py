"""netfilter_task.choose_backends: the backend a run converges with, the other one on standby."""

from __future__ import annotations

import json

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils import engine, netfilter_task
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError
from test_iptables_backend import layers_of


class FakeModule:
    def __init__(self, backend, missing=()):
        self.params = {"backend": backend, "xtables_wait": 10}
        self.missing = missing

    def get_bin_path(self, name):
        return None if name in self.missing else "/usr/sbin/%s" % name


class Runner:
    """Answers ``nft -j list tables`` (nft usable) and records every command."""

    def __init__(self, nft_works=True):
        self.calls = []
        self.nft_works = nft_works

    def __call__(self, argv, data=None):
        self.calls.append(list(argv))
        if argv[1:] == ["-j", "list", "tables"]:
            return (0, json.dumps({"nftables": [{"metainfo": {}}]}), "") if self.nft_works else (1, "", "no nf_tables")
        raise AssertionError(argv)


def test_auto_converges_with_nftables_and_keeps_iptables_on_standby():
    run = Runner()
    chosen = netfilter_task.choose_backends(FakeModule("auto"), run)
    assert [b.name for b in chosen] == ["nftables", "iptables"]
    assert not isinstance(chosen[0], engine.Standby) and isinstance(chosen[1], engine.Standby)
    assert run.calls == [["/usr/sbin/nft", "-j", "list", "tables"]]


def test_a_pinned_backend_asks_nothing_of_the_other_one_before_the_lock():
    run = Runner()
    chosen = netfilter_task.choose_backends(FakeModule("iptables"), run)
    assert [b.name for b in chosen] == ["iptables", "nftables"] and isinstance(chosen[1], engine.Standby)
    assert run.calls == []
    # made on demand, it is the real backend, usable or not
    assert chosen[1].make().name == "nftables" and run.calls == [["/usr/sbin/nft", "-j", "list", "tables"]]


def test_auto_falls_back_to_iptables_where_nft_cannot_list():
    run = Runner(nft_works=False)
    chosen = netfilter_task.choose_backends(FakeModule("auto"), run)
    assert chosen[0].name == "iptables"
    assert chosen[1].make() is None, "nftables is not usable here: the standby makes nothing"


def test_a_pinned_backend_that_is_missing_is_refused_naming_the_field():
    with pytest.raises(NetconfineError) as err:
        netfilter_task.choose_backends(FakeModule("nftables", missing=("nft",)), Runner())
    assert err.value.field == "backend" and "nft is not installed" in str(err.value)


@pytest.mark.parametrize("held,expected", [((None, False), True), ((False, False), False), ((False, True), True)])
def test_iptables_is_held_unless_both_families_are_known_empty(held, expected):
    class Layers:
        def xtables_held(self, family):
            return held[0] if family == 4 else held[1]
    assert netfilter_task.HOLDS["iptables"](Layers()) is expected


@pytest.mark.parametrize("listing,expected", [
    ([{"table": {"family": "inet", "name": "netconfine"}},
      {"chain": {"family": "inet", "table": "netconfine", "name": "c"}}], True),
    ([{"table": {"family": "ip", "name": "netconfine"}}, {"table": {"family": "inet", "name": "other"}}], False),
    (None, False),                                      # nft cannot list: the backend would not be usable either
])
def test_nftables_is_held_only_where_our_table_is_listed(tmp_path, listing, expected):
    assert netfilter_task.HOLDS["nftables"](layers_of(tmp_path, listing)) is expected
