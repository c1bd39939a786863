"""paranoid.netconfine.uml_bridge_filter, for real: a bridging-host namespace with br0, guests on its ports.

Every test runs the module through ansible-playbook (connection paranoid.netconfine.netns) against
the bridging host's namespace and checks the behaviour (TCP connections and UDP exchanges between
guest namespaces, the host and the uplink, from real and spoofed sources) and the kernel's state
(iptables-save, LOG/DROP counters, /proc/sys/net/bridge). Guests here are veth-attached namespaces;
test_uml_bridge_filter_uml.py puts real User-Mode-Linux guests on the same kind of host.
"""

from __future__ import annotations

import copy
import re
import shlex

import pytest
import yaml

import bridgehost
from bridgehost import HOST4, HOST6, reach, serve
from nchelpers import ansible_playbook, iptables_save, run

_COUNTERS = re.compile(r" \[\d+:\d+\]$")
_OURS = re.compile(r"^(:NC-|-A NC-)|-[jg] NC-|netconfine:")
SPOOF4, SPOOF6 = "198.51.100.99", "fd00:100::99"


@pytest.fixture
def lab(cleanup):
    """br0 in a host namespace; guests dns (uml-conn0), www (uml-conn1); the uplink namespace up (up0)."""
    return bridgehost.build(cleanup, {"dns": "uml-conn0", "www": "uml-conn1", "up": "up0"})


def play(*tasks: dict) -> str:
    body = [{"name": t["name"], "paranoid.netconfine.uml_bridge_filter": t["args"]} for t in tasks]
    return yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": body}], sort_keys=False)


def bridge_filter(ns: str, args: dict, check: bool = False, diff: bool = False, expect_failure: bool = False):
    """Run one uml_bridge_filter task (backend iptables) on ``ns``; return its TaskResult."""
    args = dict({"backend": "iptables", "bridge": "br0"}, **args)
    run_ = ansible_playbook(play({"name": "bridge", "args": args}), [ns], check=check, diff=diff)
    result = run_.task(ns, "bridge")
    assert result.failed is expect_failure, run_
    assert (run_.rc != 0) is expect_failure, run_
    result.play = run_
    return result


def seed_args(lab, **extra) -> dict:
    """The seed's DNS guest (accepts DNS, recurses upstream, syslog to the log server, SSH from the host)
    and a second guest with anti-spoofing only. The uplink namespace is upstream DNS and log server."""
    up = [lab.ip4["up"], lab.ip6["up"]]
    args = {"name": "umlhost", "guests": [
        {"name": "dns", "port": "uml-conn0", "addresses": [lab.ip4["dns"], lab.ip6["dns"]],
         "inbound": [{"protocol": "udp", "port": "53"}, {"protocol": "tcp", "port": "53"}],
         "outbound": [{"protocol": "udp", "port": "53", "to": up}, {"protocol": "tcp", "port": "53", "to": up},
                      {"protocol": "udp", "port": "514", "to": [lab.ip4["up"]]}],
         "host_access": [{"protocol": "tcp", "port": "22"}]},
        {"name": "www", "port": "uml-conn1", "addresses": [lab.ip4["www"], lab.ip6["www"]]},
    ]}
    args.update(extra)
    return args


def saved(ns: str) -> dict[int, str]:
    return {f: "\n".join(_COUNTERS.sub("", line) for line in iptables_save(ns, f).splitlines()) for f in (4, 6)}


def ours(text: str) -> list[str]:
    return [line for line in text.splitlines() if _OURS.search(line)]


def foreign(text: str) -> list[str]:
    return [line for line in text.splitlines() if not _OURS.search(line)]


def chain(result, word: str, guest: str) -> str:
    found = [c for c in result.result["chains"] if re.fullmatch(r"NC-umlhost-%s-%s-[0-9a-f]{8}" % (word, guest), c)]
    assert len(found) == 1, result.result["chains"]
    return found[0]


def bridge_sysctl(ns: str, family: int) -> str:
    key = "bridge-nf-call-iptables" if family == 4 else "bridge-nf-call-ip6tables"
    return run("cat", "/proc/sys/net/bridge/" + key, ns=ns).stdout.strip()


