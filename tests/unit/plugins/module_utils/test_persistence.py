"""PersistState over a scratch directory with a fake seam: what is written, kept and removed."""

from __future__ import annotations

import dataclasses
import json
import os

from ansible_collections.paranoid.netconfine.plugins.module_utils import model
from ansible_collections.paranoid.netconfine.plugins.module_utils.persistence import UNIT, PersistState


@dataclasses.dataclass(frozen=True)
class _Text:
    text: str

    def lines(self):
        return [self.text]


class Seam:
    name = "fake"

    def units(self, policy):
        return (4, 6)

    def render(self, policy, unit):
        return {"t": _Text("%s %s" % (policy.name, unit))} if unit == 4 else {}

    def script(self, tables, current, desired, restore_jumps=None):
        return "restore %s\n" % desired["t"].text if desired else ""


def converge(state, policy):
    read = state.read(UNIT)
    script = state.script(read, state.owned(read, policy, UNIT), state.render(policy, UNIT))
    if script:
        state.apply(UNIT, script)
    return script


def test_writes_one_file_per_unit_with_text_and_the_restore_script(tmp_path):
    state = PersistState([Seam()], str(tmp_path), "host", unit_dir=str(tmp_path / "systemd"))
    script = converge(state, model.Policy("a"))
    plan = json.loads(script)
    assert sorted(plan["write"]) == sorted([str(tmp_path / "host" / "a.fake-4"), str(tmp_path / "netconfine-restore"),
                                            str(tmp_path / "systemd" / "netconfine-restore.service"),
                                            str(tmp_path / "systemd" / "multi-user.target.wants" /
                                                "netconfine-restore.service")])
    assert (tmp_path / "host" / "a.fake-4").read_text() == "restore a 4\n"
    assert oct(os.stat(tmp_path / "host" / "a.fake-4").st_mode & 0o777) == "0o600"
    assert os.access(tmp_path / "netconfine-restore", os.X_OK)
    assert os.readlink(tmp_path / "systemd" / "multi-user.target.wants" / "netconfine-restore.service") == \
        str(tmp_path / "systemd" / "netconfine-restore.service")
    assert "ExecStart=/bin/sh %s" % (tmp_path / "netconfine-restore") in \
        (tmp_path / "systemd" / "netconfine-restore.service").read_text()
    assert converge(state, model.Policy("a")) == ""            # second run: nothing to do


def test_absent_removes_the_tasks_files_only(tmp_path):
    state = PersistState([Seam()], str(tmp_path), "netns/x")
    converge(state, model.Policy("a"))
    converge(state, model.Policy("a.b"))
    plan = json.loads(converge(state, model.Policy("a", present=False)))
    assert plan == {"write": {}, "remove": [str(tmp_path / "netns" / "x" / "a.fake-4")]}
    assert sorted(os.listdir(tmp_path / "netns" / "x")) == ["a.b.fake-4"]
    assert (tmp_path / "netconfine-restore").exists()
    assert converge(state, model.Policy("a", present=False)) == ""


def test_no_namespace_name_no_unit(tmp_path):
    assert PersistState([Seam()], str(tmp_path), None).units(model.Policy("a")) == ()


def test_the_boot_file_leaves_out_the_sysctls_of_a_veth_the_namespace_unit_creates(tmp_path):
    """netconfine-restore runs before netns_service's veth exists: route_localnet is the namespace unit's."""
    from ansible_collections.paranoid.netconfine.plugins.module_utils.netns_model import build_policy
    from ansible_collections.paranoid.netconfine.plugins.module_utils.sysctl_state import SysctlState

    policy = build_policy({"name": "web", "state": "present", "subnet": "192.0.2.0/30",
                           "port_forwards": [{"protocol": "tcp", "host_port": 10105}],
                           "allow_localhost_forward": True})
    sysctl = SysctlState(None, proc_sys=str(tmp_path / "proc"))
    assert sysctl.units(policy) == ("kernel",)
    state = PersistState([sysctl], str(tmp_path), "host")
    converge(state, policy)
    assert (tmp_path / "host" / "netns-web.sysctl-kernel").read_text() == "net.ipv4.ip_forward = 1\n"
    # the live run still sets it (what the engine applies is the full script)
    live = sysctl.script({}, sysctl.owned({}, policy, "kernel"), sysctl.render(policy, "kernel"))
    assert "net.ipv4.conf.vh-web.route_localnet = 1" in live


