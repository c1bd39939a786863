# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Confirm or roll back, the controller's half: the action plugin of every changing module.

Private to the paranoid.netconfine collection. Without ``rollback_timeout``
(or in check mode) the module runs as usual. With it, the module gets a fresh
token; if it changed the host it arms a watcher there (``module_utils.rollback``)
and returns its paths. This plugin then drops the connection (``reset()``: for
SSH, ``ssh -O stop`` of a ControlPersist master, so the confirmation cannot
travel over the session that was open before the change), connects again and
creates the confirm file; the watcher answers with ``.ack``. If that fails,
the host rolls itself back when the timeout runs out: the plugin waits for
that, reads the watcher's report over yet another fresh connection where it
can, and fails the task with ``rolled back: the controller could not reconnect``.

It also tells the module the management path for the static lockout guard
(``module_utils.lockout``): ``management_path``, the address(es) and port this
connection reaches the host by, or no addresses where the connection has no
network path (local, netns, containers).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import gc
import multiprocessing
import shlex
import socket
import time
import uuid

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.action import ActionBase

from ansible_collections.paranoid.netconfine.plugins.module_utils import rollback

ACK_WAIT = 5.0        # seconds the watcher has to answer a confirmation it received
GRACE = 3.0           # seconds after the timeout before the report is read
# connection plugins that reach the host over the network with SSH (the management path the guard protects)
SSH_TRANSPORTS = ("ssh", "paramiko", "paramiko_ssh", "ansible.builtin.ssh", "ansible.builtin.paramiko_ssh")


def _option(connection, name):
    try:
        return connection.get_option(name)
    except Exception:  # a plugin without that option
        return None


def management_path(connection, play_context):
    """``management_path`` for the module: how this connection reaches the host (no addresses: no network path)."""
    transport = getattr(connection, "transport", None) or ""
    if transport not in SSH_TRANSPORTS:
        return {"connection": transport, "addresses": []}
    host = _option(connection, "host") or getattr(play_context, "remote_addr", None)
    port = _option(connection, "port") or _option(connection, "remote_port")
    addresses, sources = [], []
    try:
        infos = socket.getaddrinfo(host, port or 22, 0, socket.SOCK_STREAM)
    except (socket.error, TypeError, UnicodeError):
        infos = []
    for family, _type, _proto, _name, sockaddr in infos:
        if sockaddr[0] in addresses:
            continue
        addresses.append(sockaddr[0])
        probe = socket.socket(family, socket.SOCK_DGRAM)
        try:        # the controller's own source address towards the host (no packet is sent)
            probe.connect(sockaddr)
            sources.append(probe.getsockname()[0])
        except socket.error:
            pass
        finally:
            probe.close()
    return {"connection": transport, "addresses": addresses, "port": int(port) if port else None,
            "sources": sources}


def _poll_script(armed, seconds, checks, before=""):
    """Shell: ``before``, then every 0.1 s for ``seconds`` each of ``checks`` in turn; exit 4 when none ended it."""
    return ("%si=0; while [ $i -lt {n} ]; do %ssleep 0.1; i=$((i+1)); done; exit 4" % (before, "".join(checks))).format(
        confirm=shlex.quote(armed["confirm"]), ack=shlex.quote(armed["ack"]),
        rolled=shlex.quote(armed["rolled_back"]), n=int(seconds * 10))


_ACKED = "[ -e {ack} ] && {{ echo confirmed; rm -f {ack}; exit 0; }}; "


def _wait_script(armed, seconds):
    """Shell: create the confirm file, then wait for the watcher's ack (rc 0) or rollback report (rc 3)."""
    return _poll_script(armed, seconds, (_ACKED, "[ -e {rolled} ] && {{ cat {rolled}; exit 3; }}; "),
                        before="touch {confirm} && ")


def _outcome_script(armed, seconds):
    """Shell: wait for the watcher's end, print ``rolled-back`` and its report, or ``confirmed`` (rc 4: none)."""
    return _poll_script(armed, seconds, ("[ -e {rolled} ] && {{ echo rolled-back; cat {rolled}; exit 0; }}; ", _ACKED))


def freeze_inherited_heap():
    """In a worker process (forked by ansible-playbook for one task on one host): keep the garbage collector
    off the objects the worker inherited. Returns whether it froze them.

    A worker starts with the main process's whole heap: the play, its variables, 1,000 inline rules
    (~10^5 objects). Building the module's payload (Ansible AST-parses every module_util it ships)
    allocates enough to set off full collections, and each one walks that inherited heap again (and
    touches its pages, which copy-on-write then copies). ``gc.freeze()`` (Python >= 3.7; the ``gc``
    documentation has the parent freeze right before ``fork()`` so that a child's collections leave its
    objects alone, and freezing first thing in the child does the same for the child's own collections)
    moves what exists now into a generation no collection looks at, splicing lists without touching the
    objects; the worker ends with the task, so nothing frozen lives on. Measured in the
    worker, owner_rule with 1,000 inline rules: 0.13 -> 0.05 s of collection, 0.49 -> 0.42 s of CPU.
    Not in a process that did not come from ``multiprocessing`` (a test calling the plugin in-process).
    """
    if multiprocessing.parent_process() is None:
        return False
    gc.freeze()
    return True


