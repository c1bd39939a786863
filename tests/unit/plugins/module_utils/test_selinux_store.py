"""SelinuxStore over a fake semodule (a dict of installed CIL) and engine.converge with it."""

from __future__ import annotations

import bz2
import hashlib
import os

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils import engine
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError
from ansible_collections.paranoid.netconfine.plugins.module_utils.secmark_model import build_policy
from ansible_collections.paranoid.netconfine.plugins.module_utils.selinux_store import SelinuxStore, parse_list

# lock_dir: the fixture is used by every test here
from test_sysctl_state import Recorder, lock_dir  # noqa: F401 pylint: disable=unused-import

ARTICLE = {"name": "proxy", "state": "present",
           "packet_types": [{"name": "myhttp_client_packet_t", "kind": "client", "domains": ["mozilla_t"]}],
           "allow_unlabeled": {"domains": None, "audit": True}, "labels": []}
KNOWN_TYPES = {"mozilla_t", "sshd_t", "ssh_server_packet_t", "unlabeled_t"}


class Semodule:
    """semodule 3.4's list/install/remove over a store directory laid out like /var/lib/selinux/default."""

    def __init__(self, root):
        self.root = root
        self.calls = []
        self.installed = {}     # (name, priority) -> cil text

    def __call__(self, argv, data=None):
        self.calls.append(argv)
        args = argv[1:]
        if args == ["--list-modules=full", "--checksum"]:
            lines = ["100 base            pp          sha256:%s " % ("0" * 64)]
            for (name, prio), cil in sorted(self.installed.items()):
                lines.append("%d %-15s cil          sha256:%s " % (prio, name, hashlib.sha256(cil.encode()).hexdigest()))
            return 0, "\n".join(lines) + "\n", ""
        new, prio, i = dict(self.installed), None, 0
        while i < len(args):
            op, value = args[i], args[i + 1]
            if op == "-X":
                prio = int(value)
            elif op == "-i":
                name = os.path.basename(value)[:-4]
                with open(value) as handle:
                    cil = handle.read()
                if "nosuch_t" in cil:
                    line = [n for n, text in enumerate(cil.splitlines(), 1) if "nosuch_t" in text][0]
                    return 1, "", ("Failed to resolve typeattributeset statement at "
                                   "/var/lib/selinux/default/tmp/modules/%d/%s/cil:%d\nFailed to resolve AST\n"
                                   "semodule:  Failed!\n" % (prio, name, line))
                new[(name, prio)] = cil
            elif op == "-r":
                new.pop((value, prio))
            i += 2
        self.installed = new
        self.sync()
        return 0, "", ""

    def sync(self):
        for (name, prio), cil in self.installed.items():
            path = os.path.join(self.root, "default", "active", "modules", str(prio), name)
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, "cil"), "wb") as handle:
                handle.write(bz2.compress(cil.encode()))


@pytest.fixture
def store(tmp_path):
    fs = tmp_path / "selinuxfs"
    fs.mkdir()
    (fs / "enforce").write_text("1")
    config = tmp_path / "config"
    config.write_text("SELINUX=enforcing\nSELINUXTYPE=default\n")
    fake = Semodule(str(tmp_path / "store"))
    seam = SelinuxStore(fake, semodule="/usr/sbin/semodule", selinuxfs=str(fs), store_root=str(tmp_path / "store"),
                        config=str(config))
    seam.context_valid = lambda ctx: ctx.split(":")[2] in KNOWN_TYPES
    return fake, seam


def policy(**kw):
    params = dict(ARTICLE)
    params.update(kw)
    return build_policy(params)


def installs(fake):
    return [c for c in fake.calls if "--list-modules=full" not in c]


def test_parse_list_of_semodule_3_4():
    text = ("100 accountsd       pp          sha256:%s \n400 netconfine_proxy cil   sha256:%s disabled\n"
            % ("a" * 64, "b" * 64))
    assert parse_list(text) == {"accountsd": [(100, "pp", "a" * 64, True)],
                                "netconfine_proxy": [(400, "cil", "b" * 64, False)]}


def test_installs_once_then_compares_checksums(store):
    fake, seam = store
    pol = policy()
    checked = engine.converge(pol, [Recorder([])], states=[seam], check_mode=True)
    assert checked["changed"] and fake.installed == {}
    assert checked["scripts"]["selinux policy"] == "semodule -X 400 -i netconfine_proxy.cil\n"
    assert "(allow mozilla_t myhttp_client_packet_t (packet (send recv)))" in checked["diff"]["after"]
    first = engine.converge(pol, [Recorder([])], states=[seam])
    assert first["changed"]
    assert fake.installed[("netconfine_proxy", 400)] == list(pol.resources)[0].cil
    backend = Recorder([])
    backend.value = "new"
    calls = len(installs(fake))
    again = engine.converge(pol, [backend], states=[seam])
    assert not again["changed"] and len(installs(fake)) == calls      # semodule -i not called again


