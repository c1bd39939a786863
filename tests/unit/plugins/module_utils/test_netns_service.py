"""netns_service: the model (errors naming fields), NAT rendering on both backends, the links state over a fake ip."""

from __future__ import annotations

import json

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils import (
    iptables_render, model, netns_links, netns_model, nft_render, sysctl_state)
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError
from ansible_collections.paranoid.netconfine.plugins.module_utils.netns_model import build_policy


def params(**extra):
    out = {"name": "web", "state": "present", "subnet": "192.0.2.0/30", "subnet6": None, "host_address": None,
           "namespace_address": None, "outbound_interface": "eth0", "dns": [], "allow_localhost_forward": False,
           "port_forwards": [{"protocol": "tcp", "host_port": 10105, "port": None, "from": None,
                              "host_address": None}], "ip_version": "both"}
    out.update(extra)
    return out


def fwd(**extra):
    out = {"protocol": "tcp", "host_port": 10105, "port": None, "from": None, "host_address": None}
    out.update(extra)
    return out


@pytest.mark.parametrize("extra, field", [
    ({"name": "../x"}, "name"), ({"name": "a/b"}, "name"), ({"name": "a b"}, "name"),
    ({"name": "abcdefghijklm"}, "name"), ({"name": "Web"}, "name"),
    ({"subnet": "192.0.2.1/30"}, "subnet"), ({"subnet": "192.0.2.0/31"}, "subnet"),
    ({"subnet": "fd00::/64"}, "subnet"), ({"subnet": "1.2.3/24"}, "subnet"),
    ({"subnet6": "fd00::/48"}, "subnet6"), ({"host_address": "192.0.2.3"}, "host_address"),
    ({"namespace_address": "192.0.2.1"}, "namespace_address"),
    ({"port_forwards": [fwd(host_port=0)]}, "port_forwards[0].host_port"),
    ({"port_forwards": [fwd(port=65536)]}, "port_forwards[0].port"),
    ({"port_forwards": [fwd(), fwd()]}, "port_forwards[1].host_port"),
    ({"port_forwards": [fwd(host_address="127.0.0.1")]}, "port_forwards[0].host_address"),
    ({"port_forwards": [fwd(**{"from": ["!192.0.2.9"]})]}, "port_forwards[0].from"),
    ({"dns": ["192.0.2.300"]}, "dns[0]"), ({"outbound_interface": "vh-web"}, "outbound_interface"),
    ({"subnet": None}, "port_forwards"), ({"ip_version": "ipv6"}, "ip_version"),
])
def test_bad_input_names_the_field(extra, field):
    with pytest.raises(NetconfineError) as err:
        build_policy(params(**extra))
    assert err.value.field == field


def rules(policy, table, family):
    out = []
    for chain in policy.chains_for(family):
        if chain.table == table:
            out += iptables_render.render_chain(chain)
    return out


def test_seed_rules_on_iptables():
    policy = build_policy(params(allow_localhost_forward=True))
    nat = rules(policy, "nat", 4)
    assert [r.split(" ", 2)[2] for r in nat] == [
        "-p tcp -m addrtype --dst-type LOCAL -m tcp --dport 10105 -j DNAT --to-destination 192.0.2.2:10105",
        "-p tcp -m addrtype --dst-type LOCAL -m tcp --dport 10105 -j DNAT --to-destination 192.0.2.2:10105",
        "-s 192.0.2.2/32 -o eth0 -j MASQUERADE",
        "-s 127.0.0.0/8 -o vh-web -j MASQUERADE",
    ]
    assert [r.split(" ", 2)[2] for r in rules(policy, "filter", 4)] == [
        "-d 192.0.2.2/32 -o vh-web -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-d 192.0.2.2/32 -o vh-web -p tcp -m tcp --dport 10105 -m conntrack --ctstate DNAT -j ACCEPT",
        "-s 192.0.2.2/32 -i vh-web -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-s 192.0.2.2/32 -i vh-web -o eth0 -j ACCEPT",
        "-i vh-web -j DROP",
        "-o vh-web -j DROP",
    ]
    sysctls = [r for r in policy.resources if isinstance(r, sysctl_state.Sysctl)]
    assert [(s.key, s.value) for s in sysctls] == [("net/ipv4/ip_forward", "1"),
                                                   ("net/ipv4/conf/vh-web/route_localnet", "1")]


