# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark control, not part of the collection: a module that takes a task's rules and does nothing.

It separates Ansible's own cost of carrying N rules through one task (parse the
play, template the arguments, send them to the host, echo them back in
``invocation``, hand the task back to the controller) from the module's work.
Its only option, ``rules``, is a list of dicts without suboptions.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec=dict(rules=dict(type="list", elements="dict", default=[])),
        supports_check_mode=True,
    )
    module.exit_json(changed=False, count=len(module.params["rules"]))


if __name__ == "__main__":
    main()
