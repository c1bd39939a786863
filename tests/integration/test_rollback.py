"""Confirm or roll back (rollback_timeout) over a real SSH connection, on both backends.

A "managed host" namespace runs Debian's sshd on 192.0.2.10 / fd00:9::10; the controller runs
ansible-playbook inside a second namespace joined to it by a veth pair, connecting with SSH (ControlPersist
and pipelining on, as Ansible's defaults and this collection's docs have them). Then:

* a change that does not lock the controller out is confirmed over a fresh connection and kept;
* the static guard refuses a change that surely cuts the SSH connection, naming the field, with nothing
  applied; ``allow_lockout: true`` lets it through to the rollback;
* a change that does lock out (DROP, REJECT with an ICMP error, REJECT with a TCP reset of everything sshd
  sends, over IPv4 and over IPv6, applied with ``allow_lockout: true``) is rolled back by the host itself:
  the task fails with "rolled back: ...", the host's watcher wrote its report, SSH answers again within
  rollback_timeout + 5 s of the apply and the host's ruleset equals what it held before the run;
* the confirmation cannot travel over the connection that ran the module: a change that keeps that
  (ControlPersist) connection but refuses every other one is rolled back, not confirmed.

A watcher thread measures, while the playbook runs: when the ruleset changed (the apply), when SSH stopped
answering from the controller's namespace, when it answered again, when the ruleset was back.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
import threading
import time

import pytest
import yaml

from nchelpers import ansible_playbook, daemon, iptables_save, run

OWNER_RULE = "paranoid.netconfine.owner_rule"
TIMEOUT = 8
SERVER = {4: "192.0.2.10", 6: "fd00:9::10"}


def _up(ns, addr, wait=1.0):
    """SSH answers on addr:22 from namespace ns: a TCP connection and sshd's banner within ``wait`` s."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        code = ("import socket,sys; s=socket.create_connection((sys.argv[1], 22), float(sys.argv[2])); "
                "s.settimeout(float(sys.argv[2])); sys.exit(0 if s.recv(4).startswith(b'SSH') else 1)")
        return run("python3", "-c", code, addr, str(wait), ns=ns, check=False, timeout=5).returncode == 0
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


def converge(client, hostvars, rules, backend, before=(), **options):
    """Run the owner_rule task (plus tasks ``before`` it) over SSH; (its result, seconds, output)."""
    task = dict({"name": "mgmt", "backend": backend, "persist": False, "rollback_timeout": TIMEOUT,
                 "rules": rules}, **options)
    play = yaml.safe_dump([{"hosts": "all", "gather_facts": False,
                            "tasks": list(before) + [{OWNER_RULE: task, "ignore_errors": True}]}])
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


SSHD_ANSWERS = {"protocol": "tcp", "source_port": "22"}
LOCKOUTS = dict(("%s-ssh-v%d" % (name, family), (family, [dict(SSHD_ANSWERS, **target)]))
                for family in (4, 6) for name, target in (
                    ("drop", {"jump": "DROP"}),
                    ("reject", {"jump": "REJECT"}),                                # ICMP port unreachable
                    ("reset", {"jump": "REJECT", "reject_with": "tcp-reset"})))


class Timeline:
    """Background watch of one run: monotonic times of the apply, SSH down, SSH up again, ruleset back."""

    def __init__(self, client, server, backend, family, before):
        self.client, self.server, self.backend, self.addr, self.before = client, server, backend, SERVER[family], before
        self.applied = self.restored = self.down = self.up_again = None
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._rules, daemon=True),
                         threading.Thread(target=self._ssh, daemon=True)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _rules(self):
        while not self._stop.is_set() and self.restored is None:
            now, same = time.monotonic(), ruleset(self.server, self.backend) == self.before
            if not same and self.applied is None:
                self.applied = now
            elif same and self.applied is not None:
                self.restored = now
            time.sleep(0.05)

    def _ssh(self):
        while not self._stop.is_set() and self.up_again is None:
            start = time.monotonic()
            up = _up(self.client, self.addr, wait=0.5)
            if not up and self.down is None:
                self.down = start             # the probe that found it down started here
            elif up and self.down is not None:
                self.up_again = time.monotonic()
            time.sleep(0.1)

    def seconds(self, since, until):
        return None if since is None or until is None else round(until - since, 1)