def set_bridge_sysctl(ns: str, family: int, value: str) -> None:
    key = "net.bridge.bridge-nf-call-iptables" if family == 4 else "net.bridge.bridge-nf-call-ip6tables"
    run("sysctl", "-q", "-w", "%s=%s" % (key, value), ns=ns)


# --------------------------------------------------------------------------- the seed's scenario

def test_seed001_dns_guest_idempotent_and_services_as_declared_in_both_directions(lab, cleanup):
    serve(cleanup, lab.ns["dns"], 53, 22, 80)
    serve(cleanup, lab.ns["www"], 80)
    serve(cleanup, lab.ns["up"], 53, 80, 514)
    serve(cleanup, lab.host, 8053)
    # control: without rules everything flows
    assert reach(lab.ns["www"], lab.ip4["dns"], 80) == "connected"
    assert reach(lab.ns["dns"], lab.ip4["www"], 80) == "connected"
    empty = saved(lab.host)
    args = seed_args(lab)

    predicted = bridge_filter(lab.host, args, check=True)
    assert predicted.changed
    assert saved(lab.host) == empty, "check mode changed the kernel"
    applied = bridge_filter(lab.host, args, diff=True)
    assert applied.changed
    assert applied.result["scripts"] == predicted.result["scripts"], "check mode did not predict the run"
    assert "--physdev-in uml-conn0" in applied.result["diff"]["after"]
    state = saved(lab.host)
    assert not bridge_filter(lab.host, args, check=True).changed
    assert not bridge_filter(lab.host, args).changed
    assert saved(lab.host) == state
    for family in (4, 6):
        assert bridge_sysctl(lab.host, family) == "1"
        hooks = [line for line in state[family].splitlines() if "netconfine:umlhost" in line]
        assert [h.split()[1] for h in hooks] == ["INPUT", "FORWARD", "OUTPUT"], hooks

    for family in ("ip4", "ip6"):
        dns, www, up = (getattr(lab, family)[n] for n in ("dns", "www", "up"))
        host = HOST4 if family == "ip4" else HOST6
        # inbound: anybody may query the DNS guest (TCP and UDP), nothing else
        assert reach(lab.ns["www"], dns, 53) == "connected", family
        assert reach(lab.ns["www"], dns, 53, "udp") == "connected", family
        assert reach(lab.ns["up"], dns, 53, "udp") == "connected", family
        assert reach(lab.ns["www"], dns, 80) == "timeout", family
        # outbound: recursion upstream, nothing else (not to the other guest either)
        assert reach(lab.ns["dns"], up, 53) == "connected", family
        assert reach(lab.ns["dns"], up, 53, "udp") == "connected", family
        assert reach(lab.ns["dns"], up, 80) == "timeout", family
        assert reach(lab.ns["dns"], www, 80) == "timeout", family
        # the host may SSH in; the guest may not use the host's services
        assert reach(lab.host, dns, 22) == "connected", family
        assert reach(lab.host, dns, 80) == "timeout", family
        assert reach(lab.ns["dns"], host, 8053) == "timeout", family
        # a guest without a policy block is only anti-spoofed
        assert reach(lab.ns["www"], up, 80) == "connected", family
        assert reach(lab.ns["www"], host, 8053) == "connected", family
    assert reach(lab.ns["dns"], lab.ip4["up"], 514, "udp") == "connected"
    assert reach(lab.ns["dns"], lab.ip6["up"], 514, "udp") == "timeout", "syslog was declared for IPv4 only"
    drop = chain(applied, "to", "dns")
    assert bridgehost.counters(lab.host, 4, drop)["DROP"] > 0

    # guest to guest is blocked unless allowed: allow dns -> www:80 (www has no policy of its own)
    args["guests"][0]["outbound"].append({"protocol": "tcp", "port": "80", "to": [lab.ip4["www"]]})
    assert bridge_filter(lab.host, args).changed
    assert reach(lab.ns["dns"], lab.ip4["www"], 80) == "connected"
    assert reach(lab.ns["dns"], lab.ip6["www"], 80) == "timeout"


