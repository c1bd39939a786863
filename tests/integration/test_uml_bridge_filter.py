"""paranoid.netconfine.uml_bridge_filter, for real: a bridging-host namespace with br0, guests on its ports.

Every test runs the module through ansible-playbook (connection paranoid.netconfine.netns) against
the bridging host's namespace and checks the behaviour (TCP connections and UDP exchanges between
guest namespaces, the host and the uplink, from real and spoofed sources) and the kernel's state
(iptables-save / nft list ruleset / ebtables-save, LOG/DROP counters, /proc/sys/net/bridge), on both
backends: the tests are written once and take the ``backend`` fixture; what differs in reading the
kernel is behind ``bridgehost.Kernel``. LOG lines are invisible in a network namespace unless
net.netfilter.nf_log_all_netns is set, so the tests check that the log rules' counters rise.
Guests here are veth-attached namespaces; test_uml_bridge_filter_uml.py puts real
User-Mode-Linux guests on the same kind of host.
"""

from __future__ import annotations

import copy
import re
import shlex
import shutil

import pytest
import yaml

import bridgehost
from bridgehost import HOST4, HOST6, Kernel, _chain, reach, serve
from nchelpers import ansible_playbook, nft_tables, run

SPOOF4, SPOOF6 = "198.51.100.99", "fd00:100::99"


@pytest.fixture(params=bridgehost.BACKENDS)
def backend(request) -> str:
    """The backend the test converges with: every behaviour test runs on iptables and on nftables."""
    return request.param


@pytest.fixture
def kernel(backend) -> bridgehost.Kernel:
    return bridgehost.Kernel(backend)


@pytest.fixture
def lab(cleanup):
    """br0 in a host namespace; guests dns (uml-conn0), www (uml-conn1); the uplink namespace up (up0)."""
    return bridgehost.build(cleanup, {"dns": "uml-conn0", "www": "uml-conn1", "up": "up0"})


def play(*tasks: dict) -> str:
    body = [{"name": t["name"], "paranoid.netconfine.uml_bridge_filter": t["args"]} for t in tasks]
    return yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": body}], sort_keys=False)


def bridge_filter(ns: str, args: dict, check: bool = False, diff: bool = False, expect_failure: bool = False,
                  backend: str = "iptables"):
    """Run one uml_bridge_filter task (``backend`` unless args name one) on ``ns``; return its TaskResult."""
    args = dict({"backend": backend, "bridge": "br0"}, **args)
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


def chain(result, word: str, guest: str) -> str:
    return _chain(result, word, guest)


def bridge_sysctl(ns: str, family: int) -> str:
    key = "bridge-nf-call-iptables" if family == 4 else "bridge-nf-call-ip6tables"
    return run("cat", "/proc/sys/net/bridge/" + key, ns=ns).stdout.strip()


def set_bridge_sysctl(ns: str, family: int, value: str) -> None:
    key = "net.bridge.bridge-nf-call-iptables" if family == 4 else "net.bridge.bridge-nf-call-ip6tables"
    run("sysctl", "-q", "-w", "%s=%s" % (key, value), ns=ns)


# --------------------------------------------------------------------------- the seed's scenario

