"""SystemdUnits over a scratch unit directory and a fake systemctl (engine contract: check mode,
exact changed, restart on change, absent), plus the model's sandbox and network checks."""

from __future__ import annotations

import dataclasses

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils import engine, model, netns_model, sysctl_state, systemd_units
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError
from ansible_collections.paranoid.netconfine.plugins.module_utils.netns_launcher import NetnsLauncher

NS = netns_model.Netns(name="web", host_link="vh-web", peer_link="vn-web", host_addresses=("192.0.2.1/30",),
                       peer_addresses=("192.0.2.2/30",), gateways=("192.0.2.1",))
DAEMON = netns_model.Launcher(namespace="web", path="/x/ns-web", exec_path="/usr/bin/python3",
                              args=("-m", "http.server", "10105"), user="www-data", uid=33, gid=33, group="www-data",
                              working_directory="/srv", environment=(("LANG", "C.UTF-8"), ("MSG", 'say "%d"')),
                              sandbox=(("IPAddressAllow", ("192.0.2.0/30",)), ("IPAddressDeny", ("any",))))


@pytest.fixture(autouse=True)
def lock_dir(tmp_path, monkeypatch):
    real = engine.host_lock
    monkeypatch.setattr(engine, "host_lock", lambda timeout, lock_dir=None: real(timeout, str(tmp_path / "lock")))


class Systemctl:
    """A fake systemctl: enabled/active sets; ``version``; every call recorded."""

    def __init__(self, version=252, fail=()):
        self.enabled, self.active, self.calls, self.version, self.fail = set(), set(), [], version, fail
        self.invocations = {}

    def __call__(self, argv, data=None):
        verb, args = argv[1], argv[2:]
        self.calls.append(" ".join(argv[1:]))
        if verb in self.fail:
            return 1, "", "Job for %s failed." % args[0]
        if verb == "--version":
            return 0, "systemd %d (%d.1-1)\n+PAM +AUDIT\n" % (self.version, self.version), ""
        if verb == "is-enabled":
            return (0, "enabled\n", "") if args[0] in self.enabled else (1, "disabled\n", "")
        if verb == "is-active":
            return (0, "active\n", "") if args[0] in self.active else (3, "inactive\n", "")
        if verb == "enable":
            self.enabled.add(args[0])
        elif verb == "disable":
            self.enabled.discard(args[0])
        elif verb in ("start", "restart"):
            self.active.add(args[0])
            self.invocations[args[0]] = self.invocations.get(args[0], 0) + 1
        elif verb == "show" and args[:3] == ["-p", "InvocationID", "--value"]:
            return 0, ("%032x\n" % self.invocations.get(args[3], 0)) if args[3] in self.active else "\n", ""
        elif verb == "stop":
            self.active.discard(args[0])
        return 0, "", ""

    def acts(self):
        return [c for c in self.calls if not c.startswith(("is-", "--version", "show "))]


def policy(present=True, launcher=DAEMON, ns=NS):
    resources = (ns,) + ((launcher,) if launcher else ())
    return model.Policy(name="netns-web", present=present, resources=resources)


def converge(state, pol, check=False):
    return engine.converge(pol, [NoRules()], check_mode=check, states=[state])


class NoRules:
    name = "iptables"

    def units(self, policy):
        return ()


def make(tmp_path, systemctl, restore="/etc/netconfine/netconfine-restore"):
    (tmp_path / "units").mkdir(exist_ok=True)
    return systemd_units.SystemdUnits(systemctl, "/bin/systemctl", ip="/usr/sbin/ip", restore=restore,
                                      unit_dir=str(tmp_path / "units"))


def test_namespace_unit_builds_with_the_links_commands_and_restores_inside_rules():
    text = systemd_units.render_namespace_unit(NS, "/usr/sbin/ip", "/etc/netconfine/netconfine-restore")
    assert "Type=oneshot\nRemainAfterExit=yes\n" in text
    assert "ExecStart=/bin/sh -ec 'test -e /run/netns/web && exit 0; \\\n  /usr/sbin/ip netns add web; \\\n" in text
    for command in ("/usr/sbin/ip -n web link set lo up",
                    "/usr/sbin/ip link add vh-web type veth peer name vn-web netns web",
                    "/usr/sbin/ip addr add 192.0.2.1/30 dev vh-web",
                    "/usr/sbin/ip -n web route replace default via 192.0.2.1 dev vn-web",
                    "/bin/sh /etc/netconfine/netconfine-restore web'"):
        assert command in text
    assert "ExecStop=-/usr/sbin/ip link delete vh-web\nExecStop=-/usr/sbin/ip netns delete web\n" in text
    assert "After=netconfine-restore.service" in text


