"""nft_backend.py through engine.converge() over a fake ``nft`` that keeps a ruleset in memory.

The fake answers ``nft -j list tables``, ``nft -j list table inet netconfine`` and
``nft -j -f -`` (add/flush/delete of tables, chains and rules) the way the kernel does for
the commands our batches use, committing each batch atomically or not at all: a chain can
only be deleted when it is empty and nothing jumps to it, a jump needs its target, a secmark
object can only be deleted when no rule names it, and adding an existing one keeps its old
context (the kernel has no update for it). It can
list set elements in another order than they were added, as nft does. The integration tier
(tests/integration/test_owner_rule_nftables.py) does the same against the real kernel.
"""

from __future__ import annotations

import copy
import json

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils import (
    engine, fields, iptables_backend, nft_backend, owner_model, shadowing)
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError, NotConverged
from ansible_collections.paranoid.netconfine.plugins.module_utils.nft_backend import NftablesBackend

NFT = "/usr/sbin/nft"


def chain_of(name):
    return fields.chain_name(name)


def jump(name):
    return 'jump %s comment "netconfine:%s"' % (chain_of(name), name)


class FakeNft:
    def __init__(self):
        self.tables = {}          # "family name" -> {"chains": {name: {"def", "policy", "rules": [(handle, rule)]}}}
        self.handle = 0
        self.calls = []
        self.fail_next = None     # stderr of the next batch, which then fails as a whole
        self.reverse_sets = False  # list set elements in reverse order, as a kernel may
        self.listed = 0           # counters list as the kernel's do: values that grow between reads

    def __call__(self, argv, data=None):
        self.calls.append((list(argv), data))
        assert argv[0] == NFT
        args = argv[1:]
        if args == ["-j", "list", "tables"]:
            return 0, json.dumps({"nftables": [{"metainfo": {}}] + [
                {"table": {"family": t.split()[0], "name": t.split()[1]}} for t in self.tables]}), ""
        if args[:3] == ["-j", "list", "table"]:
            key = " ".join(args[3:5])
            if key not in self.tables:
                return 1, "", "Error: No such file or directory\nlist table %s\n" % key
            return 0, self.listing(key), ""
        if args == ["-j", "-f", "-"]:
            return self.batch(json.loads(data))
        if args == ["-j", "list", "ruleset"]:
            items = [{"metainfo": {"version": "1.0.6"}}]
            for key in self.tables:
                items += json.loads(self.listing(key))["nftables"][1:]
            return 0, json.dumps({"nftables": items}), ""
        raise AssertionError(argv)

    # ------------------------------------------------------------ listing

    def listing(self, key):
        family, name = key.split()
        items = [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": family, "name": name, "handle": 1}}]
        table = self.tables[key]
        self.listed += 1
        for obj_name, context in table.get("secmarks", {}).items():
            items.append({"secmark": {"family": family, "name": obj_name, "table": name, "handle": 9,
                                      "context": context}})
        for chain_name, chain in table["chains"].items():
            item = {"family": family, "table": name, "name": chain_name, "handle": 1}
            if chain["def"]:
                item.update(type=chain["def"][0], hook=chain["def"][1], prio=chain["def"][2], policy=chain["policy"])
            items.append({"chain": item})
        for chain_name, chain in table["chains"].items():
            for handle, rule in chain["rules"]:
                shown = copy.deepcopy(rule)
                if self.reverse_sets:
                    _reverse_sets(shown)
                shown["expr"] = [{"counter": {"packets": self.listed, "bytes": 60 * self.listed}}
                                 if e == {"counter": None} else e for e in shown["expr"]]
                shown.update(family=family, table=name, chain=chain_name, handle=handle)
                items.append({"rule": shown})
        return json.dumps({"nftables": items})

    # ------------------------------------------------------------ applying

    def batch(self, doc):
        if self.fail_next is not None:
            err, self.fail_next = self.fail_next, None
            return 1, "", err
        work = copy.deepcopy(self.tables)
        for number, cmd in enumerate(doc["nftables"], 1):
            try:
                self.command(work, cmd)
            except KeyError as exc:
                return 1, "", "Error: command %d: %s" % (number, exc)
        self.tables = work
        return 0, "", ""

    def command(self, work, cmd):
        (verb, obj), = cmd.items()
        (kind, spec), = obj.items()
        if kind == "table":
            key = "%s %s" % (spec["family"], spec["name"])
            if verb == "add":
                work.setdefault(key, {"chains": {}})
            elif verb == "delete":
                del work[key]
            return
        table = work["%s %s" % (spec["family"], spec["table"])]
        if kind == "secmark":
            objects = table.setdefault("secmarks", {})
            if verb == "add":
                objects.setdefault(spec["name"], spec["context"])
            elif verb == "delete":
                if any(spec["name"] in _secmarks(r) for c in table["chains"].values() for _h, r in c["rules"]):
                    raise KeyError("secmark %s is in use" % spec["name"])
                del objects[spec["name"]]
            return
        if kind == "chain":
            name = spec["name"]
            if verb == "add":
                definition = (spec["type"], spec["hook"], spec["prio"]) if "hook" in spec else None
                chain = table["chains"].setdefault(name, {"def": definition, "policy": None, "rules": []})
                if chain["def"] != definition:
                    raise KeyError("chain %s exists with another hook/priority" % name)
                if definition:
                    chain["policy"] = spec.get("policy", chain["policy"] or "accept")
            elif verb == "flush":
                table["chains"][name]["rules"] = []
            elif verb == "delete":
                if table["chains"][name]["rules"]:
                    raise KeyError("chain %s is not empty" % name)
                for other in table["chains"].values():
                    for _h, rule in other["rules"]:
                        if name in _targets(rule):
                            raise KeyError("chain %s is in use" % name)
                del table["chains"][name]
            return
        assert kind == "rule" and verb == "add", cmd
        rule = dict((k, v) for k, v in spec.items() if k not in ("family", "table", "chain"))
        for target in _targets(rule):
            if target not in table["chains"]:
                raise KeyError("jump to missing chain %s" % target)
        for obj in _secmarks(rule):
            if obj not in table.get("secmarks", {}):
                raise KeyError("no secmark object %s" % obj)
        self.handle += 1
        table["chains"][spec["chain"]]["rules"].append((self.handle, rule))

    # ------------------------------------------------------------ hand edits (drift)

    def chain(self, name, key="inet netconfine"):
        return self.tables[key]["chains"][name]

    def foreign_table(self):
        """A table of somebody else's, which we must never touch."""
        out = {"def": ("filter", "output", 0), "policy": "accept", "rules": [(999, {"expr": [{"drop": None}]})]}
        self.tables["ip docker"] = {"chains": {"out": out}}


def _targets(rule):
    return [e[k]["target"] for e in rule["expr"] for k in ("jump", "goto") if isinstance(e, dict) and k in e]


def _secmarks(rule):
    return [e["secmark"] for e in rule["expr"] if isinstance(e, dict) and isinstance(e.get("secmark"), str)]


def _reverse_sets(value):
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "set" and isinstance(inner, list):
                inner.reverse()
            _reverse_sets(inner)
    elif isinstance(value, list):
        for inner in value:
            _reverse_sets(inner)


@pytest.fixture
def nft(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "LOCK_DIR", str(tmp_path / "lock"))
    return FakeNft()


def policy(name="stunnel-992", rules=None, **params):
    params = dict(name=name, rules=rules if rules is not None else [
        {"protocol": "tcp", "destination": ["localhost"], "destination_port": "992", "uid_owner": "!root",
         "jump": "REJECT"}], **params)
    return owner_model.build_policy(params)


def converge(nft, pol, check=False):
    return engine.converge(pol, [NftablesBackend(nft, NFT)], check_mode=check, lock_timeout=5)


def batches(nft):
    return [c for c in nft.calls if c[0][1:] == ["-j", "-f", "-"]]


def text(nft):
    """Our table as ``Owned``-independent lines: chain -> [nft lines]."""
    from ansible_collections.paranoid.netconfine.plugins.module_utils.nft_render import format_rule
    table = nft.tables.get("inet netconfine")
    if table is None:
        return None
    return dict((name, ([chain["def"], chain["policy"]] if chain["def"] else [])
                 + [format_rule(r) for _h, r in chain["rules"]]) for name, chain in table["chains"].items())


# ---------------------------------------------------------------- idempotence

def test_check_apply_check_apply(nft):
    pol = policy()
    first = converge(nft, pol, check=True)
    assert first["changed"] and first["backend"] == "nftables" and nft.tables == {}
    assert list(first["rendered"]) == ["nftables ruleset"] and list(first["scripts"]) == ["nftables ruleset"]
    second = converge(nft, pol)
    assert second["changed"] and second["scripts"] == first["scripts"]
    assert len(batches(nft)) == 1
    third = converge(nft, pol, check=True)
    fourth = converge(nft, pol)
    assert not third["changed"] and not fourth["changed"] and len(batches(nft)) == 1
    chains = text(nft)
    assert chains["filter_output"] == [("filter", "output", -1), "accept",
                                       'jump NC-stunnel-992-4539feff comment "netconfine:stunnel-992"']
    assert chains["NC-stunnel-992-4539feff"] == ["ip daddr 127.0.0.1 tcp dport 992 jump NC-stunnel-992-4539feff.1",
                                                 "ip6 daddr ::1 tcp dport 992 jump NC-stunnel-992-4539feff.2"]
    assert chains["NC-stunnel-992-4539feff.1"] == ["meta skuid 0 return", "meta nfproto ipv4 counter reject with icmp port-unreachable"]


def test_counter_values_are_not_drift(nft):
    # a rule that rejects, drops or logs carries a counter; packets counted between runs change nothing
    pol = policy(rules=[{"uid_owner": "nobody", "jump": "LOG"}, {"uid_owner": "nobody", "jump": "DROP"},
                        {"uid_owner": "daemon", "jump": "REJECT"}])
    assert converge(nft, pol)["changed"]
    listed = json.loads(nft.listing("inet netconfine"))["nftables"]
    counted = [e["counter"] for i in listed if "rule" in i for e in i["rule"]["expr"] if "counter" in e]
    assert len(counted) == 3 and all(c["packets"] > 0 for c in counted)
    again = converge(nft, pol)
    assert not again["changed"] and len(batches(nft)) == 1
    assert converge(nft, pol, check=True)["changed"] is False


def test_one_batch_holds_both_families_and_every_chain(nft):
    result = converge(nft, policy(policy="drop"))
    script = json.loads(result["scripts"]["nftables ruleset"])["nftables"]
    rules = [c["add"]["rule"] for c in script if "rule" in c.get("add", {})]
    assert any('"protocol": "ip"' in json.dumps(r) for r in rules)
    assert any('"protocol": "ip6"' in json.dumps(r) for r in rules)
    assert len(batches(nft)) == 1


def test_set_elements_listed_in_another_order_still_compare_equal(nft):
    nft.reverse_sets = True
    members = [{"protocol": "udp", "destination_port": str(53 + i), "uid_owner": str(100 + i), "jump": "ACCEPT"}
               for i in range(5)]
    pol = policy("sets", members)
    assert converge(nft, pol)["changed"]
    assert not converge(nft, pol)["changed"]


# ---------------------------------------------------------------- several tasks, one table

def test_tasks_share_base_chains_in_deterministic_order(nft):
    for name in ("zeta", "alpha", "mid"):
        converge(nft, policy(name))
    jumps = text(nft)["filter_output"][2:]
    assert [j.split('"')[1] for j in jumps] == ["netconfine:alpha", "netconfine:mid", "netconfine:zeta"]
    for name in ("zeta", "alpha", "mid"):
        assert not converge(nft, policy(name))["changed"]


def test_absent_keeps_other_tasks_and_the_last_one_removes_the_table(nft):
    nft.foreign_table()
    foreign = copy.deepcopy(nft.tables["ip docker"])
    converge(nft, policy("one"))
    converge(nft, policy("two"))
    assert converge(nft, policy("one", state="absent"))["changed"]
    chains = text(nft)
    assert not [c for c in chains if c.startswith("NC-one-")]
    assert chains["filter_output"][2:] == [jump("two")]
    assert not converge(nft, policy("one", state="absent"))["changed"]
    assert converge(nft, policy("two", state="absent"))["changed"]
    assert "inet netconfine" not in nft.tables
    assert nft.tables["ip docker"] == foreign
    calls = len(nft.calls)
    assert not converge(nft, policy("two", state="absent"))["changed"]
    assert len(batches(nft)) == 4 and len(nft.calls) == calls + 1   # one read, nothing applied


def test_position_last_uses_a_base_chain_after_the_iptables_priority(nft):
    converge(nft, policy("late", position="last"))
    assert text(nft)["filter_output_last"][:2] == [("filter", "output", 1), "accept"]


def test_moving_a_task_between_positions_moves_its_jump(nft):
    converge(nft, policy("t"))
    converge(nft, policy("t", position="last"))
    chains = text(nft)
    assert "filter_output" not in chains and len(chains["filter_output_last"]) == 3


# ---------------------------------------------------------------- managed policy

def test_policy_drop_both_families_is_the_base_chain_policy(nft):
    converge(nft, policy("p", policy="drop"))
    chains = text(nft)
    assert chains["filter_output"][1] == "drop"
    assert chains[chain_of("p")][:2] == ['counter comment "netconfine:policy"', "ct state established,related accept"]
    assert not converge(nft, policy("p", policy="drop"))["changed"]
    assert converge(nft, policy("p", policy="drop", state="absent"))["changed"]
    assert "inet netconfine" not in nft.tables


@pytest.mark.parametrize("release", [dict(state="absent"), dict()], ids=["absent", "policy-no-longer-declared"])
def test_a_policy_the_task_set_is_released_even_when_no_longer_declared(nft, release):
    """The module's own removal example says only name and state: absent."""
    converge(nft, policy("q"))
    converge(nft, policy("p", policy="drop"))
    assert text(nft)["filter_output"][1] == "drop"
    result = converge(nft, policy("p", **release))
    assert result["changed"]
    assert text(nft)["filter_output"][1] == "accept"
    assert not converge(nft, policy("p", **release))["changed"]
    assert not converge(nft, policy("q"))["changed"]


def test_policy_drop_of_one_family_is_a_tagged_rule_after_every_jump(nft):
    converge(nft, policy("zz", ip_version="ipv4", policy="drop"))
    converge(nft, policy("aa"))
    base = text(nft)["filter_output"]
    assert base[1] == "accept"
    assert base[2:] == [jump("aa"), jump("zz"), 'meta nfproto ipv4 drop comment "netconfine:zz"']
    assert not converge(nft, policy("zz", ip_version="ipv4", policy="drop"))["changed"]


def test_other_tasks_keep_a_drop_policy_they_do_not_manage(nft):
    converge(nft, policy("p", policy="drop"))
    converge(nft, policy("q"))
    assert text(nft)["filter_output"][1] == "drop"
    converge(nft, policy("q", state="absent"))
    assert text(nft)["filter_output"][1] == "drop"


# ---------------------------------------------------------------- drift

def _drift_rule_deleted(nft):
    nft.chain("NC-stunnel-992-4539feff")["rules"].pop()


def _drift_foreign_rule_in_base_chain(nft):
    nft.chain("filter_output")["rules"].append((500, {"expr": [{"accept": None}]}))


def _drift_jump_duplicated(nft):
    rules = nft.chain("filter_output")["rules"]
    rules.append((501, copy.deepcopy(rules[0][1])))


def _drift_policy(nft):
    nft.chain("filter_output")["policy"] = "drop"


def _drift_helper_flushed(nft):
    nft.chain("NC-stunnel-992-4539feff.1")["rules"] = []


def _drift_table_deleted(nft):
    del nft.tables["inet netconfine"]


def _drift_priority(nft):
    nft.chain("filter_output")["def"] = ("filter", "output", 0)


def _drift_out_of_order(nft):
    nft.chain("filter_output")["rules"].reverse()


@pytest.mark.parametrize("drift", [_drift_rule_deleted, _drift_foreign_rule_in_base_chain, _drift_jump_duplicated,
                                   _drift_helper_flushed, _drift_table_deleted, _drift_priority,
                                   _drift_out_of_order],
                         ids=lambda f: f.__name__[7:])
def test_drift_is_reported_and_repaired(nft, drift):
    converge(nft, policy("other"))
    converge(nft, policy())
    before = text(nft)
    drift(nft)
    assert converge(nft, policy(), check=True)["changed"]
    assert converge(nft, policy())["changed"]
    if drift is _drift_table_deleted:
        converge(nft, policy("other"))     # every task repairs what it owns
    assert text(nft) == before
    assert not converge(nft, policy())["changed"]


def test_unmanaged_policy_drift_is_not_ours_to_repair(nft):
    converge(nft, policy())
    _drift_policy(nft)
    assert not converge(nft, policy())["changed"]


def test_membership_is_part_of_the_state(nft, monkeypatch):
    members = {"value": (1000,)}
    monkeypatch.setattr(owner_model.identity, "group_members", lambda gid: members["value"])
    rules = [{"gid_owner": "0", "suppl_groups": True, "jump": "ACCEPT"}]
    converge(nft, policy("g", rules))
    assert not converge(nft, policy("g", rules))["changed"]
    members["value"] = (1000, 1001)
    result = converge(nft, policy("g", rules), check=True)
    assert result["changed"] and "meta skgid != 0 meta skuid 1000-1001 accept" in result["diff"]["after"]


# ---------------------------------------------------------------- failures

def test_a_rejected_batch_changes_nothing_and_says_so(nft):
    converge(nft, policy("keep"))
    before = copy.deepcopy(nft.tables)
    nft.fail_next = "internal:0:0-0: Error: Could not process rule: Too many links\n"
    with pytest.raises(NetconfineError) as err:
        converge(nft, policy(policy="drop"))
    assert "nothing was applied" in str(err.value) and "Too many links" in str(err.value)
    assert err.value.details["rolled_back"] == ["nftables ruleset"]
    assert nft.tables == before


def test_a_kernel_that_lists_something_else_did_not_converge(nft, monkeypatch):
    listing = nft.listing
    monkeypatch.setattr(nft, "listing", lambda key: listing(key).replace('"right": 992', '"right": 993'))
    with pytest.raises(NotConverged):
        converge(nft, policy())


def test_a_chain_owned_by_another_task_is_refused(nft):
    converge(nft, policy("mine"))
    rule = nft.chain("filter_output")["rules"][0][1]
    rule["comment"] = "netconfine:someone-else"
    with pytest.raises(NetconfineError) as err:
        converge(nft, policy("mine"))
    assert err.value.field == "name" and "someone-else" in str(err.value)


def test_read_failure_is_reported(nft):
    backend = NftablesBackend(lambda argv, data=None: (1, "", "Error: Operation not permitted"), NFT)
    with pytest.raises(NetconfineError) as err:
        backend.read("ruleset")
    assert "Operation not permitted" in str(err.value)


@pytest.mark.parametrize(("nft_path", "answer", "usable"), [
    (None, None, False),
    (NFT, (1, "", "Error: Operation not permitted"), False),
    (NFT, (0, "not json", ""), False),
    (NFT, (0, '{"nftables": [{"metainfo": {}}]}', ""), True),
])
def test_usable_only_where_nft_answers_in_json(nft_path, answer, usable):
    backend = NftablesBackend(lambda argv, data=None: answer, nft_path)
    assert backend.usable() is usable
    assert (backend.unusable_reason is None) is usable
    if answer and answer[0]:
        assert "nft -j list tables failed (rc=1): Error: Operation not permitted" in backend.unusable_reason


def test_script_is_empty_when_nothing_differs(nft):
    backend = NftablesBackend(nft, NFT)
    pol = policy()
    desired = backend.render(pol, "ruleset")
    assert backend.script({}, desired, desired) == ""
    assert backend.script({}, {}, {}) == ""


def test_parse_list_of_real_nft_output():
    listed = json.dumps({"nftables": [
        {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
        {"table": {"family": "inet", "name": "netconfine", "handle": 4}},
        {"chain": {"family": "inet", "table": "netconfine", "name": "NC-a-12345678", "handle": 2}},
        {"chain": {"family": "inet", "table": "netconfine", "name": "filter_output", "handle": 1, "type": "filter",
                   "hook": "output", "prio": -1, "policy": "drop"}},
        {"rule": {"family": "inet", "table": "netconfine", "chain": "filter_output", "handle": 4,
                  "comment": "netconfine:a", "expr": [{"jump": {"target": "NC-a-12345678"}}]}},
        {"rule": {"family": "inet", "table": "netconfine", "chain": "NC-a-12345678", "handle": 3,
                  "expr": [{"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": 0}},
                           {"accept": None}]}}]})
    table = nft_backend.parse_list(listed)["inet netconfine"]
    assert table.chain("filter_output").definition == ("filter", "output", -1)
    assert table.chain("filter_output").policy == "drop"
    assert table.chain("NC-a-12345678").definition is None
    assert json.loads(table.chain("NC-a-12345678").rules[0]) == {
        "expr": [{"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": 0}}, {"accept": None}]}


