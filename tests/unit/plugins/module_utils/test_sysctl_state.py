"""SysctlState over a scratch /proc/sys, and engine.converge with states (order, check mode, rollback)."""

from __future__ import annotations

import dataclasses
import os

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils import engine, model, sysctl_state
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError
from ansible_collections.paranoid.netconfine.plugins.module_utils.sysctl_state import SysctlState

BRIDGE = "net/bridge/bridge-nf-call-iptables"
FORWARD = "net/ipv4/ip_forward"


@pytest.fixture(autouse=True)
def lock_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "LOCK_DIR", str(tmp_path / "lock"))
    real = engine.host_lock
    monkeypatch.setattr(engine, "host_lock", lambda timeout, lock_dir=None: real(timeout, str(tmp_path / "lock")))


class Kernel:
    """A scratch /proc/sys; ``modules`` maps a module name to the keys (and values) loading it creates."""

    def __init__(self, root, values, modules=None):
        self.root = root
        self.modules = modules or {}
        self.calls = []
        for key, value in values.items():
            self.set(key, value)

    def set(self, key, value):
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")

    def get(self, key):
        path = self.root / key
        return path.read_text().strip() if path.exists() else None

    def __call__(self, argv, data=None):
        self.calls.append(argv)
        if argv[-1] not in self.modules:
            return 1, "", "modprobe: FATAL: Module %s not found" % argv[-1]
        for key, value in self.modules[argv[-1]].items():
            self.set(key, value)
        return 0, "", ""


class Recorder:
    """A netfilter backend that owns one value; records the order of applies."""

    name = "fake"

    def __init__(self, log, fail=False):
        self.log, self.fail, self.value = log, fail, "old"

    def units(self, policy):
        return ("u",)

    def read(self, unit):
        return self.value

    def owned(self, read, policy, unit):
        return {"t": _Text(read)}

    def render(self, policy, unit):
        return {"t": _Text("new" if policy.present else "gone")}

    def script(self, read, current, desired, restore_jumps=None):
        return desired["t"].text

    def apply(self, unit, script):
        self.log.append("netfilter")
        if self.fail and script == "new":
            raise NetconfineError("injected", "backend")
        self.value = script


@dataclasses.dataclass(frozen=True)
class _Text:
    text: str

    def lines(self):
        return [self.text]


def policy(present=True, **values):
    resources = tuple(sysctl_state.Sysctl(key.replace("__", "/"), value, module="br_netfilter", field="bridge")
                      for key, value in values.items())
    return model.Policy("t", present=present, resources=resources)


def state(kernel):
    return SysctlState(kernel, modprobe="/sbin/modprobe", proc_sys=str(kernel.root))


def test_set_reports_change_and_reads_back(tmp_path):
    kernel = Kernel(tmp_path, {FORWARD: "0"})
    seam = state(kernel)
    pol = model.Policy("t", resources=(sysctl_state.Sysctl(FORWARD, "1"),))
    result = engine.converge(pol, [Recorder([])], states=[seam], check_mode=True)
    assert result["changed"] and kernel.get(FORWARD) == "0"
    assert result["scripts"]["sysctl kernel"] == "net.ipv4.ip_forward = 1\n"
    assert engine.converge(pol, [Recorder([])], states=[seam])["changed"]
    assert kernel.get(FORWARD) == "1"
    backend = Recorder([])
    backend.value = "new"
    again = engine.converge(pol, [backend], states=[seam])
    assert not again["changed"]
    assert "net.ipv4.ip_forward = 1" in again["rendered"]["sysctl kernel"]


def test_missing_key_loads_the_module_first(tmp_path):
    kernel = Kernel(tmp_path, {}, modules={"br_netfilter": {BRIDGE: "0"}})
    seam = state(kernel)
    pol = model.Policy("t", resources=(sysctl_state.Sysctl(BRIDGE, "1", module="br_netfilter", field="bridge"),))
    checked = engine.converge(pol, [Recorder([])], states=[seam], check_mode=True)
    assert checked["scripts"]["sysctl kernel"] == "modprobe br_netfilter\nnet.bridge.bridge-nf-call-iptables = 1\n"
    assert kernel.calls == [] and kernel.get(BRIDGE) is None
    engine.converge(pol, [Recorder([])], states=[seam])
    assert kernel.calls == [["/sbin/modprobe", "br_netfilter"]] and kernel.get(BRIDGE) == "1"


@pytest.mark.parametrize("modules, message", [
    ({}, "modprobe br_netfilter failed"),
    ({"br_netfilter": {}}, "does not exist on this host (module br_netfilter did not create it)"),
])
def test_cannot_ensure_fails_naming_the_field_and_rolls_back(tmp_path, modules, message):
    kernel = Kernel(tmp_path, {FORWARD: "0"}, modules=modules)
    seam = state(kernel)
    pol = model.Policy("t", resources=(sysctl_state.Sysctl(FORWARD, "1"),
                                       sysctl_state.Sysctl(BRIDGE, "1", module="br_netfilter", field="bridge")))
    backend = Recorder([])
    with pytest.raises(NetconfineError) as err:
        engine.converge(pol, [backend], states=[seam])
    assert message in str(err.value) and err.value.field == "bridge"
    assert backend.value == "old"            # states go first: no rule applied while bypassed
    assert kernel.get(FORWARD) == "0"         # and what the state had written is put back


