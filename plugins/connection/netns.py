# Copyright (c) 2025 paranoid.netconfine developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: netns
short_description: Run tasks inside a named network namespace on the controller
description:
  - Runs every task of a host inside a named network namespace of the machine that runs Ansible,
    with C(ip netns exec NAME). The namespace is created beforehand with C(ip netns add NAME).
  - C(ip netns exec) gives the task the namespace's network stack and remounts C(/sys) for it,
    so C(ansible_facts) (interfaces, addresses, routes) and the netfilter state the task sees
    (C(iptables-save), C(nft list ruleset)) are the namespace's own.
  - Everything else is shared with the controller - the file system, users, groups and processes.
    Files are therefore transferred by a plain copy, and a task that creates a user or writes
    a file affects every namespace host.
  - This makes a network namespace a cheap, disposable "host" for testing firewall content
    (real kernel netfilter, real sockets, no virtual machine).
author: paranoid.netconfine developers (@paranoid-netconfine)
version_added: 0.1.0
options:
  netns:
    description:
      - Name of the network namespace to run tasks in, as listed by C(ip netns list).
      - Taken from the first of C(ansible_netns), C(ansible_host) and the inventory host name that is set.
      - A namespace that does not exist makes the host unreachable, with its name in the message.
    type: str
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_netns
  ip_executable:
    description:
      - The C(ip) program (iproute2) used to enter the namespace.
    type: str
    default: ip
    vars:
      - name: ansible_netns_ip_executable
    env:
      - name: ANSIBLE_NETNS_IP_EXECUTABLE
    ini:
      - section: netns_connection
        key: ip_executable
  become_success_timeout:
    description:
      - Number of seconds to wait for become to succeed when enabled.
      - The default will be used if the configured value is less than 1.
    type: int
    default: 10
    vars:
      - name: ansible_netns_become_success_timeout
  become_strip_preamble:
    description:
      - Strip internal become output preceding command execution. Disable for additional diagnostics.
    type: bool
    default: true
    vars:
      - name: ansible_netns_become_strip_preamble
extends_documentation_fragment:
  - ansible.builtin.connection_pipelining
notes:
  - The Ansible controller process must run as root, because entering a network namespace needs
    C(CAP_SYS_ADMIN). The remote user setting is ignored; tasks run as the controller's user.
  - The namespace is entered first, as root, and privileges are dropped inside it. This is the order
    the kernel allows; the other order (C(runuser) then C(ip netns exec)) fails with
    C(Operation not permitted).
  - C(become) works with C(sudo) and C(su) (as root neither asks for a password). To use
    C(runuser) instead, set C(become_method=su) and C(become_exe=runuser). C(su) and C(runuser)
    start the target user's login shell; for an account whose shell is C(nologin), add
    C(become_flags='-s /bin/sh').
  - With C(become) to an unprivileged user the module runs under that user, so the Python interpreter
    must be one that user can read and execute, for example the system C(/usr/bin/python3)
    (set C(ansible_python_interpreter=/usr/bin/python3)), not one under C(/root).
  - Pipelining is supported and recommended.
  - "Ad hoc: C(ip netns add demo && ansible all -i demo, -c paranoid.netconfine.netns -m ansible.builtin.setup -a filter=ansible_interfaces)."
seealso:
  - name: ip-netns(8)
    description: Process network namespace management.
    link: https://man7.org/linux/man-pages/man8/ip-netns.8.html
"""

EXAMPLES = r"""
# inventory.yml - one host per namespace (create them first: ip netns add nclab-crueller ...)
all:
  vars:
    ansible_connection: paranoid.netconfine.netns
    ansible_python_interpreter: /usr/bin/python3
    ansible_pipelining: true
  hosts:
    crueller:
      ansible_netns: nclab-crueller
    strudel:
      ansible_netns: nclab-strudel
    nclab-umlhost: {}   # no ansible_netns/ansible_host: the host name is the namespace name

# A task that runs as an unprivileged user inside the namespace
# - name: Try the tunnel as a local user
#   ansible.builtin.command: nc -z -w 2 127.0.0.1 992
#   become: true
#   become_user: alice
#   become_method: su
#   become_flags: -s /bin/sh
"""

import os
import shlex

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.connection.local import Connection as LocalConnection
from ansible.utils.display import Display

display = Display()

NETNS_RUN_DIR = "/run/netns"

# What `ip netns exec` prints when the namespace vanished between tasks.
_MISSING_NETNS_STDERR = b"Cannot open network namespace"


class Connection(LocalConnection):
    """Local execution, wrapped in ``ip netns exec NAME``."""

    transport = "paranoid.netconfine.netns"
    has_pipelining = True

    @property
    def netns(self) -> str:
        name = self.get_option("netns")
        if not name or "/" in name or name in (".", ".."):
            raise AnsibleConnectionFailure(f"invalid network namespace name {name!r}")
        return name

    def _connect(self) -> Connection:
        if not self._connected:
            name = self.netns
            if not os.path.exists(os.path.join(NETNS_RUN_DIR, name)):
                raise AnsibleConnectionFailure(
                    f"network namespace {name!r} does not exist "
                    f"(no {NETNS_RUN_DIR}/{name}); create it with: ip netns add {name}"
                )
            display.vvv(f"ESTABLISH NETNS CONNECTION TO {name}", host=name)
        return super()._connect()

    def reset(self) -> None:
        """Every command is a new ``ip netns exec`` process: there is no session to keep or reset."""
        self._connected = False

    def exec_command(self, cmd: str, in_data: bytes | None = None, sudoable: bool = True) -> tuple[int, bytes, bytes]:
        """Run ``cmd`` with /bin/sh inside the namespace, as the controller's user (then become)."""
        if not isinstance(cmd, str):
            cmd = shlex.join(cmd)
        wrapped = shlex.join([self.get_option("ip_executable"), "netns", "exec", self.netns, "/bin/sh", "-c", cmd])
        rc, stdout, stderr = super().exec_command(wrapped, in_data=in_data, sudoable=sudoable)
        if rc == 255 and stderr.startswith(_MISSING_NETNS_STDERR):
            raise AnsibleConnectionFailure(
                f"network namespace {self.netns!r} could not be entered: {stderr.decode(errors='replace').strip()}"
            )
        return rc, stdout, stderr
