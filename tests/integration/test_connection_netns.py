"""paranoid.netconfine.netns: every task runs inside its host's own network namespace."""

from __future__ import annotations

import pwd
from pathlib import Path

import pytest

from nchelpers import ansible_playbook, new_name, run

WHERE_AND_FACTS = """
- hosts: all
  gather_facts: true
  tasks:
    - name: barrier - both hosts are inside this task at the same time
      ansible.builtin.shell: |
        touch {{ barrier }}/{{ inventory_hostname }}
        for i in $(seq 200); do [ "$(ls {{ barrier }} | wc -l)" -ge 2 ] && exit 0; sleep 0.05; done
        exit 1
      changed_when: false
    - name: where
      ansible.builtin.command: ip netns identify
      changed_when: false
"""


def test_two_hosts_in_parallel_each_in_its_own_namespace(make_netns, tmp_path):
    hosts = [make_netns(), make_netns()]
    bridge = {ns: "br" + ns[-9:].replace("-", "") for ns in hosts}  # an interface only this namespace has
    for ns in hosts:
        run("ip", "-n", ns, "link", "add", bridge[ns], "type", "bridge")
    play = ansible_playbook(WHERE_AND_FACTS, hosts, {"barrier": str(tmp_path)}, forks=2)
    assert play.rc == 0, play.output
    for ns in hosts:
        assert play.task(ns, "where").result["stdout"] == ns
        facts = play.task(ns, "Gathering Facts").result["ansible_facts"]
        assert sorted(facts["ansible_interfaces"]) == sorted(["lo", bridge[ns]]), play.output


def test_namespace_name_from_ansible_netns_then_ansible_host_then_inventory_name(make_netns):
    by_netns, by_host, by_name = make_netns(), make_netns(), make_netns()
    missing = new_name()  # never created
    hosts = {
        "alpha": {"ansible_netns": by_netns, "ansible_host": missing},  # ansible_netns wins
        "beta": {"ansible_host": by_host},
        by_name: {},
    }
    play = ansible_playbook("""
        - hosts: all
          gather_facts: false
          tasks:
            - name: where
              ansible.builtin.command: ip netns identify
        """, hosts)
    assert play.rc == 0, play.output
    assert play.task("alpha", "where").result["stdout"] == by_netns
    assert play.task("beta", "where").result["stdout"] == by_host
    assert play.task(by_name, "where").result["stdout"] == by_name


def test_missing_namespace_is_unreachable_and_named(netns_host):
    missing = new_name()
    play = ansible_playbook("""
        - hosts: all
          gather_facts: false
          tasks:
            - name: ping
              ansible.builtin.ping:
        """, [netns_host, missing])
    assert play.rc == 4, play.output  # 4: some hosts unreachable
    assert play.task(netns_host, "ping").status == "ok"
    res = play.task(missing, "ping")
    assert res.status == "unreachable"
    assert missing in res.msg and "does not exist" in res.msg
    assert play.stats[missing]["unreachable"] == 1


BECOME = """
- hosts: all
  gather_facts: false
  become: true
  become_user: "{{ test_user }}"
  tasks:
    - name: whoami
      ansible.builtin.command: id -un
    - name: where
      ansible.builtin.command: ip netns identify
    - name: write a file as the user
      ansible.builtin.copy:
        content: "written by {{ test_user }}\\n"
        dest: "{{ workdir }}/by-user.txt"
        mode: "0644"
"""


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "no-pipelining"])
@pytest.mark.parametrize("method", [
    {"ansible_become_method": "sudo"},
    {"ansible_become_method": "su"},
    {"ansible_become_method": "su", "ansible_become_exe": "runuser"},
], ids=["sudo", "su", "runuser"])
def test_become_an_unprivileged_user_inside_the_namespace(netns_host, make_user, method, pipelining):
    user = make_user()
    workdir = Path(pwd.getpwnam(user).pw_dir)
    play = ansible_playbook(BECOME, {netns_host: dict(method, ansible_pipelining=pipelining)},
                            {"test_user": user, "workdir": str(workdir)})
    assert play.rc == 0, play.output
    assert play.task(netns_host, "whoami").result["stdout"] == user
    assert play.task(netns_host, "where").result["stdout"] == netns_host
    assert play.task(netns_host, "write a file as the user").changed
    assert (workdir / "by-user.txt").read_text() == f"written by {user}\n"
    assert (workdir / "by-user.txt").owner() == user


PING_AND_COPY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: ping
      ansible.builtin.ping:
    - name: copy
      ansible.builtin.copy:
        content: "hello from the controller\\n"
        dest: "{{ workdir }}/copied.txt"
        mode: "0600"
    - name: fetch
      ansible.builtin.fetch:
        src: "{{ workdir }}/copied.txt"
        dest: "{{ workdir }}/fetched/"
        flat: true
"""


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "no-pipelining"])
def test_pipelining_and_file_transfer(netns_host, tmp_path, pipelining):
    play = ansible_playbook(PING_AND_COPY, {netns_host: {"ansible_pipelining": pipelining}},
                            {"workdir": str(tmp_path)}, args=("-vvv",))
    assert play.rc == 0, play.output
    assert play.task(netns_host, "ping").result["ping"] == "pong"
    assert (tmp_path / "copied.txt").read_text() == "hello from the controller\n"
    assert (tmp_path / "fetched" / "copied.txt").read_text() == "hello from the controller\n"
    # a pipelined module goes through stdin: no AnsiballZ file is put for ping
    module_puts = [line for line in play.output.splitlines() if " PUT " in line and "AnsiballZ_ping" in line]
    assert bool(module_puts) is not pipelining, play.output
    assert f"netns exec {netns_host} /bin/sh -c" in play.output