def test_seed001_spoofed_sources_are_logged_then_dropped_forwarded_and_to_the_host(lab, cleanup):
    serve(cleanup, lab.ns["up"], 80)
    serve(cleanup, lab.host, 8053)
    run("ip", "-n", lab.ns["www"], "addr", "add", SPOOF4 + "/24", "dev", "eth0")
    run("ip", "-n", lab.ns["www"], "addr", "add", SPOOF6 + "/64", "dev", "eth0", "nodad")
    assert reach(lab.ns["www"], lab.ip4["up"], 80, source=SPOOF4) == "connected", "control"
    result = bridge_filter(lab.host, seed_args(lab))
    guard = chain(result, "g", "www")
    before = {f: bridgehost.counters(lab.host, f, guard) for f in (4, 6)}
    assert before[4] == {"LOG": 0, "DROP": 0}, before
    for family, spoof, real in ((4, SPOOF4, lab.ip4["www"]), (6, SPOOF6, lab.ip6["www"])):
        up, host = (lab.ip4["up"], HOST4) if family == 4 else (lab.ip6["up"], HOST6)
        assert reach(lab.ns["www"], up, 80, source=real) == "connected", family
        assert reach(lab.ns["www"], host, 8053, source=real) == "connected", family
        assert reach(lab.ns["www"], up, 80, source=spoof) == "timeout", family
        mid = bridgehost.counters(lab.host, family, guard)
        assert mid["LOG"] > before[family]["LOG"] and mid["DROP"] > before[family]["DROP"], (family, mid)
        assert reach(lab.ns["www"], host, 8053, source=spoof) == "timeout", family
        after = bridgehost.counters(lab.host, family, guard)
        assert after["LOG"] > mid["LOG"] and after["DROP"] > mid["DROP"], (family, after)
        # the other guest's real address is a spoofed source too
        other = lab.ip4["dns"] if family == 4 else lab.ip6["dns"]
        run("ip", "-n", lab.ns["www"], "addr", "add", other + ("/32" if family == 4 else "/128"), "dev", "eth0",
            *(["nodad"] if family == 6 else []))
        assert reach(lab.ns["www"], up, 80, source=other) == "timeout", family
    assert any("spoof www" in line for line in ours(saved(lab.host)[4]))


def test_bridge_nf_call_switched_off_by_hand_is_repaired(lab, cleanup):
    serve(cleanup, lab.ns["up"], 80)
    run("ip", "-n", lab.ns["www"], "addr", "add", SPOOF4 + "/24", "dev", "eth0")
    args = seed_args(lab)
    for family in (4, 6):
        set_bridge_sysctl(lab.host, family, "0")
    # the first run ensures the sysctls and reports it
    first = bridge_filter(lab.host, args, diff=True)
    assert first.changed
    assert "net.bridge.bridge-nf-call-iptables = 1" in first.result["diff"]["after"]
    assert not bridge_filter(lab.host, args).changed
    assert reach(lab.ns["www"], lab.ip4["up"], 80, source=SPOOF4) == "timeout"

    set_bridge_sysctl(lab.host, 4, "0")
    # bypassed: the kernel no longer shows bridged packets to iptables
    assert reach(lab.ns["www"], lab.ip4["up"], 80, source=SPOOF4) == "connected", "control: bypassed"
    predicted = bridge_filter(lab.host, args, check=True, diff=True)
    assert predicted.changed, "check mode reported success while the rules are bypassed"
    assert "net.bridge.bridge-nf-call-iptables = 0" in predicted.result["diff"]["before"]
    assert bridge_sysctl(lab.host, 4) == "0", "check mode changed the sysctl"
    assert bridge_filter(lab.host, args).changed
    assert bridge_sysctl(lab.host, 4) == "1"
    assert reach(lab.ns["www"], lab.ip4["up"], 80, source=SPOOF4) == "timeout"


# --------------------------------------------------------------------------- ownership

