# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors of the netconfine engine.

This module_utils package is private to the paranoid.netconfine collection:
its interfaces may change at any release; do not import it from elsewhere.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class NetconfineError(Exception):
    """A failure that a module reports with ``fail_json``.

    ``field`` names the parameter at fault (``rules[2].uid_owner``) when the
    failure comes from input; ``details`` carries anything useful for the
    operator (the command that failed, its stderr, what the kernel holds).
    """

    def __init__(self, message, field=None, **details):
        self.field = field
        self.details = details
        text = "%s: %s" % (field, message) if field else message
        super(NetconfineError, self).__init__(text)

    @property
    def message(self):
        return str(self)


class NotConverged(NetconfineError):
    """The kernel's state after apply differs from what was rendered."""
