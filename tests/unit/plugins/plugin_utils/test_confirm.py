"""confirm.py (the controller's half of rollback_timeout): the shell it runs on the host, and what it concludes.

The scripts run in a real shell against files in tmp_path (the watcher's files); the connection is a fake.
"""

from __future__ import annotations

import gc
import multiprocessing
import subprocess

import pytest
from ansible.errors import AnsibleConnectionFailure

from ansible_collections.paranoid.netconfine.plugins.module_utils import rollback
from ansible_collections.paranoid.netconfine.plugins.plugin_utils import confirm


def armed(tmp_path, timeout=8):
    path, ack, rolled = rollback.paths("t0ken", str(tmp_path))
    return {"token": "t0ken", "timeout": timeout, "confirm": path, "ack": ack, "rolled_back": rolled}


def sh(script):
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=10, check=False)
    return proc.returncode, proc.stdout


@pytest.mark.parametrize("present, expected", [
    ({"ack": "confirmed\n"}, (0, "confirmed\n")),
    ({"rolled_back": "rolled back\n"}, (0, "rolled-back\nrolled back\n")),
    ({}, (4, "")),
])
def test_the_outcome_script_reports_what_the_watcher_wrote(tmp_path, present, expected):
    run = armed(tmp_path)
    for key, text in present.items():
        (tmp_path / run[key].rsplit("/", 1)[1]).write_text(text)
    assert sh(confirm._outcome_script(run, 0.3)) == expected


def test_the_wait_script_creates_the_confirm_file(tmp_path):
    run = armed(tmp_path)
    assert sh(confirm._wait_script(run, 0.3))[0] == 4         # nobody acked
    assert (tmp_path / "t0ken").exists()


class FakeConnection:
    transport = "ssh"

    def __init__(self, sessions):
        self.sessions, self.resets = list(sessions), 0

    def reset(self):
        self.resets += 1


class Action(confirm.ConfirmingAction):
    """ConfirmingAction without ActionBase's setup: the connection and the host's answers are fakes."""

    def __init__(self, connection, answers):
        self._connection, self.answers, self.ran = connection, list(answers), []

    def _low_level_execute_command(self, cmd, sudoable=True, **_kw):
        self.ran.append(cmd)
        if cmd.startswith("echo"):
            return {"rc": 0, "stdout": self._connection.sessions.pop(0)}
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


BEFORE = "192.0.2.1 40000 192.0.2.10 22\n"
AFTER = "192.0.2.1 40002 192.0.2.10 22\n"


def test_confirmed_over_a_fresh_session(tmp_path):
    action = Action(FakeConnection([AFTER]), [{"rc": 0, "stdout": "confirmed\n"}])
    assert action._confirm(armed(tmp_path), BEFORE.strip()) == ("confirmed", "")
    assert action._connection.resets == 1


def test_the_session_that_ran_the_module_does_not_confirm(tmp_path):
    action = Action(FakeConnection([BEFORE]), [])
    outcome, detail = action._confirm(armed(tmp_path), BEFORE.strip())
    assert outcome == "stale" and "40000" in detail
    assert not any("touch" in c for c in action.ran)          # the confirm file was never created


@pytest.mark.parametrize("answer, outcome", [
    (AnsibleConnectionFailure("Connection reset by peer"), "unreachable"),     # a fast RST
    ({"rc": 255, "stdout": "", "stderr": "kex_exchange_identification: read: Connection reset by peer"}, "failed"),
    ({"rc": 3, "stdout": "rolled back\n"}, "rolled-back"),
    ({"rc": 0, "stdout": ""}, "failed"),                                        # rc 0 without the watcher's ack
])
def test_a_failed_confirmation_is_never_confirmed(tmp_path, answer, outcome):
    action = Action(FakeConnection([AFTER]), [answer])
    assert action._confirm(armed(tmp_path), BEFORE.strip())[0] == outcome


def test_the_report_is_read_again_while_the_host_does_not_answer(tmp_path, monkeypatch):
    monkeypatch.setattr(confirm, "GRACE", 0.01)
    action = Action(FakeConnection([]), [AnsibleConnectionFailure("timed out"),
                                         {"rc": 0, "stdout": "rolled-back\nrolled back\n"}])
    assert action._read(armed(tmp_path)) == ("rolled-back", "rolled back")


def test_a_lost_answer_to_a_received_confirmation_keeps_the_change(tmp_path, monkeypatch):
    monkeypatch.setattr(confirm, "GRACE", 0.0)
    action = Action(FakeConnection([]), [{"rc": 0, "stdout": "confirmed\n"}])
    result = action._rolled_back({"changed": True}, armed(tmp_path, timeout=0), 0, "reset")
    assert not result.get("failed") and result["changed"] and "kept the change" in result["warnings"][0]


def _freeze_in_child(conn):
    before = gc.get_freeze_count()
    froze = confirm.freeze_inherited_heap()
    conn.send((froze, before, gc.get_freeze_count()))
    conn.close()


def test_a_worker_freezes_what_it_inherited_and_a_plain_process_does_not():
    """ansible-playbook's workers are forked multiprocessing children: there the inherited objects leave
    the collector's sight; in the process that imported the plugin (this test's) nothing is frozen."""
    before = gc.get_freeze_count()
    assert confirm.freeze_inherited_heap() is False
    assert gc.get_freeze_count() == before
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_freeze_in_child, args=(child,))
    proc.start()
    froze, child_before, child_after = parent.recv()
    proc.join(10)
    assert froze is True
    assert child_after > child_before