def test_namespace_unit_sets_the_veth_sysctls_once_the_veth_exists(tmp_path):
    state = make(tmp_path, Systemctl())
    localnet = sysctl_state.Sysctl("net/ipv4/conf/vh-web/route_localnet", "1", link="vh-web")
    pol = model.Policy(name="netns-web", resources=(NS, sysctl_state.Sysctl("net/ipv4/ip_forward", "1"), localnet))
    state.units(pol)
    text = dict(f[1].split("\n", 1) for f in state.render(pol, "web")["web"].facts if f[0] == "file")
    unit = text[str(tmp_path / "units" / "netconfine-ns-web.service")]
    assert "dev vn-web; \\\n  echo 1 > /proc/sys/net/ipv4/conf/vh-web/route_localnet; \\\n" in unit
    assert "ip_forward" not in unit


def test_loopback_only_namespace_unit_has_no_links():
    bare = netns_model.Netns(name="conv")
    text = systemd_units.render_namespace_unit(bare, "/usr/sbin/ip")
    assert "ip netns add conv; \\\n  /usr/sbin/ip -n conv link set lo up'" in text
    assert "veth" not in text and "netconfine-restore " not in text and "link delete" not in text


def test_daemon_unit_text():
    text = systemd_units.render_daemon_unit(DAEMON)
    for line in ("BindsTo=netconfine-ns-web.service", "After=netconfine-ns-web.service",
                 'ExecStart="/usr/bin/python3" "-m" "http.server" "10105"',
                 "NetworkNamespacePath=/run/netns/web", "User=www-data", "Group=www-data", "PrivateTmp=yes",
                 "NoNewPrivileges=yes", "WorkingDirectory=/srv", 'Environment="LANG=C.UTF-8"',
                 'Environment="MSG=say \\"%%d\\""', "IPAddressAllow=192.0.2.0/30", "IPAddressDeny=any"):
        assert line + "\n" in text


def test_contract_check_apply_idempotent_then_absent(tmp_path):
    ctl = Systemctl()
    state = make(tmp_path, ctl)
    first = converge(state, policy(), check=True)
    assert first["changed"] and not list((tmp_path / 'units').iterdir()) and ctl.acts() == []
    assert "NetworkNamespacePath=/run/netns/web" in first["diff"]["after"]
    applied = converge(state, policy())
    assert applied["scripts"] == first["scripts"]
    assert ctl.acts() == ["daemon-reload", "enable netconfine-ns-web.service", "enable netconfine-web.service",
                          "start netconfine-ns-web.service", "start netconfine-web.service"]
    assert sorted(p.name for p in (tmp_path / 'units').iterdir() if p.suffix == ".service") == [
        "netconfine-ns-web.service", "netconfine-web.service"]
    ctl.calls = []
    for check in (True, False):
        assert not converge(state, policy(), check=check)["changed"]
    assert ctl.acts() == []
    gone = converge(state, policy(present=False))
    assert gone["changed"]
    assert ctl.acts() == ["stop netconfine-web.service", "stop netconfine-ns-web.service",
                          "disable netconfine-web.service", "disable netconfine-ns-web.service", "daemon-reload"]
    assert not [p for p in (tmp_path / 'units').iterdir() if p.suffix == ".service"]
    assert not converge(state, policy(present=False))["changed"]


def test_changed_daemon_unit_restarts_it_changed_namespace_unit_only_reloads(tmp_path):
    ctl = Systemctl()
    state = make(tmp_path, ctl)
    converge(state, policy())
    ctl.calls = []
    converge(state, policy(launcher=dataclasses.replace(DAEMON, args=("-m", "http.server", "8080"))))
    assert ctl.acts() == ["daemon-reload", "restart netconfine-web.service"]
    ctl.calls = []
    converge(state, policy(launcher=dataclasses.replace(DAEMON, args=("-m", "http.server", "8080")),
                           ns=dataclasses.replace(NS, gateways=())))
    assert ctl.acts() == ["daemon-reload"]


def test_restart_restarts_an_active_daemon_once_check_mode_predicts_it(tmp_path):
    """restart (the role's handler): the daemon's invocation of the run's first read is due; a restart makes a
    new one, so the read-back converges; the namespace unit is left alone."""
    ctl = Systemctl()
    converge(make(tmp_path, ctl), policy())
    ctl.calls = []
    state = systemd_units.SystemdUnits(ctl, "/bin/systemctl", ip="/usr/sbin/ip", unit_dir=str(tmp_path / "units"),
                                       restore="/etc/netconfine/netconfine-restore", restart=True)
    checked = converge(state, policy(), check=True)
    assert checked["changed"] and ctl.acts() == []
    assert "netconfine-web.service: restart due" in checked["diff"]["before"]
    state._before = {}
    assert converge(state, policy())["changed"] and ctl.acts() == ["restart netconfine-web.service"]
    ctl.calls = []
    assert not converge(make(tmp_path, ctl), policy())["changed"] and ctl.acts() == []