def test_if_pre_up_hook_written_with_the_first_task_and_removed_with_the_last(tmp_path):
    hook = tmp_path / "if-pre-up.d" / "netconfine"
    state = PersistState([Seam()], str(tmp_path), "host", boot_hook="if-pre-up", hook_path=str(hook))
    plan = json.loads(converge(state, model.Policy("a")))
    assert str(hook) in plan["write"] and os.access(hook, os.X_OK)
    text = hook.read_text()
    assert '[ "${IFACE:-}" = lo ] || exit 0' in text and "/bin/sh %s/netconfine-boot" % tmp_path in text
    assert not (tmp_path / "systemd").exists()
    assert converge(state, model.Policy("a")) == ""
    other = PersistState([Seam()], str(tmp_path), "netns/x", boot_hook="if-pre-up", hook_path=str(hook))
    converge(other, model.Policy("b"))                         # another task, another namespace
    assert json.loads(converge(state, model.Policy("a", present=False)))["remove"] == [
        str(tmp_path / "host" / "a.fake-4")]                    # the hook stays for b
    assert hook.exists()
    plan = json.loads(converge(other, model.Policy("b", present=False)))
    assert sorted(plan["remove"]) == [str(hook), str(tmp_path / "netns" / "x" / "b.fake-4")]
    assert not hook.exists() and converge(other, model.Policy("b", present=False)) == ""


def test_rc_local_line_before_exit_and_only_ours_removed(tmp_path):
    rc = tmp_path / "rc.local"
    rc.write_text("#!/bin/sh -e\necho admin\nexit 0\n")
    state = PersistState([Seam()], str(tmp_path), "host", boot_hook="rc.local", hook_path=str(rc))
    converge(state, model.Policy("a"))
    lines = rc.read_text().splitlines()
    assert lines[:2] == ["#!/bin/sh -e", "echo admin"] and lines[3] == "exit 0"
    assert lines[2].startswith("/bin/sh %s/netconfine-boot " % tmp_path)
    assert converge(state, model.Policy("a")) == ""
    rc.write_text(rc.read_text().replace("netconfine-boot ||", "netconfine-boot  ||"))   # drift
    assert converge(state, model.Policy("a")) and rc.read_text().count("paranoid.netconfine") == 1
    converge(state, model.Policy("a", present=False))
    assert rc.read_text() == "#!/bin/sh -e\necho admin\nexit 0\n"
    # a missing rc.local is created executable, and removed again when only ours was in it
    rc.unlink()
    converge(state, model.Policy("a"))
    assert os.access(rc, os.X_OK) and rc.read_text().splitlines()[-1] == "exit 0"
    converge(state, model.Policy("a", present=False))
    assert not rc.exists()


def test_boot_hook_none_removes_our_hooks_and_writes_no_unit(tmp_path, monkeypatch):
    from ansible_collections.paranoid.netconfine.plugins.module_utils import persistence

    hook = tmp_path / "if-pre-up.d" / "netconfine"
    monkeypatch.setitem(persistence.HOOK_PATHS, "if-pre-up", str(hook))
    monkeypatch.setitem(persistence.HOOK_PATHS, "rc.local", str(tmp_path / "rc.local"))
    converge(PersistState([Seam()], str(tmp_path), "host", boot_hook="if-pre-up"), model.Policy("a"))
    assert hook.exists()
    plan = json.loads(converge(PersistState([Seam()], str(tmp_path), "host", boot_hook="none"), model.Policy("a")))
    assert plan["remove"] == [str(hook)] and not hook.exists()
