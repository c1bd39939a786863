"""Hostile input: every hand-written case and >= 10,000 generated strings are refused before anything
changes, with an error naming the field; what the model does accept renders to safe restore/nft text.

Three tiers:

* every hand-written case (>= 60 per field type) through the module's real ``main()`` inside a
  namespace that already holds other tools' rules and a converged policy: refused, field named, the
  kernel's ruleset byte-identical afterwards (0 rules injected);
* a sample of them through ``ansible-playbook`` (one playbook, a looped task per field type);
* hypothesis-generated values straight through the model builder (no kernel, fast): either a field
  error, or rendered text with no line break, control character, quote or shell/nft syntax in it.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import shlex
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nchelpers
from ansible_collections.paranoid.netconfine.plugins.module_utils import fields, netfilter_task, owner_model
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError
from ansible_collections.paranoid.netconfine.plugins.modules import owner_rule
from reliability import hostile_cases, kernel, scenarios, tally

FIELD_TYPES = hostile_cases.FIELD_TYPES
GENERATED_PER_FIELD = 1200          # x 9 field types = 10,800 generated values
GENERATED_BATCH = 10                # values per hypothesis example
PLAYBOOK_SAMPLE_PER_FIELD = 5       # hand-written cases per field type that also go through ansible-playbook


def _rule_counts(state: dict[str, str]) -> dict[str, int]:
    counts = {key: sum(1 for line in text.splitlines() if line.startswith("-A ")) for key, text in state.items()
              if key != "nft"}
    counts["nft"] = sum(1 for line in state["nft"].splitlines()
                        if line.startswith("\t\t") and not line.strip().startswith(("type ", "policy ")))
    return counts


def test_every_field_type_has_at_least_60_hand_written_cases():
    for field_type in FIELD_TYPES:
        assert len(hostile_cases.cases(field_type)) >= 60, field_type
        assert field_type in scenarios.HOSTILE_FIELDS


@pytest.mark.parametrize("field_type", FIELD_TYPES)
def test_hand_written_hostile_values_are_refused_and_change_nothing(field_type, backend, make_world):
    world = make_world(backend, light=True)
    guard = scenarios.scenario("owner_rule-tunnel_guard")
    applied = kernel.run_module(world.ns, guard.module, guard.args(world))
    assert not applied.get("failed"), applied
    before = kernel.snapshot(world.ns)

    cases = hostile_cases.cases(field_type)
    hostile = scenarios.HOSTILE_FIELDS[field_type]
    results = kernel.run_modules(world.ns, [
        {"module": hostile.module, "args": scenarios.hostile_params(field_type, value, backend)} for value in cases])

    after = kernel.snapshot(world.ns)
    tally.add("cases_tried", len(cases))
    problems = []
    for value, result in zip(cases, results):
        if not result.get("failed"):
            problems.append("accepted %r: changed=%s" % (value, result.get("changed")))
        elif not hostile.names_field(result):
            problems.append("refused %r without naming %s: field=%r msg=%r"
                            % (value, hostile.field, result.get("field"), result.get("msg")))
        elif result.get("field") == "backend":
            problems.append("%r reached the backend: %s" % (value, result.get("msg")))
        else:
            tally.add("cases_rejected")
    assert not problems, "\n".join(problems)
    assert after == before, kernel.diff_text(before, after)
    assert _rule_counts(after) == _rule_counts(before)      # 0 rules injected


def _loop_item(value) -> dict:
    """A loop item carrying any value past YAML and templating untouched: strings travel base64-encoded
    and are decoded by the task (a filter's result is never templated again); ints stay ints."""
    if isinstance(value, int):
        return {"b64": None, "int": value}
    return {"b64": base64.b64encode(value.encode("utf-8", "surrogatepass")).decode(), "int": None}


_ITEM = "{{ item.b64 | b64decode if item.b64 is not none else item.int }}"


def playbook_sample(field_type: str, size: int = None) -> list:
    """Hand-written cases that also go through ansible-playbook: by default one of each kind (a trap of the
    field's own grammar, a restore-syntax injection, a NUL, a shell substitution, a CR, a look-alike);
    NCT_RELIABILITY_PLAYBOOK_SAMPLE=all sends every case (slow: about 0.4 s per case)."""
    cases = hostile_cases.cases(field_type)
    if os.environ.get("NCT_RELIABILITY_PLAYBOOK_SAMPLE") == "all":
        return cases
    base = hostile_cases.VALID_BASE[field_type]
    own = [c for c in hostile_cases.SPECIFIC[field_type] if c not in hostile_cases.INJECTIONS]
    picked = [own[0], own[len(own) // 2], "x\n-A OUTPUT -j ACCEPT", base + "\x00", base + "$(id)", "\r" + base,
              base + "\u2028"]
    assert all(p in cases for p in picked), field_type
    return picked[:size or PLAYBOOK_SAMPLE_PER_FIELD]


def test_hostile_values_are_refused_through_ansible_playbook(backend, make_world, tmp_path):
    world = make_world(backend, light=True)
    guard = scenarios.scenario("owner_rule-tunnel_guard")
    assert not kernel.run_module(world.ns, guard.module, guard.args(world)).get("failed")
    before = kernel.snapshot(world.ns)

    # the model refuses these before any backend code runs: the first backend gets the full sample
    size = PLAYBOOK_SAMPLE_PER_FIELD if backend == scenarios.backends()[0] else 2
    samples = {field_type: playbook_sample(field_type, size) for field_type in FIELD_TYPES}
    cases = {"cases_%s" % field_type: [_loop_item(v) for v in values] for field_type, values in samples.items()}
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    tasks = []
    for field_type in FIELD_TYPES:
        params = scenarios.hostile_params(field_type, "@@VALUE@@", backend)
        tasks.append({"name": "hostile %s" % field_type, "paranoid.netconfine.owner_rule": params,
                      "loop": "{{ cases_%s }}" % field_type, "ignore_errors": True})
    text = json.dumps([{"hosts": "all", "gather_facts": False, "vars_files": [str(tmp_path / "cases.json")],
                        "tasks": tasks}], indent=1)
    text = text.replace('"@@VALUE@@"', json.dumps(_ITEM))     # address fields take a list: ["{{ ... }}"]
    (tmp_path / "play.yml").write_text(text)
    play = nchelpers.ansible_playbook(tmp_path / "play.yml", [world.ns])

    after = kernel.snapshot(world.ns)
    problems = []
    for field_type, values in samples.items():
        hostile = scenarios.HOSTILE_FIELDS[field_type]
        items = play.task(world.ns, "hostile %s" % field_type).result.get("results", [])
        assert len(items) == len(values), play.output
        for value, item in zip(values, items):
            tally.add("cases_playbook")
            if not item.get("failed"):
                problems.append("%s: accepted %r" % (field_type, value))
            elif not hostile.names_field(item) or item.get("field") == "backend":
                problems.append("%s: %r refused without naming %s: %r"
                                % (field_type, value, hostile.field, item.get("msg")))
    assert not problems, "\n".join(problems) + "\n" + play.output[-3000:]
    assert after == before, kernel.diff_text(before, after)


# --------------------------------------------------------------------------- generated values, model only

_HOSTILE_CHARS = "\n\r\x00\t\x0b\x0c\x1b\x7f\"'`$;#{}\\!*&|<>?~^ \u0085\u2028\u00a0\u00e9\uff10\u0661\u200b"
_FIELD_ALPHABET = {
    "comment": "abcXYZ019 _.,:/@+=%()[]-",
    "log_prefix": "abcXYZ019 _.,:/@+=%()[]-",
    "user": "abrootdemn_.-$0123456789",
    "group": "abrootdemn_.-$0123456789",
    "interface": "abcethlo0123456789_.@-+",
    "task_name": "abcXYZ0189_.-",
    "address": "0123456789abcdefABCDEFx.:/%",
    "port": "0123456789:-! ",
    "icmp_type": "0123456789/!- abcdefghijklmnopqrstuvwxyz",
}


def _values(field_type: str):
    alphabet = _FIELD_ALPHABET[field_type]
    near_valid = st.text(alphabet=alphabet, min_size=0, max_size=40)
    spliced = st.tuples(near_valid, st.text(alphabet=_HOSTILE_CHARS, min_size=1, max_size=3), near_valid).map(
        lambda t: t[0] + t[1] + t[2])
    anything = st.text(max_size=60)
    extra = []
    if field_type == "address":
        octet = st.one_of(st.integers(0, 300).map(str), st.sampled_from(["0x7f", "017", "-1", "", "1e1"]))
        extra.append(st.tuples(st.lists(octet, min_size=1, max_size=5).map(".".join),
                               st.one_of(st.just(""), st.integers(-1, 200).map(lambda n: "/%d" % n))).map("".join))
        extra.append(st.ip_addresses().flatmap(lambda a: st.integers(0, a.max_prefixlen + 1).map(
            lambda p: "%s/%d" % (a, p))))
    if field_type == "port":
        extra.append(st.integers(-2 ** 40, 2 ** 40))
        extra.append(st.tuples(st.integers(-5, 70000), st.sampled_from([":", "-", ",", "::"]),
                               st.integers(-5, 70000)).map(lambda t: "%d%s%d" % t))
    if field_type in ("user", "group"):
        extra.append(st.integers(-2 ** 33, 2 ** 33).map(str))
        extra.append(st.tuples(st.integers(0, 2 ** 33), st.integers(0, 2 ** 33)).map(lambda t: "%d-%d" % t))
    if field_type == "icmp_type":
        extra.append(st.tuples(st.integers(-1, 300), st.integers(-1, 300)).map(lambda t: "%d/%d" % t))
    if field_type in ("comment", "log_prefix", "task_name"):
        extra.append(st.text(alphabet=alphabet, min_size=20, max_size=300))
    return st.one_of(near_valid, spliced, anything, *extra)


class _RenderModule:
    """Just enough of AnsibleModule for the backend factories: binaries by name, default options."""
    params = {"xtables_wait": 10, "backend": "auto", "lock_timeout": 60, "ip_version": "both"}

    def get_bin_path(self, name, *args, **kwargs):
        return "/usr/sbin/" + name


def _restore_inputs(policy) -> dict[str, str]:
    """Every script each registered backend would feed to the kernel for ``policy`` on an empty host."""
    out = {}
    for name in [b.name for b in scenarios.backends()]:
        backend = netfilter_task.BACKENDS[name](_RenderModule(), run=None)
        for unit in backend.units(policy):
            out["%s %s" % (name, unit)] = backend.script({}, {}, backend.render(policy, unit))
    return out


_UNSAFE = set("\"'`$;#{}\\\r\x00")


def _json_strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _json_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _json_strings(value)


def _assert_safe(script: str, value, label: str) -> None:
    """Restore text: every line printable ASCII, quotes balanced, no shell/restore syntax outside them.
    nft JSON input: valid JSON whose every string is printable ASCII without quotes or backslashes."""
    if script.lstrip().startswith("{"):
        for text in _json_strings(json.loads(script)):
            assert all(0x20 <= ord(c) < 0x7f for c in text) and not (set(text) & set('"\\')), \
                "%s: unsafe string %r (from %r)" % (label, text, value)
        return
    for line in script.splitlines():
        assert all(0x20 <= ord(c) < 0x7f for c in line), "%s: non-printable/non-ASCII in %r" % (label, line)
        unquoted = line.replace('"', "")
        assert not (_UNSAFE & set(unquoted)), "%s: unsafe character in %r (from %r)" % (label, line, value)
        assert line.count('"') % 2 == 0, "%s: unbalanced quote in %r" % (label, line)
        shlex.split(line)   # tokenises: no runaway quoting


def _fake_getaddrinfo(host, *args, **kwargs):
    """Generated hostnames never reach a real resolver: names ending .example resolve to documentation
    addresses; everything else does not exist."""
    if isinstance(host, str) and host.endswith(".example"):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.7", 0)),
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::7", 0, 0, 0))]
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def _with_defaults(params: dict) -> dict:
    """What AnsibleModule hands the model: rule suboptions filled with their defaults, str options as str."""
    params = dict(params)
    params.setdefault("state", "present")
    rules = []
    for rule in params.get("rules", []):
        full = {key: spec.get("default") for key, spec in owner_rule.RULE_OPTIONS.items()}
        for key, value in rule.items():
            if owner_rule.RULE_OPTIONS[key]["type"] == "str" and isinstance(value, int):
                value = str(value)
            full[key] = value
        rules.append(full)
    params["rules"] = rules
    return params


@pytest.mark.parametrize("field_type", FIELD_TYPES)
def test_generated_values_are_refused_or_render_safely(field_type, monkeypatch):
    monkeypatch.setattr(fields.socket, "getaddrinfo", _fake_getaddrinfo)
    hostile = scenarios.HOSTILE_FIELDS[field_type]
    seen = {"tried": 0, "rejected": 0, "accepted": 0}

    def check_one(value):
        seen["tried"] += 1
        params = _with_defaults(scenarios.hostile_params(field_type, value))
        try:
            policy = owner_model.build_policy(params)
        except NetconfineError as exc:
            assert hostile.names_field({"field": exc.field, "msg": str(exc)}), (value, exc.field, str(exc))
            seen["rejected"] += 1
            return
        scripts = _restore_inputs(policy)
        for label, script in scripts.items():
            _assert_safe(script, value, label)
        for chain in policy.chains:
            assert chain.name.startswith("NC-") and len(chain.name) <= 28, chain.name
        if field_type in ("comment", "log_prefix"):
            assert value in "".join(scripts.values()), "the %s was altered on its way to the kernel" % field_type
        seen["accepted"] += 1

    # hypothesis' own cost is per example: each example draws a batch of values
    @settings(max_examples=GENERATED_PER_FIELD // GENERATED_BATCH, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(_values(field_type), min_size=GENERATED_BATCH, max_size=GENERATED_BATCH))
    def check(values):
        for value in values:
            check_one(value)

    check()
    tally.add("cases_tried", seen["tried"])
    tally.add("cases_rejected", seen["rejected"])
    tally.add("cases_accepted_safe", seen["accepted"])
    assert seen["tried"] >= GENERATED_PER_FIELD


# --------------------------------------------------------------------------- accepted means converges

EDGE_VALID = {
    "comment": ["", " ", "a  b ", "x" * 128, "100% (ok) [x]=y,z:/@+-", "-j ACCEPT"],
    "log_prefix": ["", " ", "x" * 29, "rly: ", "-j ACCEPT", "a=b c,d"],
    "user": ["0", "root", "!root", "! root", "0-4294967294", "4294967294", "1000-1000", "65534"],
    "group": ["0", "root", "!root", "0-4294967294", "4294967294", "65534"],
    "interface": ["eth0", "eth0+", "a" * 15, "a" * 14 + "+", ".", "a.b@c-d_e", "!lo"],
    "task_name": ["a", "A" * 64, "x.y-z_w", "9", "NC-looks-owned", "a..b"],
    "address": ["0.0.0.0/0", "::/0", "0.0.0.0", "::", "::ffff:192.0.2.1", "::ffff:192.0.2.0/120",
                "::0.2.0.3", "255.255.255.255", "2001:db8::/32", "127.0.0.1/32", "!192.0.2.0/24", "localhost"],
    "port": ["0", "65535", "0:65535", "1-2", "00080", "!22", "1024:65535", 443],
    "icmp_type": ["any", "!any", "0", "254", "254/255", "3/3", "8/0", "08", "echo-request", "host-prohibited"],
}


@pytest.mark.parametrize("field_type", FIELD_TYPES)
def test_edge_values_the_model_accepts_converge_in_the_kernel(field_type, backend, make_world):
    """Accepting a value promises it applies and reads back as rendered: never 'restore rejected' or
    'did not converge' for something the model let through."""
    world = make_world(backend, light=True)
    values = EDGE_VALID[field_type]
    calls = []
    for index, value in enumerate(values):
        params = scenarios.hostile_params(field_type, value, backend)
        if field_type != "task_name":
            params["name"] = "rly-edge-%d" % index
        calls.append({"module": "owner_rule", "args": params})
        calls.append({"module": "owner_rule", "args": params})          # the second run must not change
    results = kernel.run_modules(world.ns, calls)
    problems = []
    for index, value in enumerate(values):
        first, second = results[2 * index], results[2 * index + 1]
        if first.get("failed"):
            if first.get("field") == "backend" or not scenarios.HOSTILE_FIELDS[field_type].names_field(first):
                problems.append("%r accepted by the model, then: %s" % (value, first.get("msg")))
        elif second.get("failed") or second.get("changed"):
            problems.append("%r: second run changed=%s %s" % (value, second.get("changed"), second.get("msg", "")))
    assert not problems, "\n".join(problems)


def test_edge_addresses_are_valid_python_networks():
    # guards the table above against typos that would make an "edge" case merely invalid
    for value in EDGE_VALID["address"]:
        if value not in ("localhost",):
            ipaddress.ip_network(value.lstrip("!"), strict=True)