def test_seed001_dns_guest_idempotent_and_services_as_declared_in_both_directions(lab, cleanup, backend, kernel):
    serve(cleanup, lab.ns["dns"], 53, 22, 80)
    serve(cleanup, lab.ns["www"], 80)
    serve(cleanup, lab.ns["up"], 53, 80, 514)
    serve(cleanup, lab.host, 8053)
    # control: without rules everything flows
    assert reach(lab.ns["www"], lab.ip4["dns"], 80) == "connected"
    assert reach(lab.ns["dns"], lab.ip4["www"], 80) == "connected"
    empty = kernel.snapshot(lab.host)
    args = seed_args(lab)

    predicted = bridge_filter(lab.host, args, check=True, backend=backend)
    assert predicted.changed
    assert kernel.snapshot(lab.host) == empty, "check mode changed the kernel"
    applied = bridge_filter(lab.host, args, diff=True, backend=backend)
    assert applied.changed and applied.result["backend"] == backend
    assert applied.result["scripts"] == predicted.result["scripts"], "check mode did not predict the run"
    after = applied.result["diff"]["after"]
    if backend == "iptables":
        assert "--physdev-in uml-conn0" in after
    else:
        # anti-spoofing as set lookups in the bridge table, the policy statefully in the inet table
        assert '# nftables bridge' in after and '# nftables ruleset' in after, after
        assert re.search(r'iifname \. ip saddr != \{ "uml-conn0" \. .*198\.51\.100\.21', after), after
        assert "ct state established,related" in after
    state = kernel.snapshot(lab.host)
    assert not bridge_filter(lab.host, args, check=True, backend=backend).changed
    assert not bridge_filter(lab.host, args, backend=backend).changed
    assert kernel.snapshot(lab.host) == state
    for family in (4, 6):
        assert bridge_sysctl(lab.host, family) == "1"
    if backend == "iptables":
        for family in (4, 6):
            hooks = [line for line in state["iptables %d" % family].splitlines() if "netconfine:umlhost" in line]
            assert [h.split()[1] for h in hooks] == ["INPUT", "FORWARD", "OUTPUT"], hooks
    else:
        assert not [line for key in ("iptables 4", "iptables 6") for line in state[key].splitlines()
                    if "NC-" in line], "the nftables form left iptables rules"
        for table, chains in (("nft bridge netconfine", ("bridge_prerouting", "bridge_forward")),
                              ("nft inet netconfine", ("filter_input", "filter_forward", "filter_output"))):
            for name in chains:
                assert "chain %s {" % name in state[table], state[table]

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
    assert kernel.drops(lab.host, applied, "to", "dns", 4)["DROP"] > 0
    assert kernel.drops(lab.host, applied, "from", "dns", 6)["DROP"] > 0

    # guest to guest is blocked unless allowed: allow dns -> www:80 (www has no policy of its own)
    args["guests"][0]["outbound"].append({"protocol": "tcp", "port": "80", "to": [lab.ip4["www"]]})
    assert bridge_filter(lab.host, args, backend=backend).changed
    assert reach(lab.ns["dns"], lab.ip4["www"], 80) == "connected"
    assert reach(lab.ns["dns"], lab.ip6["www"], 80) == "timeout"


def test_seed001_spoofed_sources_are_logged_then_dropped_forwarded_and_to_the_host(lab, cleanup, backend, kernel):
    serve(cleanup, lab.ns["up"], 80)
    serve(cleanup, lab.host, 8053)
    run("ip", "-n", lab.ns["www"], "addr", "add", SPOOF4 + "/24", "dev", "eth0")
    run("ip", "-n", lab.ns["www"], "addr", "add", SPOOF6 + "/64", "dev", "eth0", "nodad")
    assert reach(lab.ns["www"], lab.ip4["up"], 80, source=SPOOF4) == "connected", "control"
    result = bridge_filter(lab.host, seed_args(lab), backend=backend)
    before = {f: kernel.drops(lab.host, result, "g", "www", f) for f in (4, 6)}
    assert before[4] == {"LOG": 0, "DROP": 0}, before
    for family, spoof, real in ((4, SPOOF4, lab.ip4["www"]), (6, SPOOF6, lab.ip6["www"])):
        up, host = (lab.ip4["up"], HOST4) if family == 4 else (lab.ip6["up"], HOST6)
        assert reach(lab.ns["www"], up, 80, source=real) == "connected", family
        assert reach(lab.ns["www"], host, 8053, source=real) == "connected", family
        start = kernel.drops(lab.host, result, "g", "www", family)
        assert reach(lab.ns["www"], up, 80, source=spoof) == "timeout", family
        mid = kernel.drops(lab.host, result, "g", "www", family)
        assert mid["LOG"] > start["LOG"] and mid["DROP"] > start["DROP"], (family, mid)
        assert reach(lab.ns["www"], host, 8053, source=spoof) == "timeout", family
        after = kernel.drops(lab.host, result, "g", "www", family)
        assert after["LOG"] > mid["LOG"] and after["DROP"] > mid["DROP"], (family, after)
        # the other guest's real address is a spoofed source too
        other = lab.ip4["dns"] if family == 4 else lab.ip6["dns"]
        run("ip", "-n", lab.ns["www"], "addr", "add", other + ("/32" if family == 4 else "/128"), "dev", "eth0",
            *(["nodad"] if family == 6 else []))
        assert reach(lab.ns["www"], up, 80, source=other) == "timeout", family
    assert any("spoof www" in line for line in kernel.ours(lab.host))


