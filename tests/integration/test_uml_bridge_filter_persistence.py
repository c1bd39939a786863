"""uml_bridge_filter with persist: true, on both backends: after a "reboot" of the bridging host the
bridge sysctls (and br_netfilter), the anti-spoofing (L3, and L2: the bridge table on nftables, the
ebtables chains on iptables) and the service policy come back from what the module wrote,
before the bridge and its ports exist again (netconfine-restore runs
before network-pre.target), and nothing else is touched.

The reboot is as in test_persistence.py: the host namespace is deleted and created again under the
same name (br0, its ports, every rule and the sysctls gone), bridge-nf-call-iptables starts at 0 as
on a host where nothing set it yet, a foreign rule is put in, netconfine-restore NAME runs, then the
host's network setup makes br0 and the guests' veths again.
"""

from __future__ import annotations

import os

import pytest

import bridgehost
from bridgehost import Kernel, reach, serve
from nchelpers import boot_restore, reboot, run
from test_uml_bridge_filter import MACS, SPOOF4, bridge_filter, bridge_sysctl, seed_args, set_bridge_sysctl


@pytest.fixture
def lab(cleanup):
    return bridgehost.build(cleanup, {"dns": "uml-conn0", "www": "uml-conn1", "up": "up0"})


def set_macs(lab):
    for name, mac in MACS.items():
        run("ip", "-n", lab.ns[name], "link", "set", "eth0", "address", mac)


def policy_lines(kernel, ns):
    """What the task owns, without the record of a table the first run made (the boot restore makes none)."""
    return [line for line in kernel.ours(ns) if "NC-made-this-table" not in line]


@pytest.mark.parametrize("backend", bridgehost.BACKENDS)
def test_bridge_policy_sysctls_and_module_come_back_after_reboot(lab, cleanup, tmp_path, backend):
    kernel = Kernel(backend)
    persist_dir = tmp_path / "netconfine"
    set_macs(lab)
    args = seed_args(lab, persist=True, persist_dir=str(persist_dir))
    for guest in args["guests"]:
        guest["mac"] = MACS[guest["name"]]
    first = bridge_filter(lab.host, args, backend=backend)
    task_dir = persist_dir / "netns" / lab.host
    assert first.result["persisted"]["dir"] == str(task_dir)
    files = sorted(p.name for p in task_dir.iterdir())
    assert files == (["umlhost.ebtables-bridge", "umlhost.iptables-4", "umlhost.iptables-6", "umlhost.sysctl-kernel"]
                     if backend == "iptables" else
                     ["umlhost.nftables-bridge", "umlhost.nftables-ruleset", "umlhost.sysctl-kernel"]), files
    sysctls = (task_dir / "umlhost.sysctl-kernel").read_text()
    # br_netfilter is built into this kernel (notes/test-hosts.md): no modprobe line, which would fail at boot
    loadable = os.path.exists("/sys/module/br_netfilter/initstate")
    assert sysctls.splitlines() == (["modprobe br_netfilter"] if loadable else []) + [
        "net.bridge.bridge-nf-call-ip6tables = 1", "net.bridge.bridge-nf-call-iptables = 1"], sysctls
    applied = policy_lines(kernel, lab.host)
    assert [line for line in applied if "l2" in line], applied       # the L2 part is in what comes back

    # reboot: everything of the host namespace is gone, the sysctl is not set yet, another tool boots first
    reboot(lab.host)
    set_bridge_sysctl(lab.host, 4, "0")
    run("iptables", "-A", "FORWARD", "-s", "192.0.2.7", "-j", "DROP", ns=lab.host)
    assert kernel.anything_ours(lab.host) == []
    boot_restore(persist_dir, lab.host)
    assert bridge_sysctl(lab.host, 4) == "1" and bridge_sysctl(lab.host, 6) == "1"
    assert policy_lines(kernel, lab.host) == applied
    assert "-A FORWARD -s 192.0.2.7/32 -j DROP" in run("iptables-save", ns=lab.host).stdout
    bridgehost.wire(lab)
    set_macs(lab)

    # the policy behaves as before: services as declared, spoofing (L3 and L2) dropped
    serve(cleanup, lab.ns["up"], 80, 53)
    serve(cleanup, lab.ns["dns"], 53)
    assert reach(lab.ns["dns"], lab.ip4["up"], 53) == "connected"
    assert reach(lab.ns["dns"], lab.ip4["up"], 80) == "timeout"
    assert reach(lab.ns["www"], lab.ip4["dns"], 53) == "connected"
    run("ip", "-n", lab.ns["www"], "addr", "add", SPOOF4 + "/24", "dev", "eth0")
    assert reach(lab.ns["www"], lab.ip4["up"], 80, source=SPOOF4) == "timeout"
    run("ip", "-n", lab.ns["www"], "link", "set", "eth0", "address", "52:54:00:00:00:99")
    run("ip", "-n", lab.ns["www"], "neigh", "flush", "dev", "eth0")
    assert reach(lab.ns["www"], lab.ip4["up"], 80) == "timeout", "a changed MAC passed after the reboot"
    run("ip", "-n", lab.ns["www"], "link", "set", "eth0", "address", MACS["www"])

    # everything came back: the converge after boot has nothing to do
    again = bridge_filter(lab.host, args, backend=backend)
    assert not again.changed, again.result.get("diff")
    gone = bridge_filter(lab.host, dict(args, state="absent"), backend=backend)
    assert gone.changed
    assert not task_dir.exists() or not list(task_dir.iterdir())