# ---------------------------------------------------------------- nft syntax for what nft's JSON parser lacks

def test_a_cgroup_rule_goes_as_nft_syntax_in_one_batch(nft):
    backend = NftablesBackend(nft, NFT)
    pol = policy("cg", [{"cgroup": "/system.slice/stunnel4.service", "protocol": "tcp", "jump": "ACCEPT"}])
    script = backend.script({}, {}, backend.render(pol, "ruleset"))
    assert script.splitlines() == [
        "add table inet netconfine",
        "add chain inet netconfine %s" % chain_of("cg"),
        "add rule inet netconfine %s meta l4proto tcp socket cgroupv2 level 2 "
        '"system.slice/stunnel4.service" accept' % chain_of("cg"),
        "add chain inet netconfine filter_output { type filter hook output priority -1 ; policy accept ; }",
        'add rule inet netconfine filter_output jump %s comment "netconfine:cg"' % chain_of("cg"),
    ]


def test_a_cgroup_rule_compares_without_the_level_nft_json_omits():
    listed = {"expr": [{"match": {"op": "==", "left": {"socket": {"key": "cgroupv2"}}, "right": "a/b"}},
                       {"accept": None}]}
    ours = {"expr": [{"match": {"op": "==", "left": {"socket": {"key": "cgroupv2", "level": 2}}, "right": "a/b"}},
                     {"accept": None}]}
    from ansible_collections.paranoid.netconfine.plugins.module_utils.nft_render import canonical, normalise
    assert canonical(normalise(listed)) == canonical(normalise(ours))


