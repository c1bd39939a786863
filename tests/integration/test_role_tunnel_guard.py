"""Role paranoid.netconfine.tunnel_guard, for real (seed 000).

Two namespaces joined by a veth: "crueller" (192.0.2.1, fd00:1::1) runs stunnel4 in client mode
on 127.0.0.1 and [::1] ports 992 and 273; "strudel" (192.0.2.2) runs stunnel4 in server mode in
front of a tiny "telnet" banner service (port 23) and of ``rsync --daemon`` with module ``attic``
(port 873). TLS with a throwaway self-signed certificate, pinned by the client. The role runs
through ansible-playbook against crueller; users connect with ``ip netns exec ... runuser``.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import select
import shutil
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from nchelpers import ALL_ADDRESSES, SYSTEM_PYTHON, ansible_playbook, daemon, iptables_save, run, try_connect

ROLE_PLAY = """
- name: Guard the tunnels
  hosts: all
  gather_facts: false
  roles:
    - role: paranoid.netconfine.tunnel_guard
"""
OWNER_RULE = "paranoid.netconfine.owner_rule"
VALIDATE = "ansible.builtin.validate_argument_spec"
STUFF = "sensitive stuff from strudel's attic\n"
BANNER = "strudel login:"


# --------------------------------------------------------------------------- the tunnel lab

_SERVICE = textwrap.dedent("""
    # strudel's services: a telnet-like banner (closes after the banner) and a line echo.
    import select, socket, sys
    socks = {}
    for spec in sys.argv[1:]:
        kind, addr, port = spec.split(",")
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, int(port)))
        s.listen(64)
        socks[s] = kind
    print("ready", flush=True)
    clients = {}
    while True:
        for s in select.select(list(socks) + list(clients), [], [])[0]:
            if s in socks:
                conn = s.accept()[0]
                if socks[s] == "banner":
                    conn.sendall(b"BANNER\\n")
                    conn.close()
                else:
                    clients[conn] = True
            else:
                data = s.recv(4096)
                if data:
                    s.sendall(data)
                else:
                    del clients[s]
                    s.close()