def test_loopback_excluded_from_output_dnat_unless_allowed_and_ipv6_in_brackets():
    policy = build_policy(params(subnet6="fd00:19::/64"))
    output = [c for c in policy.chains if c.hook.builtin == "OUTPUT"][0]
    texts = iptables_render.render_chain(output)
    assert texts[0].split(" ", 2)[2].startswith("! -d 127.0.0.0/8 -p tcp -m addrtype")
    assert texts[1].endswith("-j DNAT --to-destination [fd00:19::2]:10105")
    assert texts[1].split(" ", 2)[2].startswith("! -d ::1/128 ")


def test_nft_forms_of_nat():
    policy = build_policy(params(port_forwards=[fwd(port=80, **{"from": ["198.51.100.0/24"]})]))
    chains = dict((c.hook.builtin, c) for c in policy.chains)
    pre = [nft_render.format_rule(r) for _n, rs in nft_render.render_chain(chains["PREROUTING"]) for r in rs]
    assert pre == ["ip saddr 198.51.100.0/24 fib daddr type local tcp dport 10105 dnat ip to 192.0.2.2:80"]
    post = [nft_render.format_rule(r) for _n, rs in nft_render.render_chain(chains["POSTROUTING"]) for r in rs]
    assert post == ['oifname "eth0" ip saddr 192.0.2.2 masquerade']
    fwd_rules = [nft_render.format_rule(r) for _n, rs in nft_render.render_chain(chains["FORWARD"]) for r in rs]
    assert fwd_rules[-2:] == ['meta nfproto ipv4 iifname "vh-web" counter drop', 'meta nfproto ipv4 oifname "vh-web" counter drop']
    both = build_policy(params(subnet6="fd00:19::/64"))
    fwd6 = [c for c in both.chains if c.hook.builtin == "FORWARD"][0]
    assert [nft_render.format_rule(r) for _n, rs in nft_render.render_chain(fwd6) for r in rs][-2:] == [
        'iifname "vh-web" counter drop', 'oifname "vh-web" counter drop']   # the two families' copies pair into one inet rule
    assert nft_render.base_chain("nat", "PREROUTING") == ("nat_prerouting", "nat", "prerouting", -101)


def test_loopback_only_namespace_has_no_rules_and_no_links():
    policy = build_policy(params(subnet=None, port_forwards=[], outbound_interface=None))
    assert policy.chains == ()
    (ns,) = [r for r in policy.resources if isinstance(r, netns_model.Netns)]
    assert ns.host_link is None
    (inside,) = [r for r in policy.resources if isinstance(r, netns_model.InsideNetns)]
    assert not inside.policy.present          # no egress declared: the namespace's netfilter is left alone
    assert netns_links.desired_facts(ns) == (("netns", "web"), ("lo", "web"))


# --------------------------------------------------------------------------- the links state over a fake ip