@pytest.mark.parametrize("text", ['x" ; flush ruleset', "x\nflush ruleset", "x}", "x#", "x;", "x'", "x$y", "x\\"])
def test_nft_syntax_is_never_written_with_text_that_could_break_out(text):
    cmds = [{"add": {"rule": {"family": "inet", "table": "netconfine", "chain": "c", "comment": text,
                              "expr": [{"accept": None}]}}}]
    with pytest.raises(NetconfineError) as err:
        nft_backend.batch_text(cmds)
    assert err.value.field == "backend"


def test_nft_sees_cgroup2_where_it_looks_for_it(tmp_path):
    """Where /sys/fs/cgroup is not the cgroup v2 hierarchy, nft runs with cgroup2 mounted there, privately."""
    calls = []

    def run(argv, data=None):
        calls.append(argv)
        return 0, "", ""

    backend = NftablesBackend(run, NFT, unshare="/usr/bin/unshare", cgroup_root=str(tmp_path))
    backend.apply("ruleset", 'add rule inet netconfine c socket cgroupv2 level 1 "x" accept\n')
    backend.apply("ruleset", '{"nftables": []}')
    assert calls[0][:4] == ["/usr/bin/unshare", "--mount", "--propagation", "private"]
    assert calls[0][-3:] == [NFT, "-f", "-"] and "mount -t cgroup2" in calls[0][6]
    assert calls[1] == [NFT, "-j", "-f", "-"]
    (tmp_path / "cgroup.controllers").write_text("")
    backend.apply("ruleset", 'add rule inet netconfine c socket cgroupv2 level 1 "x" accept\n')
    assert calls[2] == [NFT, "-f", "-"]


