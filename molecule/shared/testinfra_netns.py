"""testinfra for network-namespace hosts: run commands with ``ip netns exec NS sh -c CMD``.

testinfra's ansible backend falls back to one ``ansible -m shell`` per command for connection
plugins it does not know (about 2 s each); this backend runs the command directly inside the
namespace (milliseconds). Use it from a Molecule scenario's ``tests/conftest.py``:

    from testinfra_netns import host  # noqa: F401  (overrides testinfra's host fixture)

with ``molecule/shared`` on PYTHONPATH (the scenario's ``verifier.env``). The namespace of each
Ansible host is its ``ansible_netns``, else ``ansible_host``, else the inventory name - the same
rule as the paranoid.netconfine.netns connection plugin. ``host.ansible(...)`` is not available
on these hosts; use ``host.run``, ``host.file``, ``host.interface``, ``host.socket`` ...
"""

from __future__ import annotations

import pytest
import testinfra
import testinfra.backend
from testinfra.backend import base


class NetnsBackend(base.BaseBackend):
    """``netns://NAME``: run commands as root inside the named network namespace."""

    NAME = "netns"

    def __init__(self, name: str, *args, **kwargs):
        self.name = name
        super().__init__(name, *args, **kwargs)

    def run(self, command: str, *args: str, **kwargs) -> base.CommandResult:
        cmd = self.get_command(command, *args)
        out = self.run_local("ip netns exec %s /bin/sh -c %s", self.name, cmd)
        out.command = self.encode(cmd)
        return out


testinfra.backend.BACKENDS.setdefault("netns", f"{__name__}.NetnsBackend")


def netns_of(ansible_host: testinfra.host.Host) -> str:
    """The namespace an Ansible inventory host (from testinfra's ansible backend) stands for."""
    backend = ansible_host.backend
    hostvars = backend.ansible_runner.get_variables(backend.host)
    return hostvars.get("ansible_netns") or hostvars.get("ansible_host") or backend.host


@pytest.fixture(scope="module")
def host(_testinfra_host):
    """testinfra's ``host``, but running commands directly inside the host's namespace."""
    return testinfra.get_host(f"netns://{netns_of(_testinfra_host)}")