# what a compromised guest (www, which has no mac) sends with a forged source, to the uplink: VLAN-tagged (the
# kernel delivers a priority-tagged frame, vid 0, as an untagged one, so that one even reaches up's UDP socket)
# and under an ether type that is neither IPv4, IPv6 nor ARP (0x88b5: IEEE 802 local experimental)
TAGGED = ({"tags": [("802.1Q", 0)]}, {"tags": [("802.1Q", 5)]}, {"tags": [("802.1ad", 0)]},
          {"tags": [("802.1ad", 6), ("802.1Q", 5)]}, {"ether_type": 0x88b5})


def test_vlan_tagged_and_other_ether_types_from_a_guest_are_logged_and_dropped(lab, cleanup, backend, kernel):
    """A guest may send untagged IPv4, IPv6 and ARP only: a VLAN-tagged frame would carry any source past
    every L3 check (and past physdev: br_netfilter shows it to iptables only with bridge-nf-filter-vlan-tagged).
    www has no mac: the iptables form needs its ebtables guard all the same."""
    www, up = lab.ns["www"], lab.ns["up"]

    def forged(**kind):
        return bridgehost.forged_frames(www, up, SPOOF4, lab.ip4["up"], **kind)

    # control: without rules every kind crosses the bridge; a priority-tagged one is delivered with its forged source
    for kind in TAGGED:
        assert forged(**kind)["frames"] == 3, kind
    assert forged(tags=[("802.1Q", 0)])["datagrams"] == [SPOOF4] * 3, "control"
    args = seed_args(lab)
    assert bridge_filter(lab.host, args, backend=backend).changed
    assert not bridge_filter(lab.host, args, check=True, backend=backend).changed
    assert not bridge_filter(lab.host, args, backend=backend).changed
    for kind in TAGGED:
        before = kernel.l2_drops(lab.host, "www")
        assert forged(**kind) == {"frames": 0, "datagrams": []}, kind
        assert kernel.l2_drops(lab.host, "www") >= before + 3, kind
    # untagged: the forged source is the L3 check's (spoof), the real one passes, hand-made or not
    assert forged()["frames"] == 0
    real = bridgehost.forged_frames(www, up, lab.ip4["www"], lab.ip4["up"])
    assert real == {"frames": 3, "datagrams": [lab.ip4["www"]] * 3}, real
    serve(cleanup, up, 80)
    serve(cleanup, lab.host, 8053)
    for family in ("ip4", "ip6"):
        assert reach(www, getattr(lab, family)["up"], 80) == "connected", family
    assert reach(www, HOST4, 8053) == "connected"
    # the uplink is no guest: what it sends is not checked
    assert bridgehost.forged_frames(up, www, SPOOF4, lab.ip4["www"], tags=[("802.1Q", 5)])["frames"] == 3
    assert any("l2 www" in line for line in kernel.ours(lab.host))