class FakeIp:
    """Answers the reads of NetnsLinks from a dict of argv tail -> JSON; records every command."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, argv, data=None):
        self.calls.append(argv[1:])
        key = " ".join(argv[1:])
        if key in self.answers:
            return 0, json.dumps(self.answers[key]), ""
        if "show" in argv or "list" in argv:
            return 1, "", "Device does not exist"
        return 0, "", ""


def state(answers, tmp_path):
    ip = FakeIp(answers)
    links = netns_links.NetnsLinks(ip, "/sbin/ip", etc_netns=str(tmp_path), mountinfo=str(tmp_path / "none"))
    policy = build_policy(params(dns=["192.0.2.53"]))
    (unit,) = links.units(policy)
    return links, policy, unit, ip


def test_empty_host_gets_everything_in_order(tmp_path):
    links, policy, unit, _ip = state({"-j netns list": [], "-4 -j route show": [], "-6 -j route show": []}, tmp_path)
    read = links.read(unit)
    script = links.script(read, links.owned(read, policy, unit), links.render(policy, unit))
    assert script.splitlines() == [
        "ip netns add web", "ip -n web link set lo up",
        "ip link add vh-web type veth peer name vn-web netns web",
        "ip link set vh-web up", "ip -n web link set vn-web up",
        "ip addr add 192.0.2.1/30 dev vh-web", "ip -n web addr add 192.0.2.2/30 dev vn-web",
        "ip -n web route replace default via 192.0.2.1 dev vn-web", "write-resolv.conf web 192.0.2.53"]
    links.apply(unit, script)
    assert (tmp_path / "web" / "resolv.conf").read_text().endswith("nameserver 192.0.2.53\n")


def converged_answers():
    host = {"ifname": "vh-web", "ifindex": 7, "link_index": 2, "flags": ["UP"], "linkinfo": {"info_kind": "veth"},
            "addr_info": [{"local": "192.0.2.1", "prefixlen": 30, "scope": "global"},
                          {"local": "fe80::1", "prefixlen": 64, "scope": "link"}]}
    peer = {"ifname": "vn-web", "ifindex": 2, "link_index": 7, "flags": ["UP"], "linkinfo": {"info_kind": "veth"},
            "addr_info": [{"local": "192.0.2.2", "prefixlen": 30, "scope": "global"}]}
    lo = {"ifname": "lo", "ifindex": 1, "flags": ["LOOPBACK", "UP"]}
    return {"-j netns list": [{"name": "web2"}, {"name": "web"}],
            "-j -d addr show dev vh-web": [host], "-n web -j -d addr show": [lo, peer],
            "-n web -4 -j route show default": [{"dst": "default", "gateway": "192.0.2.1", "dev": "vn-web"}],
            "-4 -j route show": [{"dst": "192.0.2.0/30", "dev": "vh-web"}], "-6 -j route show": []}


def test_converged_host_needs_nothing_and_drift_only_what_differs(tmp_path):
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "resolv.conf").write_text("nameserver 192.0.2.53\n")
    answers = converged_answers()
    links, policy, unit, _ip = state(answers, tmp_path)
    read = links.read(unit)
    assert links.owned(read, policy, unit) == links.render(policy, unit)
    answers["-j -d addr show dev vh-web"][0]["addr_info"] = []
    read = links.read(unit)
    script = links.script(read, links.owned(read, policy, unit), links.render(policy, unit))
    assert script == "ip addr add 192.0.2.1/30 dev vh-web\n"


def test_absent_deletes_the_namespace_and_resolv_conf_only(tmp_path):
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "resolv.conf").write_text("nameserver 192.0.2.53\n")
    links, policy, unit, _ip = state(converged_answers(), tmp_path)
    read = links.read(unit)
    gone = links.render(model.Policy("netns-web", present=False, resources=policy.resources), unit)
    # the pair by its host end first: synchronous, where the namespace's own teardown is not
    assert links.script(read, links.owned(read, policy, unit), gone).splitlines() == [
        "remove-resolv.conf web", "ip link delete vh-web", "ip netns delete web"]


def test_absent_tolerates_a_pair_already_gone_with_its_namespace(tmp_path):
    """Under systemd the namespace unit's ExecStop has deleted the namespace; its pair may be gone by the time
    the link is deleted. A delete that fails while the link still exists is an error."""
    links, _policy, unit, ip = state(converged_answers(), tmp_path)
    links.run = lambda argv, data=None: (ip(argv, data) if argv[1:3] != ["link", "delete"]
                                         else (1, "", "Cannot find device"))
    links.apply(unit, "ip link delete vh-web\n")          # 'link show dev vh-web' fails too: gone
    ip.answers["link show dev vh-web"] = [{"ifname": "vh-web"}]
    with pytest.raises(NetconfineError) as err:
        links.apply(unit, "ip link delete vh-web\n")
    assert "ip link delete vh-web failed" in str(err.value)


def test_subnet_overlapping_a_host_route_is_refused(tmp_path):
    answers = converged_answers()
    answers["-4 -j route show"] = [{"dst": "192.0.2.0/29", "dev": "vh-other"}]
    links, _policy, unit, _ip = state(answers, tmp_path)
    with pytest.raises(NetconfineError) as err:
        links.read(unit)
    assert err.value.field == "subnet" and "vh-other" in str(err.value)


def test_refuses_to_create_a_namespace_from_a_slave_mount_namespace(tmp_path):
    links, policy, unit, ip = state({"-j netns list": [], "-4 -j route show": [], "-6 -j route show": []},
                                    tmp_path)
    (tmp_path / "mountinfo").write_text(
        "48 1 254:0 / / rw,relatime master:1 - ext4 /dev/vda rw\n")
    links.mountinfo = str(tmp_path / "mountinfo")
    with pytest.raises(NetconfineError) as err:
        links.apply(unit, "ip netns add web\n")
    assert "slave" in str(err.value)
    assert ip.calls == []


def test_egress_rules_inside_the_namespace():
    policy = build_policy(params(subnet6="fd00:19::/64", egress=[
        {"destination": ["198.51.100.20", "fd00:20::20"], "protocol": "tcp", "port": "5432"}]))
    (inside,) = [r for r in policy.resources if isinstance(r, netns_model.InsideNetns)]
    assert inside.namespace == "web" and inside.policy.present
    (chain,) = inside.policy.chains
    assert chain.hook.builtin == "OUTPUT"
    assert [r.split(" ", 2)[2] for r in iptables_render.render_chain(
        inside.policy.chains_for(4)[0])] == [
        "-o lo -j ACCEPT", "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-d 198.51.100.20/32 -p tcp -m tcp --dport 5432 -j ACCEPT",
        "-j REJECT --reject-with icmp-port-unreachable"]


@pytest.mark.parametrize("item, field", [
    ({"destination": ["nope..x"]}, "egress[0].destination"),
    ({"destination": ["198.51.100.20"], "port": "53"}, "egress[0].port"),
    ({"destination": ["198.51.100.20"], "protocol": "tcp", "port": "99999"}, "egress[0].port"),
    ({"destination": ["fd00::1"]}, "egress[0].destination"),
])
def test_bad_egress_names_the_field(item, field):
    with pytest.raises(NetconfineError) as err:
        build_policy(params(egress=[item]))
    assert err.value.field == field


# --------------------------------------------------------------------------- the launcher

def launcher(**extra):
    values = dict(namespace="web", path="/usr/local/libexec/netconfine/ns-web", exec_path="/usr/sbin/my daemon",
                  args=("--port", "10105", "it's"), user="www-data", uid=33, gid=33, home="/var/www",
                  working_directory="/var/www", environment=(("MODE", "a b"),), private_tmp=True, start=True)
    values.update(extra)
    return netns_model.Launcher(**values)


def test_launcher_script_quotes_everything_and_drops_privileges():
    from ansible_collections.paranoid.netconfine.plugins.module_utils.netns_launcher import render_script
    text = render_script(launcher())
    lines = text.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert "    exec ip netns exec web env NETCONFINE_LAUNCHER=web unshare --mount --propagation private -- " \
           "/usr/local/libexec/netconfine/ns-web \"$@\"" in lines
    assert "mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp" in lines
    assert lines[-1] == ("exec setpriv --reuid 33 --regid 33 --init-groups --no-new-privs -- env -i "
                         "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/var/www "
                         "USER=www-data LOGNAME=www-data NETCONFINE_LAUNCHER=web MODE='a b' '/usr/sbin/my daemon' "
                         "--port 10105 'it'\"'\"'s'")
    assert "tmpfs" not in render_script(launcher(private_tmp=False))


def test_launcher_script_verbs(tmp_path):
    from ansible_collections.paranoid.netconfine.plugins.module_utils import netns_launcher
    state = netns_launcher.NetnsLauncher(lambda argv, data=None: (0, "", ""), "/sbin/ip")
    item = launcher(path=str(tmp_path / "ns-web"))
    policy = model.Policy("netns-web", resources=(item,))
    (unit,) = state.units(policy)
    empty = {"facts": (), "pids": []}
    want = state.render(policy, unit)
    assert state.script(empty, {}, want) == "install %s\nstart %s\n" % (item.path, item.path)
    running = netns_launcher.LauncherState(want[unit].facts)
    assert state.script(empty, {unit: running}, want) == ""
    stale = netns_launcher.LauncherState((("script", "%s\nold\n" % item.path), ("running", "yes")))
    assert state.script(empty, {unit: stale}, want).splitlines() == [
        "stop %s" % item.path, "install %s" % item.path, "start %s" % item.path]
    gone = state.render(model.Policy("netns-web", present=False, resources=(item,)), unit)
    assert state.script(empty, {unit: running}, gone).splitlines() == ["stop %s" % item.path,
                                                                       "remove %s" % item.path]


@pytest.mark.parametrize("service, field", [
    ({"exec": "bin/x", "user": "nobody"}, "service.exec"),
    ({"exec": "/a/../b", "user": "nobody"}, "service.exec"),
    ({"exec": "/bin/true", "user": "nct_nobody_here"}, "service.user"),
    ({"exec": "/bin/true", "user": "root"}, "service.user"),
    ({"exec": "/bin/true", "user": "nobody", "group": "nct_nogroup_here"}, "service.group"),
    ({"exec": "/bin/true", "user": "nobody", "args": ["a\nb"]}, "service.args[0]"),
    ({"exec": "/bin/true", "user": "nobody", "environment": {"HOME": "/"}}, "service.environment"),
    ({"exec": "/bin/true", "user": "nobody", "working_directory": "tmp"}, "service.working_directory"),
])
def test_bad_service_names_the_field(service, field):
    with pytest.raises(NetconfineError) as err:
        build_policy(params(service=service))
    assert err.value.field == field


def test_states_go_in_reverse_order_when_absent(monkeypatch):
    """Present: states in the order given (namespace, then what runs in it); absent: reversed."""
    import contextlib

    from ansible_collections.paranoid.netconfine.plugins.module_utils import engine
    from ansible_collections.paranoid.netconfine.plugins.module_utils.netns_launcher import LauncherState

    log = []

    class Seam:
        """Owns one fact; present wants it, absent wants nothing."""

        def __init__(self, name, have):
            self.name, self.have = name, have

        def units(self, policy):
            return ("u",)

        def read(self, unit):
            return self.have

        def owned(self, read, policy, unit):
            return {"u": LauncherState((("x", "y"),))} if self.have else {}

        def render(self, policy, unit):
            return {"u": LauncherState((("x", "y"),))} if policy.present else {}

        def script(self, read, current, desired, restore_jumps=None):
            return self.name

        def apply(self, unit, script):
            log.append(script)
            self.have = not self.have

    class NoRules(Seam):
        def render(self, policy, unit):
            return {}

    monkeypatch.setattr(engine, "host_lock", lambda timeout: contextlib.nullcontext())
    engine.converge(model.Policy("t"), [NoRules("nf", False)], states=[Seam("links", False), Seam("units", False)])
    assert log == ["links", "units"]
    del log[:]
    engine.converge(model.Policy("t", present=False), [NoRules("nf", False)],
                    states=[Seam("links", True), Seam("units", True)])
    assert log == ["units", "links"]


# --------------------------------------------------------------------------- host ports of other tasks

def _tables_of(policies):
    """What iptables-save / nft -j would print with ``policies`` converged (their rendered rules)."""
    from ansible_collections.paranoid.netconfine.plugins.module_utils import iptables_backend, nft_backend

    ipt = iptables_backend.IptablesBackend(None, {4: ("s", "r"), 6: ("s", "r")})
    saves = {}
    for family in (4, 6):
        text = ["*nat"]
        for policy in policies:
            owned = ipt.render(policy, family).get("nat")
            text += [line.split("  # ")[0] for line in owned.lines()[1:]] if owned else []
        saves[family] = iptables_backend.parse_save("\n".join(text + ["COMMIT", ""]))
    nft = nft_backend.NftablesBackend(None, "nft")
    chains, rules = {}, []
    for policy in policies:
        owned = nft.render(policy, "ruleset")[nft_render.TABLE]
        for name, kind, hook, prio in owned.bases:
            chains[name] = {"family": "inet", "table": "netconfine", "name": name, "type": kind, "hook": hook,
                            "prio": prio}
        for base, text, _placement in owned.jumps:
            rules.append(dict(json.loads(text), family="inet", table="netconfine", chain=base))
        for name, body in owned.chains:
            chains[name] = {"family": "inet", "table": "netconfine", "name": name}
            rules += [dict(json.loads(t), family="inet", table="netconfine", chain=name) for t in body]
    listing = {"nftables": [{"table": {"family": "inet", "name": "netconfine"}}]
               + [{"chain": c} for c in chains.values()] + [{"rule": r} for r in rules]}
    return saves, nft_backend.parse_list(json.dumps(listing))


@pytest.mark.parametrize("other, mine, clash", [
    ([fwd()], [fwd()], True),                                                   # same port, any address
    ([fwd()], [fwd(protocol="udp")], False),                                    # other protocol
    ([fwd()], [fwd(host_port=10106)], False),                                   # other port
    ([fwd(host_address="203.0.113.10")], [fwd()], True),                        # any address takes theirs too
    ([fwd()], [fwd(host_address="203.0.113.10")], True),
    ([fwd(host_address="203.0.113.10")], [fwd(host_address="203.0.113.11")], False),
    ([fwd(host_address="203.0.113.10", **{"from": ["198.51.100.0/24"]})],
     [fwd(host_address="203.0.113.10")], True),                                 # sources do not split a port
    ([fwd(host_port=80, port=8080), fwd(host_port=81, port=8080)], [fwd(host_port=81)], True),
])
def test_a_host_port_another_task_forwards_is_refused_on_both_backends(other, mine, clash):
    from ansible_collections.paranoid.netconfine.plugins.module_utils import netns_netfilter

    theirs = build_policy(params(name="db", subnet="192.0.2.4/30", port_forwards=other))
    ours = build_policy(params(port_forwards=mine))
    saves, nft = _tables_of([theirs, ours])
    claims = netns_netfilter.claims_of(params(port_forwards=mine))
    found = [netns_netfilter.iptables_forwards(saves[4], 4), netns_netfilter.nft_forwards(nft)]
    assert all(sorted(f) == ["netns-db", "netns-web"] for f in found), found
    for forwards in found:
        state = netns_netfilter.HostPorts(claims, "netns-web")
        if clash:
            with pytest.raises(NetconfineError) as err:
                state._check(forwards, "test")
            assert err.value.field == "port_forwards[0].host_port" and "task netns-db" in str(err.value)
        else:
            state._check(forwards, "test")
        # the task's own rules are no conflict (a re-run converges them)
        netns_netfilter.HostPorts(claims, "netns-web")._check({"netns-web": forwards["netns-web"]}, "test")


def test_host_ports_judge_the_engines_own_read_of_every_backend(monkeypatch):
    """converge hands HostPorts what it read of each backend's units (no second iptables-save / nft list)."""
    import contextlib

    from ansible_collections.paranoid.netconfine.plugins.module_utils import engine, netns_netfilter

    theirs = build_policy(params(name="db", subnet="192.0.2.4/30"))
    ours = build_policy(params())
    saves, nft = _tables_of([theirs])
    reads = []

    class Reader:
        def __init__(self, name, tables):
            self.name, self.tables = name, tables

        def units(self, policy):
            return tuple(self.tables)

        def read(self, unit):
            reads.append((self.name, unit))
            return self.tables[unit]

        def owned(self, tables, policy, unit):
            return {}

        def render(self, policy, unit):
            return {}

    monkeypatch.setattr(engine, "host_lock", lambda timeout: contextlib.nullcontext())
    for backends in ([Reader("iptables", saves), Reader("nftables", {"ruleset": nft})],
                     [Reader("nftables", {"ruleset": nft}), Reader("iptables", saves)]):
        del reads[:]
        state = netns_netfilter.HostPorts(netns_netfilter.claims_of(params()), "netns-web")
        with pytest.raises(NetconfineError) as err:
            engine.converge(ours, backends, check_mode=True, states=[state])
        assert err.value.field == "port_forwards[0].host_port" and "task netns-db" in str(err.value)
        assert sorted(reads) == [("iptables", 4), ("iptables", 6), ("nftables", "ruleset")]     # once each


def test_host_ports_of_ipv6_forwards_are_per_family():
    from ansible_collections.paranoid.netconfine.plugins.module_utils import netns_netfilter

    theirs = build_policy(params(name="db", subnet="192.0.2.4/30", subnet6="fd00:20::/64",
                                 port_forwards=[fwd(host_address="fd00:99::1")]))
    saves, nft = _tables_of([theirs])
    assert netns_netfilter.iptables_forwards(saves[4], 4) == {}
    six = netns_netfilter.iptables_forwards(saves[6], 6)["netns-db"]
    assert [f[:3] for f in six] == [(6, "tcp", ((10105, 10105),))]
    assert [f[:3] for f in netns_netfilter.nft_forwards(nft)["netns-db"]] == [(6, "tcp", ((10105, 10105),))]
    v4 = netns_netfilter.claims_of(params(port_forwards=[fwd()]))
    netns_netfilter.HostPorts(v4, "netns-web")._check({"netns-db": six}, "test")     # IPv4 only: no clash
    v6 = netns_netfilter.claims_of(params(subnet6="fd00:19::/64", port_forwards=[fwd()]))
    with pytest.raises(NetconfineError):
        netns_netfilter.HostPorts(v6, "netns-web")._check({"netns-db": six}, "test")