def _lockout_run(ssh_host, backend, family, rules, **options):
    client, server, hostvars = ssh_host
    before = ruleset(server, backend)
    assert _up(client, SERVER[family])
    with Timeline(client, server, backend, family, before) as seen:
        start = time.monotonic()
        res, took, output = converge(client, hostvars[family], rules, backend, allow_lockout=True, **options)
        deadline = time.monotonic() + TIMEOUT + 10
        while seen.up_again is None and time.monotonic() < deadline:
            time.sleep(0.1)
    timing = {"apply->ssh-up": seen.seconds(seen.applied, seen.up_again),
              "ssh-down->ssh-up": seen.seconds(seen.down, seen.up_again),
              "apply->ruleset-back": seen.seconds(seen.applied, seen.restored),
              "start->apply": seen.seconds(start, seen.applied),
              "apply->playbook-end": seen.seconds(seen.applied, start + took), "playbook": round(took, 1)}
    return res, output, before, timing


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
@pytest.mark.parametrize("lockout", sorted(LOCKOUTS))
def test_a_lockout_rolls_itself_back(ssh_host, backend, lockout):
    client, server, _hostvars = ssh_host
    family, rules = LOCKOUTS[lockout]
    res, output, before, timing = _lockout_run(ssh_host, backend, family, rules)
    how = "session-broke" if "the connection broke" in res.result.get("msg", "") else \
        "confirm-" + str(res.result.get("rollback", {}).get("outcome"))
    print("MEASURED %s %s %s via=%s" % (lockout, backend, " ".join("%s=%s" % kv for kv in timing.items()), how))
    assert res.failed, output
    assert "rolled back: the controller could not reconnect" in res.result.get("msg", ""), output
    assert res.result["rollback_report"] == "rolled back", output       # the host's watcher did it
    assert ruleset(server, backend) == before
    assert _up(client, SERVER[family])
    # SSH really was cut, and answered again within rollback_timeout + 5 s of the apply (and of going down)
    assert timing["ssh-down->ssh-up"] is not None, (timing, output)
    assert timing["apply->ssh-up"] <= TIMEOUT + 5, (timing, output)
    assert timing["ssh-down->ssh-up"] <= TIMEOUT + 5, (timing, output)


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_the_guard_refuses_a_lockout_with_nothing_applied(ssh_host, backend):
    client, server, hostvars = ssh_host
    family, rules = LOCKOUTS["drop-ssh-v4"]
    before = ruleset(server, backend)
    res, _took, output = converge(client, hostvars[family], rules, backend)
    assert res.failed and not res.changed, output
    msg = res.result.get("msg", "")
    assert res.result.get("field") == "rules[0]" and "would cut the controller off" in msg, output
    assert "192.0.2.1 -> 192.0.2.10 port 22" in msg and "allow_lockout" in msg, output
    assert "rollback" not in res.result and "rolled_back" not in res.result, output   # refused before arming
    assert ruleset(server, backend) == before
    assert _up(client, SERVER[family])
    # the same rules with allow_lockout: true go through to the rollback
    res, output, before, timing = _lockout_run(ssh_host, backend, family, rules)
    assert res.failed and "rolled back: the controller could not reconnect" in res.result["msg"], output
    assert res.result["rollback_report"] == "rolled back" and timing["apply->ssh-up"] is not None, output
    assert ruleset(server, backend) == before


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_the_connection_that_ran_the_module_cannot_confirm(ssh_host, backend):
    """Only the ControlPersist connection that ran the module keeps working: the confirmation must fail.

    sshd's answers to every controller port but the current master's are dropped; had the plugin confirmed over
    that master (pipelining, ControlPersist), the change would be kept.
    """
    client, server, hostvars = ssh_host
    peer = {"ansible.builtin.command": "sh -c 'echo $SSH_CONNECTION'", "register": "conn"}
    rules = [dict(SSHD_ANSWERS, destination_port="!{{ conn.stdout.split()[1] }}", jump="DROP")]
    # keepalives configured in the inventory: the plugin keeps the master the first task opened for the module
    host = dict(hostvars[4], ansible_ssh_common_args=hostvars[4]["ansible_ssh_common_args"]
                + " -o ServerAliveInterval=2 -o ServerAliveCountMax=3")
    before = ruleset(server, backend)
    play = yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": [
        peer, {OWNER_RULE: {"name": "mgmt", "backend": backend, "persist": False, "rollback_timeout": TIMEOUT,
                            "rules": rules}, "ignore_errors": True}]}])
    result = ansible_playbook(play, {"managed": host}, netns=client, timeout=240)
    (res,) = [r for r in result.results.get("managed", []) if r.action == OWNER_RULE]
    outcome = res.result.get("rollback", {}).get("outcome")
    print("MEASURED cannot-confirm %s outcome=%s msg=%s" % (backend, outcome, res.result.get("msg")))
    assert not res.result.get("field"), result.output          # the guard cannot know: not refused
    assert res.failed, result.output
    # the module's answer came back over the master it ran on; the fresh connection for the confirmation did not
    assert res.result["rollback"]["outcome"] == "unreachable", result.output
    assert "the connection broke" not in res.result["msg"], result.output
    assert "rolled back: the controller could not reconnect" in res.result["msg"], result.output
    assert res.result["rollback_report"] == "rolled back", result.output
    assert ruleset(server, backend) == before
    assert _up(client, SERVER[4])
