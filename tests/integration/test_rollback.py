"""Confirm or roll back (rollback_timeout) over a real SSH connection, on both backends.

A "managed host" namespace runs Debian's sshd on 192.0.2.10 / fd00:9::10; the controller runs
ansible-playbook inside a second namespace joined to it by a veth pair, connecting with SSH (ControlPersist
and pipelining on, as Ansible's defaults and this collection's docs have them). Then:

* a change that does not lock the controller out is confirmed over a fresh connection and kept;
* a change that does (a DROP of everything sshd sends, over IPv4 and over IPv6) is rolled back by the host
  itself: the task fails with "rolled back: ...", the host's watcher wrote its report, SSH answers again
  and the host's ruleset equals what it held before the run.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
import time

import pytest
import yaml

from nchelpers import ansible_playbook, daemon, iptables_save, run

OWNER_RULE = "paranoid.netconfine.owner_rule"
TIMEOUT = 8
SERVER = {4: "192.0.2.10", 6: "fd00:9::10"}


def _up(ns, addr):
    with contextlib.suppress(OSError):
        code = ("import socket,sys; s=socket.create_connection((sys.argv[1], 22), 1); "
                "sys.exit(0 if s.recv(4).startswith(b'SSH') else 1)")
        return run("python3", "-c", code, addr, ns=ns, check=False, timeout=5).returncode == 0
    return False


@pytest.fixture
def ssh_host(make_netns, cleanup, tmp_path):
    """(controller ns, managed ns, inventory host vars per family): sshd in the managed namespace."""
    client, server = make_netns(), make_netns()
    peer = "ncsr%s" % server[-4:]
    run("ip", "link", "add", "ncc%s" % server[-4:], "type", "veth", "peer", "name", peer, ns=client)
    run("ip", "link", "set", peer, "netns", server, ns=client)
    for ns, link, v4, v6 in ((client, "ncc%s" % server[-4:], "192.0.2.1/24", "fd00:9::1/64"),
                             (server, peer, "192.0.2.10/24", "fd00:9::10/64")):
        run("ip", "addr", "add", v4, "dev", link, ns=ns)
        run("ip", "addr", "add", v6, "dev", link, "nodad", ns=ns)
        run("ip", "link", "set", link, "up", ns=ns)
    cp_dir = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="ncr", dir="/tmp"))  # sun_path <= 108
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "hostkey")], check=True)
    (tmp_path / "authorized_keys").write_text((tmp_path / "id.pub").read_text())
    config = tmp_path / "sshd_config"
    config.write_text("\n".join([
        "ListenAddress 192.0.2.10", "ListenAddress fd00:9::10", "HostKey %s" % (tmp_path / "hostkey"),
        "PermitRootLogin prohibit-password", "AuthorizedKeysFile %s" % (tmp_path / "authorized_keys"),
        "StrictModes no", "UsePAM no", "PidFile none", "LogLevel ERROR", ""]))
    run("mkdir", "-p", "/run/sshd")
    cleanup.enter_context(daemon(server, "/usr/sbin/sshd", "-D", "-e", "-f", str(config)))
    deadline = time.monotonic() + 20
    while not _up(client, SERVER[4]):
        assert time.monotonic() < deadline, "sshd did not start in the managed namespace"
        time.sleep(0.2)
    common = {"ansible_connection": "ssh", "ansible_user": "root", "ansible_ssh_private_key_file": str(key),
              "ansible_ssh_common_args": "-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no "
                                         "-o ControlPath=%s/%%C" % cp_dir,
              "ansible_ssh_timeout": 4, "ansible_pipelining": True}
    return client, server, dict((f, dict(common, ansible_host=SERVER[f])) for f in (4, 6))


def ruleset(ns, backend):
    """What can lock a controller out: every rule and policy (iptables), our table (nftables)."""
    if backend == "iptables":
        text = iptables_save(ns, 4) + iptables_save(ns, 6)
        return [re.sub(r"\[\d+:\d+\]", "", line) for line in text.splitlines()
                if line.startswith("-A ") or (line.startswith(":") and "ACCEPT" not in line)]
    return run("nft", "list", "table", "inet", "netconfine", ns=ns, check=False).stdout


def converge(client, hostvars, rules, backend, policy=None):
    task = {"name": "mgmt", "backend": backend, "persist": False, "rollback_timeout": TIMEOUT, "rules": rules}
    if policy:
        task["policy"] = policy
    play = yaml.safe_dump([{"hosts": "all", "gather_facts": False,
                            "tasks": [{OWNER_RULE: task, "ignore_errors": True}]}])
    start = time.monotonic()
    result = ansible_playbook(play, {"managed": hostvars}, netns=client, timeout=240)
    took = time.monotonic() - start
    (res,) = [r for r in result.results.get("managed", []) if r.action == OWNER_RULE] or [None]
    assert res is not None, result.output
    return res, took, result.output


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_a_change_that_keeps_ssh_is_confirmed_and_kept(ssh_host, backend):
    client, server, hostvars = ssh_host
    rules = [{"protocol": "tcp", "destination": "localhost", "destination_port": "992", "uid_owner": "!root",
              "jump": "REJECT"}]
    res, _took, output = converge(client, hostvars[4], rules, backend)
    assert res.changed and not res.failed, output
    assert res.result["rollback"]["outcome"] == "confirmed"
    kept = ruleset(server, backend)
    time.sleep(TIMEOUT + 2)
    assert ruleset(server, backend) == kept and "mgmt" in "".join(kept)


LOCKOUTS = {
    "drop-ssh-v4": (4, [{"protocol": "tcp", "source_port": "22", "jump": "DROP"}]),
    "drop-ssh-v6": (6, [{"protocol": "tcp", "source_port": "22", "jump": "DROP"}]),
}


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
@pytest.mark.parametrize("lockout", sorted(LOCKOUTS))
def test_a_lockout_rolls_itself_back(ssh_host, backend, lockout):
    client, server, hostvars = ssh_host
    family, rules = LOCKOUTS[lockout]
    before = ruleset(server, backend)
    res, took, output = converge(client, hostvars[family], rules, backend)
    assert res.failed, output
    assert "rolled back: the controller could not reconnect" in res.result.get("msg", ""), output
    assert res.result["rollback_report"] == "rolled back", output       # the host's watcher did it
    assert ruleset(server, backend) == before
    assert _up(client, SERVER[family])
    print("lockout %s on %s: the run took %.0fs (rollback_timeout %ds)" % (lockout, backend, took, TIMEOUT))
