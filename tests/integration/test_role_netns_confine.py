"""Role paranoid.netconfine.netns_confine on a machine namespace host: the seed's daemon on 10105 as a user.

Same topology as test_netns_service (its fixtures): converge, idempotence, the outside client reaches the daemon
through the forward only, the daemon's /tmp is private; the role's handler, notified, restarts the daemon the
launcher started (a new process; test_systemd_real proves the same for a systemd unit), a run that notifies
nothing leaves it alone; then the item marked absent leaves nothing.
"""

from __future__ import annotations

import os

import yaml

import nchelpers
from nchelpers import SYSTEM_PYTHON, ansible_playbook
from test_netns_service import LAUNCHERS, OTHER_PORT, PORT, TMP_DAEMON, UPLINK, ask, hosts, links_of
# the site fixture, used by name
from test_netns_service import site  # noqa: F401 pylint: disable=unused-import


def role_play(services, notify=False):
    tasks = [{"name": "netns_confine", "ansible.builtin.include_role": {"name": "paranoid.netconfine.netns_confine"},
              "vars": {"netns_confine_services": services, "netns_confine_backend": "nftables"}}]
    if notify:       # what a task that changes the daemon's configuration does
        tasks.append({"name": "configuration", "ansible.builtin.command": "true", "changed_when": True,
                      "notify": "netns_confine restart"})
    return yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": tasks}], sort_keys=False)


def changed_tasks(play, host):
    return [r.task for r in play.results.get(host, []) if r.changed]


def test_role_seed_daemon_idempotent_and_removed(site, make_user):
    machine, client, name = site
    user = make_user()
    entry, script = nchelpers.user_file(user, TMP_DAEMON)
    item = {"name": name, "subnet": "192.0.2.0/30", "outbound_interface": "m0", "dns": ["192.0.2.53"],
            "port_forwards": [{"protocol": "tcp", "host_port": PORT}],
            "service": {"exec": SYSTEM_PYTHON, "args": [str(script), str(PORT), name], "user": user, "start": True}}
    first = ansible_playbook(role_play([item]), hosts(machine))
    assert first.rc == 0, first.output
    assert first.stats[machine]["changed"] == 1, first.output
    second = ansible_playbook(role_play([item]), hosts(machine))
    assert second.rc == 0 and second.stats[machine]["changed"] == 0, second.output
    assert ask(client, UPLINK, PORT) == "uid=%d tmp=True" % entry.pw_uid
    assert ask(client, UPLINK, OTHER_PORT) == "error ConnectionRefusedError"
    assert not os.path.exists("/tmp/netconfine-daemon-" + name)
    # the handler runs when notified and restarts the daemon the launcher started: a new process
    pids = nchelpers.run("ip", "netns", "pids", name).stdout.split()
    assert len(pids) == 1
    notified = ansible_playbook(role_play([item], notify=True), hosts(machine))
    assert notified.rc == 0, notified.output
    runs = [r for r in notified.results[machine] if r.action.endswith("netns_service")]
    assert [r.changed for r in runs] == [False, True], notified.output      # the role's task, then the handler
    restarted = nchelpers.run("ip", "netns", "pids", name).stdout.split()
    assert len(restarted) == 1 and restarted != pids, notified.output
    assert ask(client, UPLINK, PORT) == "uid=%d tmp=True" % entry.pw_uid
    # nothing notified: the same process
    quiet = ansible_playbook(role_play([item]), hosts(machine))
    assert quiet.rc == 0 and quiet.stats[machine]["changed"] == 0, quiet.output
    assert nchelpers.run("ip", "netns", "pids", name).stdout.split() == restarted

    gone = ansible_playbook(role_play([dict(item, state="absent")]), hosts(machine))
    assert gone.rc == 0 and gone.stats[machine]["changed"] == 1, gone.output
    assert links_of(machine, name) == {"netns": False, "vh": False, "resolv": False}
    assert not os.path.exists(LAUNCHERS + "/ns-" + name)
