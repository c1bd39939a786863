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


def _wait_script(armed, seconds):
    """Shell: create the confirm file, then wait for the watcher's ack (rc 0) or rollback report (rc 3)."""
    return ("touch {confirm} && i=0; while [ $i -lt {n} ]; do "
            "[ -e {ack} ] && {{ echo confirmed; rm -f {ack}; exit 0; }}; "
            "[ -e {rolled} ] && {{ cat {rolled}; exit 3; }}; sleep 0.1; i=$((i+1)); done; exit 4").format(
        confirm=shlex.quote(armed["confirm"]), ack=shlex.quote(armed["ack"]),
        rolled=shlex.quote(armed["rolled_back"]), n=int(seconds * 10))


class ConfirmingAction(ActionBase):
    """Runs the module of the same name; confirms its change over a fresh connection when asked."""

    def run(self, tmp=None, task_vars=None):
        result = super(ConfirmingAction, self).run(tmp, task_vars)
        args = dict(self._task.args)
        try:
            timeout = int(args.get("rollback_timeout") or 0)
        except (TypeError, ValueError):
            timeout = 0       # the module names the field
        if timeout > 0 and not self._task.check_mode:
            args["rollback_token"] = uuid.uuid4().hex
        args["management_path"] = management_path(self._connection, self._play_context)
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
                     "rolled_back": rolled}
            rolled_back = self._rolled_back(result, armed, started, "the connection broke: %s" % exc)
            if rolled_back["rollback_report"] is None:
                raise        # no watcher ever wrote a report: the module did not get to arm one
            return rolled_back
        armed = result.get("rollback")
        if not armed or result.get("failed"):
            return result
        outcome, detail = self._confirm(armed)
        armed["seconds"] = round(time.monotonic() - started, 1)
        armed["outcome"] = outcome
        if outcome == "confirmed":
            return result
        return self._rolled_back(result, armed, started, detail)

    def _rolled_back(self, result, armed, started, detail):
        """Wait until the host restored itself (timeout + grace), read its report, fail the task."""
        time.sleep(max(0.0, armed["timeout"] + GRACE - (time.monotonic() - started)))
        report = self._read(armed["rolled_back"])
        result.update(failed=True, changed=False, rolled_back=True, rollback_report=report, rollback=armed,
                      msg="rolled back: the controller could not reconnect within %ds after the change (%s); "
                          "the host put back what it held before the run" % (armed["timeout"], detail))
        return result

    def _confirm(self, armed):
        try:
            self._connection.reset()
        except Exception:  # a plugin without reset: close what we can
            self._connection.close()
        try:
            res = self._low_level_execute_command(_wait_script(armed, ACK_WAIT), sudoable=True)
        except AnsibleConnectionFailure as exc:
            return "unreachable", "%s" % exc
        if res["rc"] == 0:
            return "confirmed", ""
        if res["rc"] == 3:
            return "rolled-back", "the timeout ran out first"
        return "failed", (res.get("stderr") or res.get("stdout") or "rc %s" % res["rc"]).strip()

    def _read(self, path):
        """The watcher's report over a fresh connection; None where there is none."""
        try:
            self._connection.reset()
        except Exception:
            self._connection.close()
        try:
            res = self._low_level_execute_command("cat %s" % shlex.quote(path), sudoable=True)
        except AnsibleConnectionFailure as exc:
            return "host still unreachable after the timeout: %s" % exc
        if res["rc"] != 0:
            return None       # no report: nothing was armed
        return (res.get("stdout") or "").strip()