def test_drift_foreign_rules_guest_removed_and_absent(lab):
    ns = lab.host
    for family, src in ((4, "192.0.2.7"), (6, "fd00:7::7")):
        tool = "iptables" if family == 4 else "ip6tables"
        run(tool, "-w", "-A", "FORWARD", "-s", src, "-j", "DROP", ns=ns)
        run(tool, "-w", "-A", "INPUT", "-s", src, "-j", "DROP", ns=ns)
        run(tool, "-w", "-N", "FOREIGN", ns=ns)
        run(tool, "-w", "-A", "FOREIGN", "-j", "RETURN", ns=ns)
    before = saved(ns)
    args = seed_args(lab)
    result = bridge_filter(ns, args)
    state = saved(ns)
    for family in (4, 6):
        assert foreign(state[family]) == foreign(before[family]), "foreign rules touched"
        forward = [line for line in state[family].splitlines() if line.startswith("-A FORWARD")]
        assert "netconfine:umlhost" in forward[0], "our jump is not first"

    # drift: a rule of ours deleted by hand, our jump moved to the end
    guard = chain(result, "g", "www")
    run("iptables", "-w", "-D", guard, "-s", lab.ip4["www"] + "/32", "-j", "RETURN", ns=ns)
    hook = [line for line in state[4].splitlines() if line.startswith("-A FORWARD") and "netconfine" in line][0]
    run("iptables", "-w", "-D", *shlex.split(hook)[1:], ns=ns)
    run("iptables", "-w", "-A", *shlex.split(hook)[1:], ns=ns)
    assert saved(ns) != state
    assert bridge_filter(ns, args, check=True).changed
    assert bridge_filter(ns, args).changed
    assert saved(ns) == state
    assert not bridge_filter(ns, args).changed

    # removing a guest from the list removes exactly its rules
    args["guests"] = args["guests"][:1]
    assert bridge_filter(ns, args).changed
    fewer = saved(ns)
    removed = set(ours(state[4])) - set(ours(fewer[4]))
    assert removed and all("www" in line or "uml-conn1" in line for line in removed), removed
    assert set(ours(fewer[4])) <= set(ours(state[4])), "other rules changed"
    assert "uml-conn1" not in fewer[4] and guard not in fewer[4]
    for family in (4, 6):
        assert foreign(fewer[family]) == foreign(before[family])

    gone = bridge_filter(ns, dict(args, state="absent"))
    assert gone.changed
    assert not bridge_filter(ns, dict(args, state="absent")).changed
    after = saved(ns)
    for family in (4, 6):
        assert ours(after[family]) == [], after[family]
        assert after[family] == before[family], "absent did not restore the foreign ruleset byte for byte"
        assert bridge_sysctl(ns, family) == "1", "absent left the sysctl alone"


# the whole table of bad input is in tests/unit (test_bridge_model.py); here one of each kind, through Ansible
HOSTILE = [
    ("guests[1].port", lambda g: g[1].update(port="uml-conn1-is-far-too-long")),
    ("guests[1].port", lambda g: g[1].update(port="uml+")),
    ("guests[1].port", lambda g: g[1].update(port="up0x")),
    ("guests[1].mac", lambda g: g[1].update(mac="01:00:5e:00:00:01")),
    ("guests[1].addresses[0]", lambda g: g[1].update(addresses=["198.51.100.22/24"])),
    ("guests[1].addresses[0]", lambda g: g[1].update(addresses=[g[0]["addresses"][0]])),
    ("guests[1].port", lambda g: g[1].update(port="uml-conn0")),
]


def test_hostile_input_names_the_field_and_changes_nothing(lab):
    run("ip", "-n", lab.host, "link", "add", "up0x", "type", "veth", "peer", "name", "up0y")
    args = seed_args(lab)
    assert bridge_filter(lab.host, args).changed
    state = saved(lab.host)
    for field, spoil in HOSTILE:
        bad = copy.deepcopy(args)
        spoil(bad["guests"])
        failed = bridge_filter(lab.host, bad, expect_failure=True)
        assert failed.result.get("field") == field, failed.play
        assert saved(lab.host) == state, field


# --------------------------------------------------------------------------- L2 anti-spoofing (mac)

MACS = {"dns": "52:54:00:00:00:21", "www": "52:54:00:00:00:22", "up": "52:54:00:00:00:23"}


def neigh_mac(ns: str, address: str) -> str | None:
    for entry in yaml.safe_load(run("ip", "-j", "neigh", "show", address, ns=ns).stdout or "[]"):
        return entry.get("lladdr")
    return None


