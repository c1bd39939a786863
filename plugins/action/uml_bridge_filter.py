# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of paranoid.netconfine.uml_bridge_filter: confirm or roll back (rollback_timeout)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.paranoid.netconfine.plugins.plugin_utils.confirm import ConfirmingAction


class ActionModule(ConfirmingAction):
    """Runs uml_bridge_filter; with rollback_timeout, confirms the change over a fresh connection."""