def test_bridge_nf_call_switched_off_by_hand_is_repaired(lab, cleanup, backend):
    serve(cleanup, lab.ns["up"], 80)
    args = seed_args(lab)
    for family in (4, 6):
        set_bridge_sysctl(lab.host, family, "0")
    # the first run ensures the sysctls and reports it
    first = bridge_filter(lab.host, args, diff=True, backend=backend)
    assert first.changed
    assert "net.bridge.bridge-nf-call-iptables = 1" in first.result["diff"]["after"]
    assert not bridge_filter(lab.host, args, backend=backend).changed
    # dns may not connect to the uplink's port 80: its service policy, seen through br_netfilter
    assert reach(lab.ns["dns"], lab.ip4["up"], 80) == "timeout"

    set_bridge_sysctl(lab.host, 4, "0")
    # bypassed: the kernel no longer shows bridged packets to the IP hooks
    assert reach(lab.ns["dns"], lab.ip4["up"], 80) == "connected", "control: bypassed"
    predicted = bridge_filter(lab.host, args, check=True, diff=True, backend=backend)
    assert predicted.changed, "check mode reported success while the rules are bypassed"
    assert "net.bridge.bridge-nf-call-iptables = 0" in predicted.result["diff"]["before"]
    assert bridge_sysctl(lab.host, 4) == "0", "check mode changed the sysctl"
    assert bridge_filter(lab.host, args, backend=backend).changed
    assert bridge_sysctl(lab.host, 4) == "1"
    assert reach(lab.ns["dns"], lab.ip4["up"], 80) == "timeout"


# --------------------------------------------------------------------------- ownership

FOREIGN_NFT = """
table inet nctforeign {
    chain forward { type filter hook forward priority 0; policy accept; ip saddr 192.0.2.7 counter drop; }
}
table bridge nctforeign {
    chain prerouting { type filter hook prerouting priority 0; policy accept; ether saddr 02:00:00:00:00:07 drop; }
}
"""


def _drift(ns: str, backend: str, result, lab, snapshot) -> None:
    """Hand edits of what the task owns: a rule of ours deleted, a foreign rule among our jumps."""
    if backend == "iptables":
        guard = _chain(result, "g", "www")
        run("iptables", "-w", "-D", guard, "-s", lab.ip4["www"] + "/32", "-j", "RETURN", ns=ns)
        hook = [line for line in snapshot["iptables 4"].splitlines()
                if line.startswith("-A FORWARD") and "netconfine" in line][0]
        run("iptables", "-w", "-D", *shlex.split(hook)[1:], ns=ns)
        run("iptables", "-w", "-A", *shlex.split(hook)[1:], ns=ns)
        return
    spoof = [c for c in re.findall(r"chain (\S+) \{", snapshot["nft bridge netconfine"]) if c.endswith(".spoof4-www")]
    run("nft", "flush", "chain", "bridge", "netconfine", spoof[0], ns=ns)
    run("nft", "insert", "rule", "bridge", "netconfine", "bridge_prerouting", "accept", ns=ns)
    run("nft", "add", "rule", "inet", "netconfine", "filter_forward", "counter", ns=ns)