""").replace("BANNER", BANNER)

_FETCH = textwrap.dedent("""
    # Connect, read until the peer closes; print what came back or why it failed.
    import errno, socket, sys
    try:
        conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
        data = b""
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        print("data:" + data.decode())
    except socket.timeout:
        print("timeout")
    except OSError as e:
        print({errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset", errno.EPERM: "denied"}.get(e.errno, repr(e)))
""")

_HELD = textwrap.dedent("""
    # Open a connection now; on each stdin line send it and print the echo (an established flow).
    import socket, sys
    conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    print("connected", flush=True)
    for line in sys.stdin:
        conn.sendall(line.encode())
        try:
            print("echo:" + conn.recv(4096).decode().strip(), flush=True)
        except socket.timeout:
            print("timeout", flush=True)
""")


def fetch_as(ns: str, user: str, host: str, port: int, timeout: float = 3.0) -> str:
    """As ``user`` inside ``ns``: what a connection to host:port returns (``data:...``, refused, timeout, ...)."""
    proc = run("runuser", "-u", user, "--", SYSTEM_PYTHON, "-c", _FETCH, host, str(port), str(timeout),
               ns=ns, check=False, timeout=timeout + 30)
    return proc.stdout.strip() or proc.stderr.strip()


def rsync_as(ns: str, user: str, family: int) -> subprocess.CompletedProcess:
    """As ``user``: the seed's ``rsync --port=273 localhost::attic/stuff.txt`` into the user's home."""
    home = Path(os.path.expanduser(f"~{user}"))
    (home / "stuff.txt").unlink(missing_ok=True)
    return run("runuser", "-u", user, "--", "rsync", f"-{family}", "--port=273", "--timeout=10",
               "localhost::attic/stuff.txt", str(home / "stuff.txt"), ns=ns, check=False, timeout=60)


def rsync_got_stuff(user: str) -> bool:
    path = Path(os.path.expanduser(f"~{user}")) / "stuff.txt"
    return path.exists() and path.read_text() == STUFF


class TunnelLab:
    def __init__(self, crueller: str, strudel: str, tmp: Path):
        self.crueller, self.strudel, self.tmp = crueller, strudel, tmp


def _wait_for_tunnels(lab: TunnelLab) -> None:
    deadline = time.monotonic() + 15
    while True:
        outcomes = [fetch_as(lab.crueller, "root", host, 992) for host in ("127.0.0.1", "::1")]
        if all(o == f"data:{BANNER}" for o in outcomes):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"stunnel tunnel crueller -> strudel did not come up: {outcomes}")
        time.sleep(0.2)


@pytest.fixture
def tunnel_lab(make_netns, cleanup) -> TunnelLab:
    """crueller and strudel with real stunnel4 tunnels on 992 (telnet banner) and 273 (rsync attic)."""
    crueller, strudel = make_netns(), make_netns()
    run("ip", "-n", crueller, "link", "add", "to-strudel", "type", "veth", "peer", "name", "to-crueller",
        "netns", strudel)
    for ns, dev, addrs in ((crueller, "to-strudel", ("192.0.2.1/24", "fd00:1::1/64")),
                           (strudel, "to-crueller", ("192.0.2.2/24", "fd00:1::2/64"))):
        for addr in addrs:
            run("ip", "-n", ns, "addr", "add", addr, "dev", dev, *(["nodad"] if ":" in addr else []))
        run("ip", "-n", ns, "link", "set", dev, "up")

    # "strudel" resolves inside crueller only: ip netns exec bind-mounts /etc/netns/NS/hosts on /etc/hosts.
    etc = Path("/etc/netns") / crueller
    etc.mkdir(parents=True)
    cleanup.callback(shutil.rmtree, etc, ignore_errors=True)
    (etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
                               "192.0.2.2 strudel\n")

    tmp = Path(tempfile.mkdtemp(prefix="nct-tunnel-"))
    cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
    tmp.chmod(0o755)  # rsync --daemon serves the module as nobody
    (tmp / "attic").mkdir(mode=0o755)
    (tmp / "attic" / "stuff.txt").write_text(STUFF)
    (tmp / "attic" / "stuff.txt").chmod(0o644)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem"), "-subj", "/CN=strudel", "-days", "2")
    (tmp / "rsyncd.conf").write_text(f"pid file =\nuse chroot = no\n[attic]\npath = {tmp / 'attic'}\nread only = yes\n")
    common = "foreground = yes\npid =\ndebug = warning\n"
    (tmp / "strudel.conf").write_text(
        common + f"cert = {tmp / 'cert.pem'}\nkey = {tmp / 'key.pem'}\n"
        "[telnet]\naccept = 192.0.2.2:992\nconnect = 127.0.0.1:23\n"
        "[rsync]\naccept = 192.0.2.2:273\nconnect = 127.0.0.1:873\n")
    client = common + f"CAfile = {tmp / 'cert.pem'}\nverifyPeer = yes\n"
    for name, port in (("telnet", 992), ("rsync", 273)):
        for family, addr in (("4", "127.0.0.1"), ("6", "::1")):
            client += f"[{name}{family}]\nclient = yes\naccept = {addr}:{port}\nconnect = 192.0.2.2:{port}\n"
    (tmp / "crueller.conf").write_text(client)

    cleanup.enter_context(daemon(strudel, SYSTEM_PYTHON, "-c", _SERVICE, "banner,127.0.0.1,23",
                                 "echo,192.0.2.2,8080", ready="ready"))
    cleanup.enter_context(daemon(strudel, "rsync", "--daemon", "--no-detach", f"--config={tmp / 'rsyncd.conf'}",
                                 "--address=127.0.0.1", "--port=873"))
    cleanup.enter_context(daemon(strudel, "stunnel4", str(tmp / "strudel.conf")))
    cleanup.enter_context(daemon(crueller, "stunnel4", str(tmp / "crueller.conf")))
    lab = TunnelLab(crueller, strudel, tmp)
    _wait_for_tunnels(lab)
    return lab


# --------------------------------------------------------------------------- helpers

def owner_rule_result(result, host):
    return [r for r in result.results.get(host, []) if r.action == OWNER_RULE][-1]


def converge(host, tunnels, check=False, **role_vars):
    """Run the role once; return (playbook run, owner_rule result)."""
    result = ansible_playbook(ROLE_PLAY, [host], extra_vars={"tunnel_guard_tunnels": tunnels, **role_vars},
                              check=check, diff=True)
    assert result.rc == 0, result.output
    return result, owner_rule_result(result, host)


def owned_chain(save: str) -> str:
    chains = [line[1:].split()[0] for line in save.splitlines() if line.startswith(":NC-tunnel-guard-")]
    assert len(chains) == 1, save
    return chains[0]


def nft_table(ns: str) -> str:
    """``nft list table inet netconfine`` (the nftables backend's own table), or '' when there is none."""
    return run("nft", "list", "table", "inet", "netconfine", ns=ns, check=False).stdout


def nft_chain(ns: str, chain: str) -> list[str]:
    """The rules of one chain of our nftables table, one stripped line each."""
    text = nft_table(ns)
    match = re.search(r"chain %s \{\n(.*?)\n\t\}" % re.escape(chain), text, re.S)
    assert match, text
    return [line.strip() for line in match.group(1).splitlines()]


def nothing_owned(ns: str) -> bool:
    return "NC-" not in iptables_save(ns, 4) + iptables_save(ns, 6) + nft_table(ns)


# --------------------------------------------------------------------------- tests

BACKENDS = pytest.mark.parametrize("backend", ["iptables", "nftables"])


def kernel_rules(ns: str, backend: str) -> dict:
    """The role's rules as the kernel holds them: {'chain', 4: [...], 6: [...]} (iptables) or {'chain', 'nft': [...]}."""
    if backend == "iptables":
        save4 = iptables_save(ns, 4, "filter")
        chain = owned_chain(save4)
        out = {"chain": chain}
        for family, save in ((4, save4), (6, iptables_save(ns, 6, "filter"))):
            out[family] = [line for line in save.splitlines() if line.startswith(f"-A {chain} ")]
            out[f"policy{family}"] = re.search(r"^:OUTPUT (\w+)", save, re.M).group(1)
            assert f'-A OUTPUT -m comment --comment "netconfine:tunnel_guard" -j {chain}' in save.splitlines(), save
        assert "NC-" not in nft_table(ns)
        return out
    text = nft_table(ns)
    chain = re.search(r"chain (NC-tunnel-guard-\w+) \{", text).group(1)
    base = nft_chain(ns, "filter_output")
    assert f'jump {chain} comment "netconfine:tunnel_guard"' in base, text
    assert "NC-" not in iptables_save(ns, 4) + iptables_save(ns, 6)   # nothing left in the other backend
    rules = [re.sub(r"counter packets \d+ bytes \d+", "counter", line) for line in nft_chain(ns, chain)]
    return {"chain": chain, "nft": rules, "policy": "DROP" if "policy drop;" in base[0] else "ACCEPT"}


def comments(lines: list[str]) -> list[str]:
    """The rule comments in order, consecutive repeats (one rule per family) collapsed."""
    out = []
    for line in lines:
        found = re.search(r'comment "([^"]+)"', line)
        text = found.group(1) if found else line
        if not out or out[-1] != text:
            out.append(text)
    return out


@BACKENDS
def test_accept_policy_only_allowed_users_and_wheel_members_use_the_tunnels(tunnel_lab, make_user, make_group,
                                                                            backend):
    crueller = tunnel_lab.crueller
    wheel = make_group()
    alice, plebian = make_user(), make_user()
    admin7 = make_user(groups=[wheel])          # member of wheel as a supplementary group only
    admin_primary = make_user(group=wheel)      # wheel is the primary group
    tunnels = [
        {"name": "telnet-over-stunnel", "port": 992, "allow_users": ["root", alice],
         "remote": {"host": "strudel", "port": 992}},
        {"name": "rsync-attic", "port": 273, "allow_groups": [wheel], "remote": {"host": "strudel", "port": 273}},
    ]

    # The seed's problem, reproduced: any local user can use root's tunnels.
    assert fetch_as(crueller, plebian, "127.0.0.1", 992) == f"data:{BANNER}"
    assert rsync_as(crueller, plebian, 4).returncode == 0 and rsync_got_stuff(plebian)

    res = converge(crueller, tunnels, check=True, tunnel_guard_backend=backend)[1]
    assert res.changed, res.result
    assert nothing_owned(crueller)
    assert fetch_as(crueller, plebian, "::1", 992) == f"data:{BANNER}"  # check mode changed nothing

    res = converge(crueller, tunnels, tunnel_guard_backend=backend)[1]
    assert res.changed and res.result["backend"] == backend, res.result
    res = converge(crueller, tunnels, check=True, tunnel_guard_backend=backend)[1]
    assert not res.changed, res.result
    result, res = converge(crueller, tunnels, tunnel_guard_backend=backend)
    assert not res.changed, res.result
    assert result.stats[crueller]["changed"] == 0, result.output

    # The kernel holds the role's rules, IPv4 and IPv6, behind one tagged jump; OUTPUT still accepts.
    rules = kernel_rules(crueller, backend)
    chain = rules["chain"]
    expected_comments = [
        "tunnel_guard telnet-over-stunnel: user root", f"tunnel_guard telnet-over-stunnel: user {alice}",
        "tunnel_guard telnet-over-stunnel: everyone else",
        f"tunnel_guard rsync-attic: members of {wheel}", "tunnel_guard rsync-attic: everyone else"]
    if backend == "iptables":
        gid = grp.getgrnam(wheel).gr_gid
        uid = pwd.getpwnam(alice).pw_uid
        local = "-m addrtype --dst-type LOCAL"   # no address given: every local destination is guarded
        for family in (4, 6):
            assert rules[f"policy{family}"] == "ACCEPT"
            assert rules[family] == [
                f'-A {chain} -m comment --comment "netconfine:policy"',  # the role manages OUTPUT's policy
                f'-A {chain} -p tcp -m tcp --dport 992 {local} -m owner --uid-owner 0 '
                f'-m comment --comment "{expected_comments[0]}" -j ACCEPT',
                f'-A {chain} -p tcp -m tcp --dport 992 {local} -m owner --uid-owner {uid} '
                f'-m comment --comment "{expected_comments[1]}" -j ACCEPT',
                f'-A {chain} -p tcp -m tcp --dport 992 {local} '
                f'-m comment --comment "{expected_comments[2]}" -j REJECT --reject-with tcp-reset',
                f'-A {chain} -p tcp -m tcp --dport 273 {local} -m owner --gid-owner {gid} --suppl-groups '
                f'-m comment --comment "{expected_comments[3]}" -j ACCEPT',
                f'-A {chain} -p tcp -m tcp --dport 273 {local} '
                f'-m comment --comment "{expected_comments[4]}" -j REJECT --reject-with tcp-reset',
            ]
    else:
        assert rules["policy"] == "ACCEPT"
        # the role manages OUTPUT's policy: the policy marker comes first, as on iptables
        assert comments(rules["nft"]) == ["netconfine:policy"] + expected_comments, rules["nft"]
        # one inet rule per listener rule: the fib lookup covers both families
        assert [line for line in rules["nft"] if "everyone else" in line] == [
            f'tcp dport {port} fib daddr type local counter reject with tcp reset comment "tunnel_guard {name}: everyone else"'
            for port, name in ((992, "telnet-over-stunnel"), (273, "rsync-attic"))], rules["nft"]

    # Behaviour, end to end through stunnel and strudel, on both loopbacks.
    for host in ("127.0.0.1", "::1"):
        assert fetch_as(crueller, "root", host, 992) == f"data:{BANNER}"
        assert fetch_as(crueller, alice, host, 992) == f"data:{BANNER}"
        assert fetch_as(crueller, plebian, host, 992) == "refused"
        assert fetch_as(crueller, admin7, host, 992) == "refused"   # wheel is not on the telnet tunnel
        assert try_connect(crueller, plebian, host, 273) == "refused"
    for family in (4, 6):
        for member in (admin7, admin_primary):
            got = rsync_as(crueller, member, family)
            assert got.returncode == 0 and rsync_got_stuff(member), (member, family, got.stderr)
        for outsider in (plebian, alice, "root"):           # root is not implied on the wheel tunnel
            got = rsync_as(crueller, outsider, family)
            assert got.returncode == 10 and "Connection refused" in got.stderr, (outsider, family, got.stderr)
            assert outsider == "root" or not rsync_got_stuff(outsider)


@BACKENDS
def test_drop_policy_keeps_established_flows_and_lets_only_the_daemon_reach_strudel(tunnel_lab, make_user,
                                                                                    make_group, cleanup, backend):
    crueller = tunnel_lab.crueller
    wheel = make_group()
    alice, plebian, admin7 = make_user(), make_user(), make_user(groups=[wheel])
    tunnels = [
        {"name": "telnet-over-stunnel", "port": 992, "allow_users": ["root", alice],
         "remote": {"host": "strudel", "port": 992}},
        {"name": "rsync-attic", "port": 273, "allow_groups": [wheel], "remote": {"host": "strudel", "port": 273}},
    ]
    role_vars = {"tunnel_guard_output_policy": "drop", "tunnel_guard_backend": backend}
    # A host firewall's own stateful rule (so conntrack already tracks flows, as on any stateful host);
    # the role must leave it alone.
    foreign = ["INPUT", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"]
    for tool in ("iptables", "ip6tables"):
        run(tool, "-A", *foreign, ns=crueller)
    # A flow root opened before the policy switch, to a port the new policy does not allow.
    held = cleanup.enter_context(daemon(crueller, SYSTEM_PYTHON, "-u", "-c", _HELD, "192.0.2.2", "8080",
                                        ready="connected", interactive=True))
    assert _held_echo(held, "before") == "echo:before"

    res = converge(crueller, tunnels, check=True, **role_vars)[1]
    assert res.changed and nothing_owned(crueller), res.result
    res = converge(crueller, tunnels, **role_vars)[1]
    assert res.changed, res.result
    assert res.result["resolved"] == {"strudel": ["192.0.2.2"]}  # resolved on the target, in its namespace
    res = converge(crueller, tunnels, check=True, **role_vars)[1]
    assert not res.changed, res.result
    res = converge(crueller, tunnels, **role_vars)[1]
    assert not res.changed, res.result

    rules = kernel_rules(crueller, backend)
    chain = rules["chain"]
    if backend == "iptables":
        for family in (4, 6):
            assert rules[f"policy{family}"] == "DROP"
            assert rules[family][:2] == [f'-A {chain} -m comment --comment "netconfine:policy"',
                                         f"-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
        for port in (992, 273):
            name = "telnet-over-stunnel" if port == 992 else "rsync-attic"
            assert (f"-A {chain} -d 192.0.2.2/32 -p tcp -m tcp --dport {port} -m owner --uid-owner 0 -m comment "
                    f'--comment "tunnel_guard {name}: daemon to remote" -j ACCEPT') in rules[4], rules[4]
        assert "192.0.2.2" not in "".join(rules[6])  # strudel has no IPv6 address in crueller's hosts file
    else:
        assert rules["policy"] == "DROP"
        assert rules["nft"][:2] == ['counter comment "netconfine:policy"', "ct state established,related accept"], \
            rules["nft"]
        for port in (992, 273):
            name = "telnet-over-stunnel" if port == 992 else "rsync-attic"
            assert (f'ip daddr 192.0.2.2 tcp dport {port} meta skuid 0 accept '
                    f'comment "tunnel_guard {name}: daemon to remote"') in rules["nft"], rules["nft"]
    for family in (4, 6):
        assert "-A " + " ".join(foreign) in iptables_save(crueller, family).splitlines()

    # The held flow still works (ESTABLISHED), while a new one to the same port is dropped.
    assert _held_echo(held, "still here") == "echo:still here"
    assert try_connect(crueller, "root", "192.0.2.2", 8080, timeout=1) == "timeout"
    # Only the daemon's user (root) may reach the remote end directly; users go through the listener.
    assert try_connect(crueller, "root", "192.0.2.2", 992) == "connected"
    assert try_connect(crueller, alice, "192.0.2.2", 992, timeout=1) == "timeout"
    # Through the tunnels: the daemon reaches strudel; allowed owners in, others refused (not hung).
    for host in ("127.0.0.1", "::1"):
        assert fetch_as(crueller, alice, host, 992) == f"data:{BANNER}"
        assert fetch_as(crueller, plebian, host, 992) == "refused"
    for family in (4, 6):
        got = rsync_as(crueller, admin7, family)
        assert got.returncode == 0 and rsync_got_stuff(admin7), got.stderr
        got = rsync_as(crueller, plebian, family)
        assert got.returncode == 10 and "Connection refused" in got.stderr, got.stderr

    # state absent: chain and jump gone, OUTPUT accepts again, the tunnel is open to all again.
    res = converge(crueller, tunnels, tunnel_guard_state="absent", **role_vars)[1]
    assert res.changed, res.result
    assert nothing_owned(crueller)
    assert "policy drop" not in nft_table(crueller)
    for family in (4, 6):
        assert ":OUTPUT DROP" not in iptables_save(crueller, family, "filter")
    assert try_connect(crueller, "root", "192.0.2.2", 8080) == "connected"
    assert fetch_as(crueller, plebian, "::1", 992) == f"data:{BANNER}"


def _held_echo(proc: subprocess.Popen, text: str, timeout: float = 10) -> str:
    """Send one line over the held connection; return ``echo:<line>`` or ``timeout``."""
    proc.stdin.write(text + "\n")
    proc.stdin.flush()
    if not select.select([proc.stdout], [], [], timeout)[0]:
        return "no answer"
    return proc.stdout.readline().strip()


@pytest.mark.parametrize(("role_vars", "expected"), [
    ({"tunnel_guard_tunnels": [{"name": "telnet", "allow_users": ["root"]}]},
     "missing required arguments: port found in tunnel_guard_tunnels"),
    ({"tunnel_guard_tunnels": [{"name": "telnet", "port": "nine-nine-two"}]},
     "tunnel_guard_tunnels"),
    ({"tunnel_guard_tunnels": [{"name": "rsync", "port": 273, "remote": {"host": "strudel"}}]},
     "missing required arguments: port found in tunnel_guard_tunnels -> remote"),
    ({"tunnel_guard_tunnels": [{"name": "rsync", "port": 273, "allow_group": ["wheel"]}]},
     "allow_group"),
    ({"tunnel_guard_output_policy": "reject"},
     "value of tunnel_guard_output_policy must be one of: accept, drop, got: reject"),
    ({"tunnel_guard_tunnels": "telnet"},
     "tunnel_guard_tunnels"),
], ids=["port-missing", "port-not-int", "remote-port-missing", "unknown-key", "bad-policy", "not-a-list"])
def test_bad_variables_fail_argument_validation_naming_the_variable(netns_host, role_vars, expected):
    role_vars.setdefault("tunnel_guard_tunnels", [])
    result = ansible_playbook(ROLE_PLAY, [netns_host], extra_vars=role_vars)
    assert result.rc != 0, result.output
    validation = [r for r in result.results[netns_host] if r.action == VALIDATE][-1]
    assert validation.failed, result.output
    assert expected in validation.msg, validation.msg
    assert not [r for r in result.results[netns_host] if r.action == OWNER_RULE]
    assert nothing_owned(netns_host)


def test_unknown_user_fails_naming_the_rule_and_changes_nothing(netns_host):
    result = ansible_playbook(ROLE_PLAY, [netns_host], extra_vars={"tunnel_guard_tunnels": [
        {"name": "telnet", "port": 992, "allow_users": ["root"]},
        {"name": "rsync", "port": 273, "allow_users": ["nct_no_such_user"]},
    ]})
    assert result.rc != 0, result.output
    res = owner_rule_result(result, netns_host)
    assert res.failed and res.result["field"] == "rules[2].uid_owner", res.result
    assert "nct_no_such_user" in res.msg
    assert nothing_owned(netns_host)


@BACKENDS
def test_a_listener_on_all_addresses_is_guarded_at_every_local_destination(netns_host, make_user, listener,
                                                                           backend):
    """Issue 16.1: ``stunnel -c -d 992`` listens on 0.0.0.0 and [::]; a local user must not reach it through
    127.0.0.2, the host's own addresses (global and link-local IPv6) or an address added after the converge."""
    ns = netns_host
    pleb = make_user()
    run("ip", "-n", ns, "link", "add", "nct-v0", "type", "veth", "peer", "name", "nct-v1")
    for addr in ("192.0.2.1/24", "fd00:16::1/64", "fe80::16/64"):
        run("ip", "-n", ns, "addr", "add", addr, "dev", "nct-v0", *(["nodad"] if ":" in addr else []))
    for dev in ("nct-v0", "nct-v1"):
        run("ip", "-n", ns, "link", "set", dev, "up")
    listener(ns, 992, ALL_ADDRESSES)
    destinations = ["127.0.0.1", "127.0.0.2", "192.0.2.1", "::1", "fd00:16::1", "fe80::16%nct-v0"]
    assert all(try_connect(ns, pleb, host, 992) == "connected" for host in destinations)  # the hole, before

    tunnels = [{"name": "telnet-over-stunnel", "port": 992, "allow_users": ["root"]}]  # the play
    assert converge(ns, tunnels, check=True, tunnel_guard_backend=backend)[1].changed
    assert nothing_owned(ns)
    assert converge(ns, tunnels, tunnel_guard_backend=backend)[1].changed
    assert not converge(ns, tunnels, check=True, tunnel_guard_backend=backend)[1].changed
    assert not converge(ns, tunnels, tunnel_guard_backend=backend)[1].changed

    # addresses the host gets after the converge are local too: the kernel decides per packet
    run("ip", "-n", ns, "addr", "add", "198.51.100.16/32", "dev", "nct-v0")
    run("ip", "-n", ns, "addr", "add", "fd00:16:2::16/128", "dev", "nct-v0", "nodad")
    destinations += ["198.51.100.16", "fd00:16:2::16"]
    outcomes = {host: (try_connect(ns, pleb, host, 992), try_connect(ns, "root", host, 992)) for host in destinations}
    assert outcomes == {host: ("refused", "connected") for host in destinations}, outcomes

    rules = kernel_rules(ns, backend)
    if backend == "iptables":
        assert all("-m addrtype --dst-type LOCAL" in line and " -d " not in line
                   for family in (4, 6) for line in rules[family][1:]), rules
    else:
        assert all("fib daddr type local" in line and "daddr " not in line.replace("fib daddr", "")
                   for line in rules["nft"][1:]), rules

    # address narrows on purpose: a listener the operator says is bound to localhost is guarded there only
    narrowed = [dict(tunnels[0], address="localhost")]
    assert converge(ns, narrowed, tunnel_guard_backend=backend)[1].changed
    assert try_connect(ns, pleb, "127.0.0.1", 992) == "refused"
    assert try_connect(ns, pleb, "::1", 992) == "refused"
    assert try_connect(ns, pleb, "127.0.0.2", 992) == "connected"
