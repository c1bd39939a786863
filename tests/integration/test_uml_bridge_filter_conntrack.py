"""uml_bridge_filter's pure bridge-family (conntrack) form, for real: a User-Mode-Linux guest is the bridging host.

This machine's kernel has no nf_conntrack_bridge (here ``bridge_form: auto`` keeps the marks form, which
test_uml_bridge_filter.py proves); Debian 12's UML kernel (linux.uml 6.1) builds it, and only the bridge family
of nf_tables. So the guest, booted with scripts/uml-guest (no network device, this machine's file system as its
read-only root, a writable results directory, UML's modules loadable on demand), runs
tests/integration/uml_conntrack_host.py: br0 with three veth-attached namespace guests, the module through
ansible-playbook (local connection) in the guest, the kernel's state and real TCP connections measured there.
This test asserts on what the guest measured (facts.json): one test function per booted guest, so xdist never
splits a guest. It fails, never skips, when the guest cannot boot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import nchelpers
from nchelpers import ROOT, SYSTEM_PYTHON

UML_GUEST = ROOT / "scripts" / "uml-guest"
HOST_SCRIPT = ROOT / "tests" / "integration" / "uml_conntrack_host.py"
GUEST_TIMEOUT = 900      # measured: 2 min 48 s for the whole guest on 2 shared cores


def require_uml() -> None:
    """Fail (never skip) with the reason when this host cannot run UML guests."""
    try:
        nchelpers.uml_kernel()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


def boot_bridging_host() -> tuple[dict, str, float]:
    """Boot the guest, run the bridging host in it; (facts, console, seconds)."""
    workdir = Path(tempfile.mkdtemp(prefix="nct-umlct-", dir="/tmp"))
    os.chmod(workdir, 0o755)
    out = workdir / "out"
    out.mkdir()
    argv = ["bash", str(UML_GUEST), "boot", "-", "-", str(workdir / "guest"), "--mem", "1024M",
            "--writable", str(out), "--modules", "--", SYSTEM_PYTHON, str(HOST_SCRIPT), str(out)]
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=GUEST_TIMEOUT,
                              start_new_session=True, check=False)
        console = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        console = "(killed after %ss)\n%s" % (GUEST_TIMEOUT, exc.stdout or "")
    finally:
        subprocess.run(["bash", str(UML_GUEST), "stop", str(workdir / "guest")], check=False, capture_output=True)
    took = time.monotonic() - start
    facts_file = out / "facts.json"
    facts = json.loads(facts_file.read_text()) if facts_file.exists() else {}
    shutil.rmtree(workdir, ignore_errors=True)
    if "uname" not in facts:
        pytest.fail("the UML bridging host did not boot or did not run its script:\n%s" % console[-4000:], pytrace=False)
    return facts, console, took


def test_conntrack_form_in_a_uml_bridging_host(capsys):
    require_uml()
    facts, console, took = boot_bridging_host()
    with capsys.disabled():
        print("\nUML bridging host: %.0f s; ansible-playbook runs: %s" % (took, ", ".join(
            "%s %.1fs" % (k, v["seconds"]) for k, v in facts.items() if isinstance(v, dict) and "seconds" in v)))
    where = "\n".join(line for line in console.splitlines() if line.startswith("RESULT"))[-6000:]
    assert "error" not in facts and facts.get("done"), where

    # control: without rules everything flows (so the timeouts below are the policy's)
    assert set(facts["control"].values()) == {"connected"}, facts["control"]
    assert facts["kernel_before"]["tables"] == [] and "nf_conntrack_bridge" not in facts["kernel_before"]["modules"]

    # check -> apply -> check -> apply: exact changed, check mode predicts and changes nothing
    check, apply, check2, apply2 = (facts[k] for k in ("check", "apply", "check_again", "apply_again"))
    assert check["changed"] and check["rc"] == 0, check
    assert facts["check_left_ruleset_alone"]
    assert apply["changed"] and apply["stats_changed"] == 1, apply
    assert apply["scripts"] == check["scripts"], "check mode did not predict the run"
    assert not check2["changed"] and check2["scripts"] == {}, check2
    assert not apply2["changed"] and apply2["stats_changed"] == 0, apply2
    for run in (check, apply, check2, apply2):
        assert run["bridge_form"] == "conntrack" and run["backend"] == "nftables", run

    # the kernel: the policy in bridge chains with ct state, nothing in inet, nf_conntrack_bridge, no br_netfilter
    after = facts["kernel_after"]
    assert after["tables"] == ["bridge netconfine"], after
    assert "nf_conntrack_bridge" in after["modules"] and "br_netfilter" not in after["modules"], after
    assert not after["proc_sys_net_bridge"] and not after["br_netfilter"], after
    table = facts["table"]
    bases = {c: rules[0] for c, rules in table.items() if not c.startswith("NC-")}
    assert sorted(bases) == ["bridge_forward", "bridge_input", "bridge_output", "bridge_prerouting"], table
    policy = {c.rsplit(".", 1)[1]: rules for c, rules in table.items() if c.count(".") and "-dns" in c}
    for kind in ("from-dns", "to-dns", "hostin-dns", "hostout-dns"):
        assert policy[kind][0].startswith("ct state established,related "), (kind, policy[kind])
        assert policy[kind][-1].endswith(" drop"), (kind, policy[kind])
    assert "tcp dport 22 accept" in policy["hostout-dns"] and "tcp dport 8053 accept" in policy["hostin-dns"]
    dispatch = " ".join(r for c, rules in table.items() for r in rules if c.endswith((".forward", ".input", ".output")))
    assert '"uml-conn0" : jump' in dispatch and "meta mark" not in json.dumps(table), table
    assert not any("-www" in c and c.rsplit(".", 1)[1].startswith(("from", "to", "host")) for c in table)
    assert "sysctl kernel" in apply["rendered"] and "module nf_conntrack_bridge = loaded" in apply["rendered"]["sysctl kernel"]
    assert facts["persisted"]["host/umlhost.sysctl-kernel"] == "modprobe nf_conntrack_bridge\n", facts["persisted"]

    # behaviour: declared services connect (with an echo back: established replies pass) in both directions
    seen = facts["behaviour"]
    for name in ("www-dns-53", "www-dns6-53", "up-dns-53",              # dns inbound
                 "dns-up-53", "dns-up6-53", "dns-up-514",                # dns outbound
                 "host-dns-22", "host-dns6-22",                          # host_access
                 "dns-host-8053", "dns-host6-8053",                      # host_services
                 "www-up-80", "host-www-80"):                            # www has no service policy
        assert seen[name] == "connected", (name, seen)
    for name in ("www-dns-80", "up-dns-22", "dns-up-80", "dns-up6-514", "dns-www-80", "host-dns-80", "dns-host-8054"):
        assert seen[name] == "timeout", (name, seen)
    for chain, (before, after_) in facts["drops"].items():
        assert after_ > before, (chain, facts["drops"])
    assert facts["spoofing"] == {"spoof-dns-53": "timeout", "spoof6-dns-53": "timeout"}, facts["spoofing"]

    # forms: marks cannot be held by this kernel (no inet family): a clear failure, nothing changed
    marks = facts["forced_marks"]
    assert marks["failed"] and marks["field"] == "bridge_form", marks
    assert "no nf_tables for the inet family" in marks["msg"] and "Operation not supported" in marks["msg"], marks
    assert facts["forced_marks_left_ruleset_alone"]
    assert not facts["forced_conntrack"]["changed"] and facts["forced_conntrack"]["bridge_form"] == "conntrack"

    # another tool loads br_netfilter (the Docker case): nothing to repair, the same behaviour
    assert facts["br_netfilter_loaded_by_hand"]["br_netfilter"]
    assert not facts["apply_with_br_netfilter"]["changed"], facts["apply_with_br_netfilter"]
    assert facts["behaviour_with_br_netfilter"] == seen

    # state: absent removes everything of ours (table, persisted files); again: no change
    assert facts["absent"]["changed"] and not facts["absent_again"]["changed"]
    assert facts["table_absent"] == {} and facts["kernel_absent"]["tables"] == []
    assert not any(k.startswith("host/umlhost") for k in facts["persisted_absent"]), facts["persisted_absent"]

    # the iptables backend there: nf_tables has no ip family, so the rules go to iptables-legacy (same behaviour);
    # the run that switches back to nftables (conntrack) removes them, and absent leaves nothing
    iptables = facts["iptables"]
    assert iptables["changed"] and iptables["backend"] == "iptables" and iptables["rc"] == 0, iptables
    assert "-m physdev --physdev-in uml-conn0 -j NC-umlhost-from-dns-" in facts["iptables_legacy_save"]
    assert facts["iptables_behaviour"] == seen
    switch = facts["switch_to_nftables"]
    assert switch["changed"] and switch["bridge_form"] == "conntrack", switch
    assert {"iptables 4", "iptables 6", "nftables bridge"} <= set(switch["scripts"]), switch["scripts"]
    assert "NC-" not in facts["iptables_legacy_save_after_switch"], facts["iptables_legacy_save_after_switch"]
    assert facts["switch_absent"]["changed"] and facts["kernel_end"]["tables"] == []