# ---------------------------------------------------------------- the read shared with the shadowing check

def _layers(nft):
    return shadowing.Layers(nft, iptables_backend.parse_save, nft=NFT, legacy_save={},
                            proc={4: "/nonexistent", 6: "/nonexistent"})


def _accepting(name="open"):
    return policy(name, rules=[{"protocol": "tcp", "destination_port": str(1000 + i), "uid_owner": str(i),
                                "jump": "ACCEPT"} for i in range(3)] + [{"jump": "DROP"}])


def _listed_tables(nft):
    return [c[0][1:] for c in nft.calls if c[0][1:4] == ["-j", "list", "table"]]


def test_the_pre_apply_read_comes_from_the_shadowing_read_and_compares_the_same(nft):
    nft.foreign_table()
    backend = NftablesBackend(nft, NFT)
    first = engine.converge(_accepting(), [backend], lock_timeout=5, layers=_layers(nft))
    assert first["changed"]
    # the read-back after the apply is the backend's own, fresh read; the read before it was shared
    assert _listed_tables(nft) == [["-j", "list", "table", "inet", "netconfine"]]
    nft.calls.clear()
    again = engine.converge(_accepting(), [NftablesBackend(nft, NFT)], lock_timeout=5, layers=_layers(nft))
    assert not again["changed"], again
    assert _listed_tables(nft) == [] and [c[0][1:] for c in nft.calls] == [["-j", "list", "ruleset"]]