def test_drift_foreign_rules_guest_removed_and_absent(lab, backend, kernel):
    ns = lab.host
    for family, src in ((4, "192.0.2.7"), (6, "fd00:7::7")):
        tool = "iptables" if family == 4 else "ip6tables"
        run(tool, "-w", "-A", "FORWARD", "-s", src, "-j", "DROP", ns=ns)
        run(tool, "-w", "-A", "INPUT", "-s", src, "-j", "DROP", ns=ns)
        run(tool, "-w", "-N", "FOREIGN", ns=ns)
        run(tool, "-w", "-A", "FOREIGN", "-j", "RETURN", ns=ns)
    run("nft", "-f", "-", ns=ns, input=FOREIGN_NFT)
    before = kernel.snapshot(ns)
    foreign_before = kernel.foreign(ns)
    args = seed_args(lab)
    result = bridge_filter(ns, args, backend=backend)
    state = kernel.snapshot(ns)
    assert kernel.foreign(ns) == foreign_before, "foreign rules touched"
    if backend == "iptables":
        for family in (4, 6):
            forward = [line for line in state["iptables %d" % family].splitlines() if line.startswith("-A FORWARD")]
            assert "netconfine:umlhost" in forward[0], "our jump is not first"

    _drift(ns, backend, result, lab, state)
    assert kernel.snapshot(ns) != state
    assert bridge_filter(ns, args, check=True, backend=backend).changed
    assert bridge_filter(ns, args, backend=backend).changed
    assert kernel.snapshot(ns) == state
    assert not bridge_filter(ns, args, backend=backend).changed

    # removing a guest from the list removes exactly its rules
    mine = kernel.ours(ns)
    args["guests"] = args["guests"][:1]
    assert bridge_filter(ns, args, backend=backend).changed
    fewer = kernel.ours(ns)
    assert "uml-conn1" not in "\n".join(fewer) and "www" not in "\n".join(fewer), fewer
    if backend == "iptables":
        removed = set(mine) - set(fewer)
        # www's chains (its ebtables log-and-drop chain is l2drop-w-<hash>) and its port
        assert removed and all(re.search(r"www|uml-conn1|l2drop-w-", line) for line in removed), removed
        assert set(fewer) <= set(mine), "other rules changed"
    else:
        # www had no service policy: the inet table is as it was; in the bridge table only lookups lost www
        assert kernel.snapshot(ns)["nft inet netconfine"] == state["nft inet netconfine"]
        changed = set(fewer) - set(mine)
        assert changed and all("{" in line for line in changed), changed
        assert len(fewer) < len(mine)
    assert kernel.foreign(ns) == foreign_before

    gone = bridge_filter(ns, dict(args, state="absent"), backend=backend)
    assert gone.changed
    assert not bridge_filter(ns, dict(args, state="absent"), backend=backend).changed
    assert kernel.anything_ours(ns) == []
    assert kernel.snapshot(ns) == before, "absent did not restore the foreign ruleset byte for byte"
    for family in (4, 6):
        assert bridge_sysctl(ns, family) == "1", "absent left the sysctl alone"


def test_switching_backends_removes_what_the_other_one_owned(lab):
    args = seed_args(lab)
    for guest in args["guests"]:
        guest["mac"] = MACS[guest["name"]]
    empty = Kernel("iptables").foreign(lab.host)
    assert bridge_filter(lab.host, args, backend="iptables").changed
    assert Kernel("iptables").ours(lab.host) and not Kernel("nftables").ours(lab.host)
    switched = bridge_filter(lab.host, dict(args, backend="auto"))
    assert switched.changed and switched.result["backend"] == "nftables", "auto did not pick nftables"
    assert not Kernel("iptables").ours(lab.host), "the iptables form was left behind"
    assert Kernel("nftables").ours(lab.host)
    assert bridge_filter(lab.host, args, backend="iptables").changed
    assert not Kernel("nftables").ours(lab.host), "the nftables form was left behind"
    assert bridge_filter(lab.host, dict(args, state="absent"), backend="iptables").changed
    assert Kernel("iptables").anything_ours(lab.host) == []
    assert Kernel("iptables").foreign(lab.host) == empty


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


def test_hostile_input_names_the_field_and_changes_nothing(lab, backend, kernel):
    run("ip", "-n", lab.host, "link", "add", "up0x", "type", "veth", "peer", "name", "up0y")
    args = seed_args(lab)
    assert bridge_filter(lab.host, args, backend=backend).changed
    state = kernel.snapshot(lab.host)
    for field, spoil in HOSTILE:
        bad = copy.deepcopy(args)
        spoil(bad["guests"])
        failed = bridge_filter(lab.host, bad, expect_failure=True, backend=backend)
        assert failed.result.get("field") == field, failed.play
        assert kernel.snapshot(lab.host) == state, field


# --------------------------------------------------------------------------- L2 anti-spoofing (mac)