class ConfirmingAction(ActionBase):
    """Runs the module of the same name; confirms its change over a fresh connection when asked."""

    def run(self, tmp=None, task_vars=None):
        freeze_inherited_heap()
        result = super(ConfirmingAction, self).run(tmp, task_vars)
        args = dict(self._task.args)
        try:
            timeout = int(args.get("rollback_timeout") or 0)
        except (TypeError, ValueError):
            timeout = 0       # the module names the field
        args["management_path"] = management_path(self._connection, self._play_context)
        ran_over = None
        if timeout > 0 and not self._task.check_mode:
            args["rollback_token"] = uuid.uuid4().hex
            self._keepalive(timeout)
            ran_over = self._session()
        module = self._task.resolved_action or self._task.action
        started = time.monotonic()
        try:
            result.update(self._execute_module(module_name=module, module_args=args, task_vars=task_vars))
        except AnsibleConnectionFailure as exc:
            if "rollback_token" not in args:
                raise
            # the change cut the session that ran the module (a reset sent to sshd, say): the host is armed
            confirm, ack, rolled = rollback.paths(args["rollback_token"])
            armed = {"token": args["rollback_token"], "timeout": timeout, "confirm": confirm, "ack": ack,
                     "rolled_back": rolled, "outcome": "unreachable"}
            rolled_back = self._rolled_back(result, armed, started, "the connection broke: %s" % exc)
            if rolled_back.get("rollback_report") is None:
                raise        # no watcher ever wrote a report: the module did not get to arm one
            return rolled_back
        armed = result.get("rollback")
        if not armed or result.get("failed"):
            return result
        outcome, detail = self._confirm(armed, ran_over)
        armed["seconds"] = round(time.monotonic() - started, 1)
        armed["outcome"] = outcome
        if outcome == "confirmed":
            return result
        return self._rolled_back(result, armed, started, detail)

    def _keepalive(self, timeout):
        """Run the module over an SSH connection that notices a dead peer within about ``timeout`` seconds.

        A lockout can kill sshd's end of the session without a word to the controller (a REJECT with
        tcp-reset in OUTPUT resets sshd's own socket): an idle ssh client would then wait for the module's
        answer for hours. With ServerAlive messages it fails (no answer, or the host's reset once it rolled
        back), and the task goes on to read the host's report. A connection silent for that long would be
        rolled back anyway. The master of ControlPersist is restarted so that it has the options.
        """
        if getattr(self._connection, "transport", None) not in ("ssh", "ansible.builtin.ssh"):
            return
        extra = _option(self._connection, "ssh_extra_args") or ""
        if any("ServerAliveInterval" in (_option(self._connection, name) or "")
               for name in ("ssh_args", "ssh_common_args", "ssh_extra_args")):
            return      # the inventory's own setting
        self._connection.set_option("ssh_extra_args", (extra + " -o ServerAliveInterval=%d -o ServerAliveCountMax=3"
                                                       % max(1, timeout // 3)).strip())
        self._fresh()

    def _session(self):
        """The SSH session's identity (SSH_CONNECTION: addresses and ports), or None where it is not known."""
        if getattr(self._connection, "transport", None) not in SSH_TRANSPORTS:
            return None
        try:
            res = self._low_level_execute_command('echo "$SSH_CONNECTION"', sudoable=False)
        except AnsibleConnectionFailure:
            return None
        text = (res.get("stdout") or "").strip()
        return text if res.get("rc") == 0 and len(text.split()) == 4 else None

    def _fresh(self):
        try:
            self._connection.reset()
        except Exception:  # a plugin without reset: close what we can
            self._connection.close()

    def _rolled_back(self, result, armed, started, detail):
        """Wait until the host restored itself (timeout + grace), read its report, fail the task.

        The report is read over a fresh connection, retried while the host does not answer yet; a host whose
        watcher got the confirmation after all (the answer to it was lost) kept the change: the task then
        succeeds with a warning instead.
        """
        time.sleep(max(0.0, armed["timeout"] + GRACE - (time.monotonic() - started)))
        state, report = self._read(armed)
        if state == "confirmed":
            armed["outcome"] = "confirmed"
            result.setdefault("warnings", []).append(
                "the host received the confirmation and kept the change, but its answer was lost (%s)" % detail)
            return result
        result.update(failed=True, changed=False, rolled_back=True, rollback_report=report, rollback=armed,
                      msg="rolled back: the controller could not reconnect within %ds after the change (%s); "
                          "the host put back what it held before the run" % (armed["timeout"], detail))
        return result

    def _confirm(self, armed, ran_over=None):
        """Confirm over a fresh connection: (outcome, detail); ``confirmed`` only when the watcher acked."""
        self._fresh()
        try:
            now = self._session() if ran_over else None
            if now is not None and now == ran_over:
                # reset() did not end the session the module ran over: confirming there would prove nothing
                return "stale", "the connection after the change was the one before it (%s)" % now
            res = self._low_level_execute_command(_wait_script(armed, ACK_WAIT), sudoable=True)
        except AnsibleConnectionFailure as exc:
            return "unreachable", "%s" % exc
        if res["rc"] == 0 and "confirmed" in (res.get("stdout") or ""):
            return "confirmed", ""
        if res["rc"] == 3:
            return "rolled-back", "the timeout ran out first"
        return "failed", (res.get("stderr") or res.get("stdout") or "rc %s" % res["rc"]).strip()

    def _read(self, armed, attempts=3):
        """(state, report) of the watcher over a fresh connection: rolled-back / confirmed / None (no watcher)."""
        failure = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(GRACE)
            self._fresh()
            try:
                res = self._low_level_execute_command(_outcome_script(armed, GRACE * 2), sudoable=True)
            except AnsibleConnectionFailure as exc:
                failure = exc
                continue
            if res["rc"] != 0:
                return None, None          # no report: nothing was armed
            lines = (res.get("stdout") or "").strip().splitlines()
            state = lines[0].strip() if lines else ""
            if state in ("rolled-back", "confirmed"):
                return state, "\n".join(lines[1:]).strip() or None
            return None, None
        return "rolled-back", "host still unreachable after the timeout: %s" % failure