def test_drift_stopped_daemon_is_started(tmp_path):
    ctl = Systemctl()
    state = make(tmp_path, ctl)
    converge(state, policy())
    ctl.active.discard("netconfine-web.service")
    ctl.calls = []
    result = converge(state, policy())
    assert result["changed"] and ctl.acts() == ["start netconfine-web.service"]


def test_start_failure_names_the_unit_and_rolls_back(tmp_path):
    ctl = Systemctl(fail=("start",))
    state = make(tmp_path, ctl)
    with pytest.raises(NetconfineError) as caught:
        converge(state, policy())
    assert "systemctl start netconfine-ns-web.service failed" in str(caught.value)
    assert caught.value.field == "service"
    assert not [p for p in (tmp_path / 'units').iterdir() if p.suffix == ".service"]


@pytest.mark.parametrize("directive,option,since", [("SocketBindAllow", "socket_bind_allow", 249),
                                                    ("RestrictNetworkInterfaces", "restrict_network_interfaces", 250)])
def test_old_systemd_refuses_newer_settings_naming_the_field(tmp_path, directive, option, since):
    ctl = Systemctl(version=247)
    state = make(tmp_path, ctl)
    daemon = dataclasses.replace(DAEMON, sandbox=((directive, ("any",)),))
    with pytest.raises(NetconfineError) as caught:
        converge(state, policy(launcher=daemon), check=True)
    assert caught.value.field == "service.%s" % option
    assert "systemd %d" % since in str(caught.value) and "systemd 247" in str(caught.value)
    assert not list((tmp_path / 'units').iterdir())


def test_launcher_refuses_sandbox_without_systemd():
    state = NetnsLauncher(lambda argv, data=None: (0, "", ""), "ip")
    pol = policy()
    state.units(pol)
    with pytest.raises(NetconfineError) as caught:
        state.render(pol, "web")
    assert caught.value.field == "service.ip_address_allow"


@pytest.mark.parametrize("raw,field", [
    ({"ip_address_allow": ["192.0.2.1/24"]}, "service.ip_address_allow[0]"),
    ({"ip_address_deny": ["any\nExecStartPre=/bin/sh"]}, "service.ip_address_deny[0]"),
    ({"socket_bind_allow": ["tcp:70000"]}, "service.socket_bind_allow[0]"),
    ({"socket_bind_deny": ["sctp:1"]}, "service.socket_bind_deny[0]"),
    ({"restrict_address_families": ["AF_INET", "inet6"]}, "service.restrict_address_families[1]"),
    ({"restrict_address_families": ["AF_INET", "~AF_INET6"]}, "service.restrict_address_families"),
    ({"restrict_network_interfaces": ["a" * 16]}, "service.restrict_network_interfaces[0]"),
])
def test_sandbox_bad_input_names_the_field(raw, field):
    with pytest.raises(NetconfineError) as caught:
        netns_model.sandbox(raw)
    assert caught.value.field == field


def test_sandbox_canonical():
    assert netns_model.sandbox({"ip_address_allow": ["localhost", "192.0.2.0/30", "fd00::1"],
                                "socket_bind_allow": ["ipv4:tcp:10105", "udp:1000-2000"],
                                "restrict_address_families": ["AF_UNIX", "AF_INET"]}) == (
        ("IPAddressAllow", ("localhost", "192.0.2.0/30", "fd00::1")),
        ("SocketBindAllow", ("ipv4:tcp:10105", "udp:1000-2000")),
        ("RestrictAddressFamilies", ("AF_UNIX", "AF_INET")))


@pytest.mark.parametrize("extra,field", [
    ({"subnet": "192.0.2.0/30"}, "subnet"),
    ({"port_forwards": [{"host_port": 80}]}, "port_forwards"),
    ({"dns": ["192.0.2.53"]}, "dns"),
    ({"egress": []}, "egress"),
    ({"outbound_interface": "eth0"}, "outbound_interface"),
])
def test_network_none_refuses_link_options(extra, field):
    params = dict({"name": "conv", "state": "present", "network": "none"}, **extra)
    with pytest.raises(NetconfineError) as caught:
        netns_model.build_policy(params)
    assert caught.value.field == field


def test_network_none_is_loopback_only_without_rules():
    pol = netns_model.build_policy({"name": "conv", "state": "present", "network": "none"})
    assert pol.chains == ()
    ns = [r for r in pol.resources if isinstance(r, netns_model.Netns)]
    assert ns == [netns_model.Netns(name="conv", field="name")]
    assert not [r for r in pol.resources if isinstance(r, sysctl_state.Sysctl)]


def test_network_veth_needs_subnet():
    with pytest.raises(NetconfineError) as caught:
        netns_model.build_policy({"name": "web", "state": "present", "network": "veth"})
    assert caught.value.field == "subnet"