MACS = {"dns": "52:54:00:00:00:21", "www": "52:54:00:00:00:22", "up": "52:54:00:00:00:23"}


def neigh_mac(ns: str, address: str) -> str | None:
    for entry in yaml.safe_load(run("ip", "-j", "neigh", "show", address, ns=ns).stdout or "[]"):
        return entry.get("lladdr")
    return None


def forge_arp(lab, victim: str) -> None:
    """From www: gratuitous ARP (request and reply) claiming ``victim``'s IPv4 address with www's MAC."""
    address = lab.ip4[victim]
    assert shutil.which("arping"), "arping (Debian package arping) is missing: bash scripts/bootstrap installs it"
    for mode in ("-U", "-P"):  # arping exits 1 when nobody answers, which is expected here
        run("arping", "-q", "-c", "2", "-w", "1", mode, "-S", address, "-i", "eth0", address,
            ns=lab.ns["www"], check=False)


def test_l2_changed_mac_and_forged_arp_are_dropped_no_cache_is_poisoned(lab, cleanup, backend, kernel):
    for name, mac in MACS.items():
        run("ip", "-n", lab.ns[name], "link", "set", "eth0", "address", mac)
    serve(cleanup, lab.ns["dns"], 53, 22)
    serve(cleanup, lab.ns["up"], 80)
    assert "bridge filter" not in nft_tables(lab.host)
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
    applied = bridge_filter(lab.host, args, diff=True, backend=backend)
    unit = "# ebtables bridge" if backend == "iptables" else "# nftables bridge"
    assert applied.changed and unit in applied.result["diff"]["after"]
    assert not bridge_filter(lab.host, args, check=True, backend=backend).changed
    assert not bridge_filter(lab.host, args, backend=backend).changed
    assert reach(lab.ns["up"], lab.ip4["dns"], 53) == "connected"
    assert reach(lab.host, lab.ip4["dns"], 22) == "connected"
    assert reach(lab.ns["www"], lab.ip4["up"], 80) == "connected"

    before = kernel.l2_drops(lab.host, "www")
    forge_arp(lab, "dns")
    assert kernel.l2_drops(lab.host, "www") > before
    assert neigh_mac(lab.ns["up"], lab.ip4["dns"]) == MACS["dns"], "the uplink's ARP cache was poisoned"
    assert neigh_mac(lab.host, lab.ip4["dns"]) == MACS["dns"], "the host's ARP cache was poisoned"

    # a changed MAC: every frame is dropped, logged first
    run("ip", "-n", lab.ns["www"], "neigh", "flush", "dev", "eth0")
    run("ip", "-n", lab.ns["www"], "link", "set", "eth0", "address", "52:54:00:00:00:99")
    before = kernel.l2_drops(lab.host, "www")
    assert reach(lab.ns["www"], lab.ip4["up"], 80) == "timeout"
    assert kernel.l2_drops(lab.host, "www") > before
    run("ip", "-n", lab.ns["www"], "link", "set", "eth0", "address", MACS["www"])
    assert reach(lab.ns["www"], lab.ip4["up"], 80) == "connected"

    # without the MAC the guest's MAC and ARP checks go (its ether type guard stays); absent removes the rest
    args["guests"][1].pop("mac")
    assert bridge_filter(lab.host, args, backend=backend).changed
    assert not [line for line in kernel.ours(lab.host) if MACS["www"] in line]
    assert [line for line in kernel.ours(lab.host) if MACS["dns"] in line]
    run("ip", "-n", lab.ns["www"], "link", "set", "eth0", "address", "52:54:00:00:00:99")
    assert reach(lab.ns["www"], lab.ip4["up"], 80) == "connected"
    assert bridge_filter(lab.host, dict(args, state="absent"), backend=backend).changed
    assert kernel.anything_ours(lab.host) == []
    # ebtables-nft made table bridge filter for our chains (it was not there before): it goes with them
    assert "bridge filter" not in nft_tables(lab.host)
