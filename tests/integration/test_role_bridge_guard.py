"""Role paranoid.netconfine.bridge_guard through ansible-playbook on a bridging-host namespace.

The README's example (the seed's DNS guest and an anti-spoofed second guest), applied with the role:
check mode, apply, check mode and apply again report exactly; the DNS guest's services are as
declared, a spoofed source is dropped; bridge_guard_verify's probes run with --tags verify (and a
mismatch fails); bad variables are refused by argument_specs; absent removes
everything.
"""

from __future__ import annotations

import textwrap

import pytest
import yaml

import bridgehost
import nchelpers
from bridgehost import reach, serve
from nchelpers import SYSTEM_PYTHON, ansible_playbook, run

KERNEL = bridgehost.Kernel("nftables")     # the role's default backend is auto: nftables here
PLAY = yaml.safe_dump([{"hosts": "all", "gather_facts": False,
                        "roles": [{"role": "paranoid.netconfine.bridge_guard"}]}])


def role(ns, extra_vars, check=False, expect_failure=False, args=()):
    result = ansible_playbook(PLAY, [ns], extra_vars=extra_vars, check=check, args=args)
    assert (result.rc != 0) is expect_failure, result.output
    return result


def changed(result, ns):
    return result.stats[ns]["changed"]


def test_role_readme_example_idempotent_and_behaving(cleanup):
    lab = bridgehost.build(cleanup, {"dns": "uml-conn0", "www": "uml-conn1", "up": "up0"})
    serve(cleanup, lab.ns["dns"], 22, 53, 80)
    serve(cleanup, lab.ns["up"], 80)
    guests = [
        {"name": "dns", "port": "uml-conn0", "addresses": [lab.ip4["dns"]],
         "inbound": [{"protocol": "udp", "port": "53"}, {"protocol": "tcp", "port": "53"}],
         "outbound": [{"protocol": "udp", "port": "53", "to": [lab.ip4["up"]]}],
         "host_access": [{"protocol": "tcp", "port": "22"}]},
        {"name": "www", "port": "uml-conn1", "addresses": [lab.ip4["www"]]},
    ]
    extra = {"bridge_guard_guests": guests, "bridge_guard_ip_version": "ipv4"}
    before = KERNEL.snapshot(lab.host)
    assert changed(role(lab.host, extra, check=True), lab.host) == 1
    assert KERNEL.snapshot(lab.host) == before, "check mode changed the kernel"
    assert changed(role(lab.host, extra), lab.host) == 1
    assert changed(role(lab.host, extra, check=True), lab.host) == 0
    assert changed(role(lab.host, extra), lab.host) == 0

    assert reach(lab.ns["www"], lab.ip4["dns"], 53) == "connected"
    assert reach(lab.ns["www"], lab.ip4["dns"], 80) == "timeout"
    run("ip", "-n", lab.ns["www"], "addr", "add", "198.51.100.99/24", "dev", "eth0")
    assert reach(lab.ns["www"], lab.ip4["up"], 80) == "connected"
    assert reach(lab.ns["www"], lab.ip4["up"], 80, source="198.51.100.99") == "timeout"

    # bridge_guard_verify: probes from the bridging host, with --tags verify only they run (and change nothing)
    probes = [{"name": "ssh", "host": lab.ip4["dns"], "port": 22, "expect": "allowed"},
              {"name": "http", "host": lab.ip4["dns"], "port": 80, "timeout": 1.5, "expect": "timeout"}]
    state = KERNEL.snapshot(lab.host)
    verified = role(lab.host, dict(extra, bridge_guard_verify=probes), args=("--tags", "verify"))
    outcomes = {p["name"]: p["outcome"] for p in
                verified.task(lab.host, "paranoid.netconfine.bridge_guard : Probe the guests from the bridging host").result["probes"]}
    assert outcomes == {"ssh": "connected", "http": "timeout"}, verified.output
    assert changed(verified, lab.host) == 0 and KERNEL.snapshot(lab.host) == state
    wrong = [dict(probes[1], expect="allowed")]            # a probe that differs fails the host
    failed = role(lab.host, dict(extra, bridge_guard_verify=wrong), args=("--tags", "verify"), expect_failure=True)
    assert "http" in failed.output, failed.output

    bad = dict(extra, bridge_guard_guests=[dict(guests[1], allow_dhcp_server="maybe")])
    failed = role(lab.host, bad, expect_failure=True)
    assert "allow_dhcp_server" in failed.output and "Validating arguments" in failed.output, failed.output
    assert KERNEL.snapshot(lab.host) == state
    assert changed(role(lab.host, dict(extra, bridge_guard_state="absent")), lab.host) == 1
    assert KERNEL.anything_ours(lab.host) == []


# --------------------------------------------------------------------------- the lab's umlhost, both backends

