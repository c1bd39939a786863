"""persist: true, for real, on both backends: what a task applied comes back after its namespace is
recreated empty (the way a reboot loses it) and ``netconfine-restore NAME`` runs, and nothing else.

A "reboot" here: the host namespace is deleted and created again under the same name (every rule,
chain and table gone, counters reset), a foreign rule is put in as another tool's boot would, then
the restore script the module wrote is run. Then: the policy behaves as before (a non-root
connection to the guarded port is refused, root's is accepted), the foreign rule is intact, and a
second converge reports ``changed=false``. Check mode writes nothing; ``state: absent`` removes the
task's files and leaves another task's; ``persist: false`` writes none.

The restore unit's ordering at a real boot under systemd is proven in the systemd tier.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from nchelpers import ansible_playbook, boot_restore, connect_as, iptables_save, run

OWNER_RULE = "paranoid.netconfine.owner_rule"
PORT = 992
GUARD = {"protocol": "tcp", "destination": "localhost", "destination_port": str(PORT), "uid_owner": "!root",
         "jump": "REJECT"}


def converge(ns, persist_dir, backend, *, name="guard", state="present", check=False, persist=True, **options):
    task = dict({"name": name, "backend": backend, "state": state, "persist": persist, "persist_dir": str(persist_dir),
                 "rules": [GUARD] if state == "present" else []}, **options)
    play = yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": [{OWNER_RULE: task}]}])
    result = ansible_playbook(play, [ns], check=check)
    (res,) = [r for r in result.results[ns] if r.action == OWNER_RULE]
    assert not res.failed, result.output
    return res


def reboot(ns):
    """Lose everything the kernel held for ns, as a reboot does; keep its name (and so its files)."""
    run("ip", "netns", "del", ns)
    run("ip", "netns", "add", ns)
    run("ip", "link", "set", "lo", "up", ns=ns)


def foreign_rule(ns):
    run("iptables", "-A", "OUTPUT", "-p", "udp", "--dport", "5353", "-j", "DROP", ns=ns)


def kernel_text(ns, backend):
    if backend == "iptables":
        return iptables_save(ns, 4) + iptables_save(ns, 6)
    return run("nft", "list", "table", "inet", "netconfine", ns=ns, check=False).stdout


@pytest.fixture
def persist_dir(tmp_path):
    return tmp_path / "netconfine"


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_policy_comes_back_after_reboot(netns_host, listener, make_user, persist_dir, backend):
    ns = netns_host
    user = make_user()
    task_dir = persist_dir / "netns" / ns

    checked = converge(ns, persist_dir, backend, check=True)
    assert checked.changed and not persist_dir.exists()          # check mode writes nothing

    first = converge(ns, persist_dir, backend)
    assert first.changed and first.result["persisted"]["dir"] == str(task_dir)
    files = sorted(p.name for p in task_dir.iterdir())
    assert files == (["guard.iptables-4", "guard.iptables-6"] if backend == "iptables"
                     else ["guard.nftables-ruleset"])
    applied = kernel_text(ns, backend)
    assert not converge(ns, persist_dir, backend).changed

    reboot(ns)
    assert "netconfine" not in kernel_text(ns, backend)
    foreign_rule(ns)
    boot_restore(persist_dir, ns)

    assert "-A OUTPUT -p udp -m udp --dport 5353 -j DROP" in iptables_save(ns, 4)   # foreign rule intact
    listener(ns, PORT)
    for host in ("127.0.0.1", "::1"):
        assert not connect_as(ns, user, host, PORT), host
        assert connect_as(ns, "root", host, PORT), host
    again = converge(ns, persist_dir, backend)
    assert not again.changed, again.result.get("diff")
    assert _counters_zero(kernel_text(ns, backend)) == _counters_zero(applied)


def _counters_zero(text):
    """Our policy's lines (chains, jumps, table) with counters zeroed: a reboot resets counters.

    The record of a table our restore created (NC-made-this-table) is not policy: a table made by
    the boot restore carries none (docs/backends.md)."""
    return [re.sub(r"\[\d+:\d+\]", "[0:0]", line) for line in text.splitlines()
            if ("NC-" in line or "netconfine" in line) and "NC-made-this-table" not in line]


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_absent_removes_only_its_own_files(netns_host, persist_dir, backend):
    ns = netns_host
    converge(ns, persist_dir, backend, name="keep")
    converge(ns, persist_dir, backend, name="keep.more")
    task_dir = persist_dir / "netns" / ns
    before = dict((p.name, p.read_text()) for p in task_dir.iterdir())
    gone = converge(ns, persist_dir, backend, name="keep", state="absent")
    assert gone.changed
    after = dict((p.name, p.read_text()) for p in task_dir.iterdir())
    assert after == dict((k, v) for k, v in before.items() if k.startswith("keep.more."))
    assert after
    assert (persist_dir / "netconfine-restore").exists()          # serves the other task
    assert not converge(ns, persist_dir, backend, name="keep", state="absent").changed


def test_persist_false_writes_nothing(netns_host, persist_dir):
    converge(netns_host, persist_dir, "iptables", persist=False)
    assert not persist_dir.exists()


def test_a_persisted_file_edited_by_hand_is_drift(netns_host, persist_dir):
    ns = netns_host
    converge(ns, persist_dir, "iptables")
    path = Path(persist_dir / "netns" / ns / "guard.iptables-4")
    path.write_text("*filter\nCOMMIT\n")
    repaired = converge(ns, persist_dir, "iptables")
    assert repaired.changed and "--uid-owner 0" in path.read_text()


def _output_jumps(ns):
    return [line for line in iptables_save(ns, 4).splitlines() if line.startswith("-A OUTPUT ")]


@pytest.mark.parametrize("other", ["inserts", "appends"])
def test_a_tool_starting_after_the_boot_restore(netns_host, persist_dir, other):
    """Issue 21's ordering hazard: netconfine-restore puts our jump (position: first) back before Docker
    and the like start; such a tool then adds its own jump to the same built-in chain. One that inserts
    it first (as dockerd does with ``-I FORWARD -j DOCKER-USER``; owner_rule lives in OUTPUT, so the
    test's tool uses OUTPUT) puts it above ours: the next converge reports that as drift (ours really
    moved) and puts ours first again, the other jump kept. One that appends leaves ours first: the next
    converge changes nothing."""
    ns = netns_host

    def converge_first():
        return converge(ns, persist_dir, "iptables", name="first", position="first", ip_version="ipv4")

    assert converge_first().changed
    ours = _output_jumps(ns)
    assert len(ours) == 1 and "NC-" in ours[0], ours

    reboot(ns)
    boot_restore(persist_dir, ns)
    assert _output_jumps(ns) == ours
    run("iptables", "-N", "TOOL-USER", ns=ns)                     # the other tool starts after the restore
    run("iptables", "-I" if other == "inserts" else "-A", "OUTPUT", "-j", "TOOL-USER", ns=ns)
    tool = "-A OUTPUT -j TOOL-USER"
    assert _output_jumps(ns) == ([tool] + ours if other == "inserts" else ours + [tool])

    again = converge_first()
    assert again.changed is (other == "inserts"), again.result.get("diff")
    assert _output_jumps(ns) == ours + [tool]                     # ours first, the other tool's kept
    assert not converge_first().changed
