"""Other netfilter layers that can override our verdict are reported (issue 16.2), on both backends.

Every layer at a hook sees the packet; an accept in ours never overrides a drop in another. The
cases: a legacy xtables REJECT beside iptables-nft (and beside the nftables backend), another
nftables table with a drop at the same hook, and the reverse: nftables tables beside the legacy
xtables variant. ``fail_on_shadowing: true`` fails before applying. Root's connection is really
refused by the other layer, so each warning tells the truth.
"""

from __future__ import annotations

import pytest

from nchelpers import ansible_playbook, iptables_save, run, try_connect
from reliability.fault_injection import WrapperDir, legacy_links

BACKENDS = pytest.mark.parametrize("backend", ["iptables", "nftables"])
OWNER_RULE = "paranoid.netconfine.owner_rule"
PLAY = """
- name: Root may use port 5000, nobody else
  hosts: all
  gather_facts: false
  tasks:
    - name: guard
      paranoid.netconfine.owner_rule:
        name: shadow
        backend: "{{ backend }}"
        fail_on_shadowing: "{{ fail_on_shadowing | default(false) }}"
        rules:
          - {protocol: tcp, destination_port: "5000", uid_owner: root, jump: ACCEPT}
          - {protocol: tcp, destination_port: "5000", jump: REJECT, reject_with: tcp-reset}
      environment: "{{ task_environment | default({}) }}"
"""


def guard(ns, backend, check=False, **extra):
    result = ansible_playbook(PLAY, [ns], extra_vars={"backend": backend, **extra}, check=check)
    return result, result.task(ns, "guard")


def owned(ns):
    nft = run("nft", "list", "table", "inet", "netconfine", ns=ns, check=False).stdout
    return "NC-shadow" in iptables_save(ns, 4) + iptables_save(ns, 6) + nft


def warnings_of(res):
    return [str(w) for w in res.result.get("warnings", [])]


@BACKENDS
def test_a_legacy_reject_beside_us_is_reported_and_fail_on_shadowing_refuses(netns_host, listener, backend):
    ns = netns_host
    listener(ns, 5000)
    # an older tool's rule, in the other xtables variant (the case)
    run("iptables-legacy", "-A", "OUTPUT", "-p", "tcp", "--dport", "5000", "-j", "REJECT", "--reject-with",
        "tcp-reset", ns=ns)

    result, res = guard(ns, backend, fail_on_shadowing=True)
    assert result.rc != 0 and res.failed, result.output
    assert res.result["field"] == "fail_on_shadowing", res.result
    assert "iptables-legacy table filter (IPv4), chain OUTPUT: 1 rule(s) that drop or reject" in res.msg, res.msg
    assert not owned(ns)                                     # failed before applying

    result, res = guard(ns, backend, check=True)
    assert res.changed and not owned(ns), result.output
    for check in (False, True, False):
        result, res = guard(ns, backend, check=check)
        assert result.rc == 0, result.output
        (warning,) = warnings_of(res)
        assert warning.startswith("iptables-legacy table filter (IPv4), chain OUTPUT: 1 rule(s)"), warning
        assert "ip6" not in warning and "IPv6" not in warning
    assert not res.changed
    assert owned(ns)
    # the warning is the truth: the legacy rule still refuses root on IPv4; IPv6 has no such layer
    assert try_connect(ns, "root", "127.0.0.1", 5000) == "refused"
    assert try_connect(ns, "root", "::1", 5000) == "connected"


@BACKENDS
def test_another_nftables_table_that_drops_at_the_hook_is_reported(netns_host, listener, backend):
    ns = netns_host
    listener(ns, 5000)
    run("nft", "-f", "-", ns=ns, input="table inet nct_fw {\n chain out {\n  type filter hook output priority 10;\n"
                                       "  tcp dport 5000 jump deny\n }\n chain deny {\n  drop\n }\n}\n")
    result, res = guard(ns, backend)
    assert result.rc == 0 and res.changed, result.output
    (warning,) = warnings_of(res)
    assert warning.startswith("nftables table inet nct_fw, base chain out (hook output, priority 10): "
                              "rules that drop or reject"), warning
    assert try_connect(ns, "root", "127.0.0.1", 5000, timeout=1) == "timeout"    # dropped there, as warned

    # a table at the same hook that only accepts cannot override us: no warning
    run("nft", "delete", "table", "inet", "nct_fw", ns=ns)
    run("nft", "-f", "-", ns=ns, input="table inet nct_ok {\n chain out {\n  type filter hook output priority 10;\n"
                                       "  tcp dport 5000 accept\n }\n}\n")
    result, res = guard(ns, backend)
    assert result.rc == 0 and not res.changed and warnings_of(res) == [], result.output
    assert try_connect(ns, "root", "127.0.0.1", 5000) == "connected"


def test_nftables_tables_beside_the_legacy_variant_are_reported(netns_host, listener, cleanup):
    """The reverse of the issue's case: our rules in legacy xtables, a REJECT in iptables-nft's table."""
    ns = netns_host
    listener(ns, 5000)
    run("iptables-nft", "-A", "OUTPUT", "-p", "tcp", "--dport", "5000", "-j", "REJECT", "--reject-with",
        "tcp-reset", ns=ns)
    legacy = WrapperDir(links=legacy_links())
    cleanup.callback(legacy.remove)
    path = f"{legacy.path}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    result, res = guard(ns, "iptables", task_environment={"PATH": path})
    assert result.rc == 0 and res.changed, result.output
    assert "NC-shadow" in run("iptables-legacy-save", ns=ns).stdout      # we wrote the legacy variant
    (warning,) = warnings_of(res)
    assert warning.startswith("nftables table ip filter, base chain OUTPUT (hook output, priority 0): rules that "
                              "drop or reject"), warning
    assert "iptables-legacy's table" in warning
    assert try_connect(ns, "root", "127.0.0.1", 5000) == "refused"
