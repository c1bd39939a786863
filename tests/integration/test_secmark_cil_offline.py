"""Offline SELinux tier: every CIL module secmark_label can render compiles against Debian's reference
policy with ``secilc``; a broken one fails; the store seam works with the real ``semodule`` on a private
copy of this machine's store (``semodule -p COPY -n``: nothing of the host's policy changes).

Wall time: about 25 s for the compiles (each secilc run of the whole policy takes ~11 s here) and
about 40 s for the store test (each semodule transaction rebuilds the policy, ~10 s).
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils import engine, selinux_store
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError
from ansible_collections.paranoid.netconfine.plugins.module_utils.secmark_model import build_policy
from ansible_collections.paranoid.netconfine.plugins.module_utils.selinux_store import SelinuxStore

import selinux_offline

SSH_IN = {"direction": "input", "protocol": "tcp", "destination_port": "22", "packet_type": "ssh_server_packet_t"}

# Every shape the CIL renderer has: kinds, several domains and types, allow_unlabeled for all domains
# (the attribute) or for named ones, with and without auditallow. Type names differ so that all
# compile together in one secilc run.
VARIANTS = [
    dict(name="article", packet_types=[{"name": "myhttp_client_packet_t", "kind": "client", "domains": ["mozilla_t"]}],
         allow_unlabeled={"domains": None, "audit": True}, labels=[]),
    dict(name="server", packet_types=[{"name": "nctest_srv_packet_t", "kind": "server",
                                       "domains": ["httpd_t", "sshd_t"]},
                                      {"name": "nctest_cli_packet_t", "kind": "client", "domains": []}],
         labels=[SSH_IN]),
    dict(name="unlabeled-named", packet_types=[], allow_unlabeled={"domains": ["sshd_t", "mozilla_t"],
                                                                   "audit": False}, labels=[]),
    dict(name="unlabeled-audited", packet_types=[{"name": "nctest_b_packet_t", "kind": "client",
                                                  "domains": ["user_t", "staff_t", "sysadm_t"]}],
         allow_unlabeled={"domains": ["user_t"], "audit": True}, labels=[]),
]


def module_of(params):
    base = {"state": "present", "packet_types": [], "labels": []}
    base.update(params)
    (found,) = [r for r in build_policy(base).resources if isinstance(r, selinux_store.SelinuxModule)]
    return found


def write(tmp_path, mod):
    path = tmp_path / ("%s.cil" % mod.name)
    path.write_text(mod.cil)
    return str(path)


def test_every_rendered_module_compiles_against_the_reference_policy(tmp_path):
    paths = [write(tmp_path, module_of(v)) for v in VARIANTS]
    rc, out = selinux_offline.compile_cil(paths)
    assert rc == 0, out


def test_a_module_naming_an_unknown_domain_does_not_compile(tmp_path):
    mod = module_of(dict(name="broken", packet_types=[{"name": "nctest_x_packet_t", "domains": ["nosuch_t"]}],
                         allow_unlabeled={"domains": None, "audit": True}))
    rc, out = selinux_offline.compile_cil([write(tmp_path, mod)])
    assert rc != 0
    assert "nosuch_t" in out or "Failed to resolve" in out, out


@pytest.fixture
def private_store(tmp_path):
    root = selinux_offline.store_copy(str(tmp_path / "root"))
    fs = tmp_path / "selinuxfs"        # this machine's SELinux is inactive: only the preflight's file
    fs.mkdir()
    (fs / "enforce").write_text("0")
    calls = []

    def run(argv, data=None):
        import subprocess
        calls.append(argv)
        proc = subprocess.run([argv[0], "-p", root, "-n"] + argv[1:], capture_output=True, text=True, check=False)
        return proc.returncode, proc.stdout, proc.stderr

    seam = SelinuxStore(run, semodule="/usr/sbin/semodule", selinuxfs=str(fs),
                        store_root=os.path.join(root, "var/lib/selinux"), config=os.path.join(root, "etc/selinux/config"))
    return seam, calls


class NoRules:
    name = "none"

    def units(self, policy):
        return ()


def test_store_installs_once_refuses_broken_and_removes(private_store, lock_dir):
    seam, calls = private_store
    article = build_policy(dict(VARIANTS[0], state="present"))
    assert engine.converge(article, [NoRules()], states=[seam])["changed"]
    installs = [c for c in calls if "-i" in c]
    assert len(installs) == 1
    again = engine.converge(article, [NoRules()], states=[seam])
    assert not again["changed"] and [c for c in calls if "-i" in c] == installs

    broken = build_policy(dict(VARIANTS[0], state="present", packet_types=[
        {"name": "myhttp_client_packet_t", "kind": "client", "domains": ["mozilla_t", "nosuch_t"]}]))
    with pytest.raises(NetconfineError) as err:
        engine.converge(broken, [NoRules()], states=[seam])
    assert err.value.field == "packet_types[0].domains[1]", str(err.value)
    assert "Failed to resolve" in str(err.value)
    # the store still holds the article's module, unchanged
    assert not engine.converge(article, [NoRules()], states=[seam], check_mode=True)["changed"]

    gone = build_policy({"name": "article", "state": "absent", "labels": [], "packet_types": []})
    assert engine.converge(gone, [NoRules()], states=[seam])["changed"]
    assert not engine.converge(gone, [NoRules()], states=[seam])["changed"]


@pytest.fixture
def lock_dir(tmp_path, monkeypatch):
    real = engine.host_lock
    monkeypatch.setattr(engine, "host_lock", lambda timeout, lock_dir=None: real(timeout, str(tmp_path / "lock")))