def test_drift_is_seen_through_the_shared_read(nft):
    engine.converge(_accepting(), [NftablesBackend(nft, NFT)], lock_timeout=5, layers=_layers(nft))
    chain = nft.chain(fields.chain_name("open"))
    chain["rules"].pop()                    # somebody deletes the task's last rule by hand
    repaired = engine.converge(_accepting(), [NftablesBackend(nft, NFT)], lock_timeout=5, layers=_layers(nft))
    assert repaired["changed"] and "drop" in repaired["diff"]["after"]
    assert not engine.converge(_accepting(), [NftablesBackend(nft, NFT)], lock_timeout=5,
                               layers=_layers(nft))["changed"]


def test_no_shared_read_without_a_ruleset_read_before_it(nft):
    """A policy that only drops needs no shadowing check: the backend reads its own table (one command)."""
    layers = _layers(nft)
    engine.converge(policy("closed", rules=[{"jump": "DROP"}]), [NftablesBackend(nft, NFT)], lock_timeout=5,
                    layers=layers)
    assert layers.nft_ruleset(read=False) is None
    assert ["-j", "list", "ruleset"] not in [c[0][1:] for c in nft.calls]


def test_cgroup_rules_with_a_hidden_cgroup_tree_are_read_by_the_backend_itself(nft, tmp_path):
    backend = NftablesBackend(nft, NFT, unshare="/usr/bin/unshare", cgroup_root=str(tmp_path))
    layers = _layers(nft)
    nft.tables["inet netconfine"] = {"chains": {"c": {"def": None, "policy": None, "rules": [(1, {"expr": [
        {"match": {"op": "==", "left": {"socket": {"key": "cgroupv2", "level": 1}}, "right": 4242}},
        {"accept": None}]})]}}}
    layers.nft_ruleset()
    assert backend.read_shared("ruleset", layers, _accepting()) is None     # /sys/fs/cgroup not mounted here
    nft.tables["inet netconfine"]["chains"]["c"]["rules"] = [(1, {"expr": [{"accept": None}]})]
    layers = _layers(nft)
    layers.nft_ruleset()
    assert backend.read_shared("ruleset", layers, _accepting()) == backend.read("ruleset")