def test_states_before_rules_when_present_after_when_absent(tmp_path):
    kernel = Kernel(tmp_path, {FORWARD: "0"})
    log = []

    class Logged(SysctlState):
        def apply(self, unit, script):
            log.append("state")
            super().apply(unit, script)

    seam = Logged(kernel, proc_sys=str(tmp_path))
    engine.converge(model.Policy("t", resources=(sysctl_state.Sysctl(FORWARD, "1"),)), [Recorder(log)], states=[seam])
    assert log == ["state", "netfilter"]


def test_absent_leaves_sysctls_as_they_are(tmp_path):
    kernel = Kernel(tmp_path, {FORWARD: "1"})
    pol = model.Policy("t", present=False, resources=(sysctl_state.Sysctl(FORWARD, "1"),))
    backend = Recorder([])
    backend.value = "gone"
    result = engine.converge(pol, [backend], states=[state(kernel)])
    assert not result["changed"] and kernel.get(FORWARD) == "1"


def test_failed_rules_roll_the_state_back(tmp_path):
    kernel = Kernel(tmp_path, {FORWARD: "0"})
    with pytest.raises(NetconfineError) as err:
        engine.converge(model.Policy("t", resources=(sysctl_state.Sysctl(FORWARD, "1"),)), [Recorder([], fail=True)],
                        states=[state(kernel)])
    assert err.value.details["rolled_back"] == ["sysctl kernel", "fake u"]
    assert kernel.get(FORWARD) == "0"


def test_no_resources_no_unit(tmp_path):
    assert state(Kernel(tmp_path, {})).units(model.Policy("t")) == ()


def test_kernel_module_is_read_from_sys_module_loaded_with_modprobe_and_persisted_as_a_modprobe_line(tmp_path):
    sys_module = tmp_path / "sys-module"
    sys_module.mkdir()

    def modprobe(argv, data=None):
        (sys_module / argv[-1]).mkdir()
        return 0, "", ""

    seam = SysctlState(modprobe, modprobe="/sbin/modprobe", proc_sys=str(tmp_path / "proc"),
                       sys_module=str(sys_module), lib_modules=str(tmp_path / "lib-modules"))
    pol = model.Policy("t", resources=(sysctl_state.KernelModule("nf_conntrack_bridge", field="bridge_form"),))
    checked = engine.converge(pol, [Recorder([])], states=[seam], check_mode=True)
    assert checked["scripts"]["sysctl kernel"] == "modprobe nf_conntrack_bridge\n"
    assert "module nf_conntrack_bridge = (not loaded)" in checked["diff"]["before"]
    assert not (sys_module / "nf_conntrack_bridge").exists()
    assert engine.converge(pol, [Recorder([])], states=[seam])["changed"]
    assert (sys_module / "nf_conntrack_bridge").is_dir()
    again = engine.converge(pol, [Recorder([])], states=[seam])
    assert again["rendered"]["sysctl kernel"] == "module nf_conntrack_bridge = loaded\n"
    assert not [u for u in again["scripts"] if u.startswith("sysctl")]
    assert seam.boot_script(seam.render(pol, "kernel")) == "modprobe nf_conntrack_bridge\n"


def test_kernel_module_built_in_counts_as_loaded_and_a_failed_modprobe_names_the_field(tmp_path):
    lib = tmp_path / "lib-modules" / os.uname()[2]
    lib.mkdir(parents=True)
    (lib / "modules.builtin").write_text("kernel/net/bridge/netfilter/nf_conntrack_bridge.ko\n")
    seam = SysctlState(lambda argv, data=None: (1, "", "FATAL"), modprobe="/sbin/modprobe",
                       sys_module=str(tmp_path / "none"), lib_modules=str(tmp_path / "lib-modules"))
    pol = model.Policy("t", resources=(sysctl_state.KernelModule("nf_conntrack_bridge", field="bridge_form"),))
    checked = engine.converge(pol, [Recorder([])], states=[seam], check_mode=True)
    assert "sysctl kernel" not in checked["scripts"] and "loaded" in checked["rendered"]["sysctl kernel"]
    other = model.Policy("t", resources=(sysctl_state.KernelModule("nf_nope", field="bridge_form"),))
    with pytest.raises(NetconfineError) as failure:
        engine.converge(other, [Recorder([])], states=[seam])
    assert failure.value.field == "bridge_form" and "modprobe nf_nope failed" in str(failure.value)