def test_changed_content_and_priority_replace_the_module(store):
    fake, seam = store
    engine.converge(policy(), [Recorder([])], states=[seam])
    changed = policy(allow_unlabeled={"domains": ["sshd_t"], "audit": False}, priority=300)
    result = engine.converge(changed, [Recorder([])], states=[seam])
    assert result["scripts"]["selinux policy"] == \
        "semodule -X 400 -r netconfine_proxy -X 300 -i netconfine_proxy.cil\n"
    assert list(fake.installed) == [("netconfine_proxy", 300)]


def test_absent_removes_after_the_rules(store):
    fake, seam = store
    engine.converge(policy(), [Recorder([])], states=[seam])
    log = []
    backend = Recorder(log)
    seam_apply = seam.apply
    seam.apply = lambda unit, script: (log.append("selinux"), seam_apply(unit, script))
    gone = build_policy({"name": "proxy", "state": "absent", "labels": [], "packet_types": []})
    result = engine.converge(gone, [backend], states=[seam])
    assert result["changed"] and fake.installed == {}
    assert log == ["netfilter", "selinux"]
    assert not engine.converge(gone, [backend], states=[seam])["changed"]


def test_compile_error_names_the_field_and_leaves_the_store(store):
    fake, seam = store
    engine.converge(policy(), [Recorder([])], states=[seam])
    before = dict(fake.installed)
    seam.context_valid = lambda ctx: None          # cannot ask the kernel: the compiler finds it
    bad = policy(packet_types=[{"name": "myhttp_client_packet_t", "kind": "client",
                                "domains": ["mozilla_t", "nosuch_t"]}])
    backend = Recorder([])
    with pytest.raises(NetconfineError) as err:
        engine.converge(bad, [backend], states=[seam])
    assert err.value.field == "packet_types[0].domains[1]"
    assert "Failed to resolve typeattributeset" in str(err.value) and "store is unchanged" in str(err.value)
    assert fake.installed == before and backend.value == "old"


def test_unknown_type_is_found_before_anything_is_installed(store):
    fake, seam = store
    bad = policy(packet_types=[{"name": "myhttp_client_packet_t", "kind": "client", "domains": ["mozila_t"]}])
    with pytest.raises(NetconfineError) as err:
        engine.converge(bad, [Recorder([])], states=[seam], check_mode=True)
    assert err.value.field == "packet_types[0].domains[0]" and "mozila_t is not defined" in str(err.value)
    assert installs(fake) == []


def test_selinux_disabled_is_a_clear_error(store, tmp_path):
    fake, seam = store
    os.unlink(os.path.join(seam.selinuxfs, "enforce"))
    with pytest.raises(NetconfineError) as err:
        engine.converge(policy(), [Recorder([])], states=[seam], check_mode=True)
    assert err.value.field == "state" and "SELinux is not enabled" in str(err.value)
    assert "state: rendered" in str(err.value)


def test_rollback_puts_the_old_module_back(store):
    fake, seam = store
    engine.converge(policy(), [Recorder([])], states=[seam])
    old = dict(fake.installed)
    failing = Recorder([], fail=True)
    with pytest.raises(NetconfineError) as err:
        engine.converge(policy(allow_unlabeled={"domains": ["sshd_t"], "audit": True}), [failing], states=[seam])
    assert err.value.details["rollback_errors"] == []
    assert fake.installed == old


def test_drift_a_module_removed_by_hand_is_reinstalled(store):
    fake, seam = store
    engine.converge(policy(), [Recorder([])], states=[seam])
    fake.installed.clear()
    assert engine.converge(policy(), [Recorder([])], states=[seam])["changed"]
    assert ("netconfine_proxy", 400) in fake.installed


def test_rendered_needs_no_store():
    from ansible_collections.paranoid.netconfine.plugins.module_utils.netfilter_task import render_only
    from ansible_collections.paranoid.netconfine.plugins.module_utils.iptables_backend import IptablesBackend

    def nothing(argv, data=None):
        raise AssertionError("state=rendered ran %r" % (argv,))
    seam = SelinuxStore(nothing, semodule=None, selinuxfs="/nonexistent")
    out = render_only(policy(), IptablesBackend(nothing, {}), [seam])
    assert out["scripts"]["selinux policy"] == "semodule -X 400 -i netconfine_proxy.cil\n"
    assert out["rendered"]["selinux policy"].startswith("module netconfine_proxy priority 400 sha256:")
