"""Role paranoid.netconfine.bridge_guard through ansible-playbook on a bridging-host namespace.

The README's example (the seed's DNS guest and an anti-spoofed second guest), applied with the role:
check mode, apply, check mode and apply again report exactly; the DNS guest's services are as
declared, a spoofed source is dropped; bridge_guard_verify's probes run with --tags verify (and a
mismatch fails); bad variables are refused by argument_specs; absent removes
everything.
"""

from __future__ import annotations

import yaml

import bridgehost
from bridgehost import reach, serve
from nchelpers import ansible_playbook, run

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