def forge_arp(lab, victim: str) -> None:
    """From www: gratuitous ARP (request and reply) claiming ``victim``'s IPv4 address with www's MAC."""
    address = lab.ip4[victim]
    for mode in ("-U", "-P"):
        run("arping", "-q", "-c", "2", "-w", "1", mode, "-S", address, "-i", "eth0", address,
            ns=lab.ns["www"], check=False)


def l2_drops(ns: str, chain_prefix: str) -> int:
    out = run("ebtables-save", "-c", ns=ns).stdout
    counts = [int(m.group(1)) for m in re.finditer(r"^\[(\d+):\d+\] -A (%s\S*) -j DROP$" % re.escape(chain_prefix),
                                                   out, re.M)]
    assert counts, out
    return sum(counts)


def test_l2_changed_mac_and_forged_arp_are_dropped_no_cache_is_poisoned(lab, cleanup):
    for name, mac in MACS.items():
        run("ip", "-n", lab.ns[name], "link", "set", "eth0", "address", mac)
    serve(cleanup, lab.ns["dns"], 53, 22)
    serve(cleanup, lab.ns["up"], 80)
    # control: without L2 rules a forged ARP poisons the uplink's and the host's caches
    assert reach(lab.ns["up"], lab.ip4["dns"], 53) == "connected"
    assert reach(lab.host, lab.ip4["dns"], 53) == "connected"
    assert neigh_mac(lab.ns["up"], lab.ip4["dns"]) == MACS["dns"]
    forge_arp(lab, "dns")
    assert neigh_mac(lab.ns["up"], lab.ip4["dns"]) == MACS["www"], "control: the forged ARP did not poison"
    for ns in (lab.ns["up"], lab.host):
        run("ip", "neigh", "flush", "dev", "eth0" if ns != lab.host else "br0", ns=ns)

    args = seed_args(lab)
    for guest in args["guests"]:
        guest["mac"] = MACS[guest["name"]]
    applied = bridge_filter(lab.host, args, diff=True)
    assert applied.changed and "# ebtables bridge" in applied.result["diff"]["after"]
    assert not bridge_filter(lab.host, args, check=True).changed
    assert not bridge_filter(lab.host, args).changed
    assert reach(lab.ns["up"], lab.ip4["dns"], 53) == "connected"
    assert reach(lab.host, lab.ip4["dns"], 22) == "connected"
    assert reach(lab.ns["www"], lab.ip4["up"], 80) == "connected"
    chain = [c for c in run("ebtables-save", ns=lab.host).stdout.split() if c.startswith("NC-umlhost-l2drop-w")][0]

    before = l2_drops(lab.host, chain)
    forge_arp(lab, "dns")
    assert l2_drops(lab.host, chain) > before
    assert neigh_mac(lab.ns["up"], lab.ip4["dns"]) == MACS["dns"], "the uplink's ARP cache was poisoned"
    assert neigh_mac(lab.host, lab.ip4["dns"]) == MACS["dns"], "the host's ARP cache was poisoned"

    # a changed MAC: every frame is dropped, logged first
    run("ip", "-n", lab.ns["www"], "neigh", "flush", "dev", "eth0")
    run("ip", "-n", lab.ns["www"], "link", "set", "eth0", "address", "52:54:00:00:00:99")
    before = l2_drops(lab.host, chain)
    assert reach(lab.ns["www"], lab.ip4["up"], 80) == "timeout"
    assert l2_drops(lab.host, chain) > before
    run("ip", "-n", lab.ns["www"], "link", "set", "eth0", "address", MACS["www"])
    assert reach(lab.ns["www"], lab.ip4["up"], 80) == "connected"

    # without the MAC the guest's L2 chains go; absent removes the rest
    args["guests"][1].pop("mac")
    assert bridge_filter(lab.host, args).changed
    assert "l2-www" not in run("ebtables-save", ns=lab.host).stdout
    assert bridge_filter(lab.host, dict(args, state="absent")).changed
    assert "NC-" not in run("ebtables-save", ns=lab.host).stdout
