# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Confirm or roll back, the target's half (``rollback_timeout``).

Private to the paranoid.netconfine collection. After a run changed the host,
:func:`arm` leaves a detached process (double fork, own session, stdio on
/dev/null, every other descriptor closed — so the connection that ran the
module can end) that holds the engine's applied units. It waits up to
``timeout`` seconds for the controller to create ``CONFIRM_DIR/<token>``
over a *fresh* connection (the collection's action plugin does that); it
then writes ``<token>.ack`` and exits, keeping the change. Without it, it
takes the host lock and puts every applied unit back with ``engine.roll_back``
(the same rollback a failed run gets: rules, persisted files, sysctls), and
writes ``<token>.rolled-back`` with what happened.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

CONFIRM_DIR = "/run/netconfine/confirm"
POLL = 0.1


def paths(token, confirm_dir=CONFIRM_DIR):
    """(confirm, ack, rolled_back) file paths of one armed run."""
    base = os.path.join(confirm_dir, token)
    return base, base + ".ack", base + ".rolled-back"


def arm(applied, token, timeout, lock_timeout=60, confirm_dir=CONFIRM_DIR):
    """Leave the detached watcher behind; returns what the controller needs to confirm."""
    # imported here, not at the top: the action plugin (controller) needs only paths(), and would otherwise
    # load the whole engine on every task; in the module the engine is already loaded (before the fork)
    from ansible_collections.paranoid.netconfine.plugins.module_utils import engine
    if not os.path.isdir(confirm_dir):
        os.makedirs(confirm_dir, 0o700)
    confirm, ack, rolled = paths(token, confirm_dir)
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return {"token": token, "timeout": timeout, "confirm": confirm, "ack": ack, "rolled_back": rolled}
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        _detach()
        _watch(engine, applied, timeout, lock_timeout, confirm, ack, rolled)
    finally:
        os._exit(0)


def _detach():
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, 65536)


def _watch(engine, applied, timeout, lock_timeout, confirm, ack, rolled):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(confirm):
            _write(ack, "confirmed\n")
            os.unlink(confirm)
            return
        time.sleep(POLL)
    try:
        with engine.host_lock(lock_timeout):
            errors = engine.roll_back(applied)
    except Exception as exc:  # the watcher has nobody to report to but this file
        errors = ["%s" % exc]
    _write(rolled, "".join("error: %s\n" % e for e in errors) or "rolled back\n")


def _write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(text)
    os.rename(tmp, path)