LAB_VARS = nchelpers.ROOT / "playbooks" / "lab" / "host_vars"
_BANNER = textwrap.dedent("""
    import select, socket
    socks = []
    for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        s = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((address, 22))
        s.listen(8)
        socks.append(s)
    print("ready", flush=True)
    while True:
        for s in select.select(socks, [], [])[0]:
            conn = s.accept()[0]
            conn.sendall(b"SSH-2.0-nct\\r\\n")
            conn.close()
""")


def lab_umlhost() -> tuple[dict, dict]:
    """umlhost's and dmzclient's host_vars from the lab, as scripts/lab converges them."""
    return tuple(yaml.safe_load((LAB_VARS / name).read_text()) for name in ("umlhost.yml", "dmzclient.yml"))


@pytest.mark.parametrize("backend", ["iptables", "auto"])
def test_lab_umlhost_vars_converge_idempotent_and_behave_on_both_backends(cleanup, backend):
    """The lab's own umlhost variables (without scripts/lab: veth guests stand for the UML guests, with their
    addresses and MACs), on the backend the lab uses (auto: nftables here) and on iptables."""
    host_vars, dmz_vars = lab_umlhost()
    members = {"dns": "uml-conn0", "www": "uml-conn1", "dmz": "dmz0"}
    lab = bridgehost.BridgeHost(cleanup.enter_context(nchelpers.netns()), {}, dict(members), {}, {})
    guests = {g["name"]: g for g in host_vars["lab_uml_guests"]}
    for name in members:
        lab.ns[name] = cleanup.enter_context(nchelpers.netns())
        addresses = guests[name]["addresses"] if name in guests else dmz_vars["lab_interfaces"][0]["addresses"]
        lab.ip4[name], lab.ip6[name] = (a.split("/")[0] for a in addresses)
    bridgehost.wire(lab)
    for address in [i for i in host_vars["lab_interfaces"] if i["name"] == "br0"][0]["addresses"]:
        if address != bridgehost.HOST4 + "/24":
            run("ip", "-n", lab.host, "addr", "add", address, "dev", "br0", "nodad")
    for name, guest in guests.items():
        run("ip", "-n", lab.ns[name], "link", "set", "eth0", "address", guest["mac"])
    serve(cleanup, lab.ns["dns"], 53, 80)
    serve(cleanup, lab.ns["dmz"], 80)
    cleanup.enter_context(nchelpers.daemon(lab.ns["dns"], SYSTEM_PYTHON, "-c", _BANNER, ready="ready"))
    extra = {k: v for k, v in host_vars.items() if k.startswith("bridge_guard_")}
    assert extra["bridge_guard_backend"] == "auto", "the lab's umlhost runs the role's default backend"
    extra["bridge_guard_backend"] = backend
    expect = KERNEL if backend == "auto" else bridgehost.Kernel("iptables")

    assert changed(role(lab.host, extra, check=True), lab.host) == 1
    applied = role(lab.host, extra)
    assert changed(applied, lab.host) == 1
    assert applied.task(lab.host, "paranoid.netconfine.bridge_guard : Anti-spoofing and per-guest service policy "
                        "for every bridged guest").result["backend"] == ("nftables" if backend == "auto" else backend)
    assert changed(role(lab.host, extra, check=True), lab.host) == 0
    assert changed(role(lab.host, extra), lab.host) == 0
    assert expect.ours(lab.host) and not bridgehost.Kernel(
        "iptables" if backend == "auto" else "nftables").ours(lab.host)

    # the lab's rows, from veth guests: DNS in from the DMZ and from www, www's own outbound only, a forged source
    for family in ("ip4", "ip6"):
        dns = getattr(lab, family)["dns"]
        assert reach(lab.ns["dmz"], dns, 53, "udp") == "connected", family
        assert reach(lab.ns["www"], dns, 53) == "connected", family
        assert reach(lab.ns["dmz"], dns, 22) == "timeout", family
        assert reach(lab.ns["www"], getattr(lab, family)["dmz"], 80) == "timeout", family
    run("ip", "-n", lab.ns["www"], "addr", "add", "198.51.100.99/24", "dev", "eth0")
    assert reach(lab.ns["www"], lab.ip4["dns"], 53, source="198.51.100.99") == "timeout"
    # bridge_guard_verify, the lab's probes from umlhost itself (SSH to the DNS guest only)
    verified = role(lab.host, extra, args=("--tags", "verify"))
    probes = verified.task(lab.host, "paranoid.netconfine.bridge_guard : Probe the guests from the bridging host")
    assert [p["outcome"] for p in probes.result["probes"]] == ["connected", "connected", "timeout", "timeout"], \
        verified.output
    assert changed(role(lab.host, dict(extra, bridge_guard_state="absent")), lab.host) == 1
    assert KERNEL.anything_ours(lab.host) == []
