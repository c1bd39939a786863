"""secmark_policy rendered on a namespace host: what would be installed, the verify probes, and a kernel left alone.

converge.yml saved each backend's rendering and the outcomes of secmark_policy_verify to
$MOLECULE_EPHEMERAL_DIRECTORY/<host>-secmark.json (molecule.yml says why the role runs in state rendered).
"""

import json
import os
from pathlib import Path

import pytest

CONTEXT = "system_u:object_r:myhttp_client_packet_t:s0"


@pytest.fixture(scope="module")
def rendering(host):
    path = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / ("%s-secmark.json" % host.backend.name)
    return json.loads(path.read_text())


def chain(result, direction):
    (name,) = [c for c in result["chains"] if c.startswith("NC-proxy-%s-" % direction)]
    return name


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_the_module_is_the_seeds_cil_and_rendered_changes_nothing(rendering, backend):
    result = rendering[backend]
    assert result["backend"] == backend and result["changed"] is False
    cil = result["rendered"]["selinux policy"]
    assert "(type myhttp_client_packet_t)" in cil
    assert "(typeattributeset client_packet_type (myhttp_client_packet_t))" in cil
    assert "(allow mozilla_t myhttp_client_packet_t (packet (send recv)))" in cil
    assert "(allow domain unlabeled_t (packet (send recv)))" in cil
    assert "(auditallow domain unlabeled_t (packet (send recv)))" in cil
    assert result["scripts"]["selinux policy"] == "semodule -X 400 -i netconfine_proxy.cil\n"


def test_iptables_restore_label_save_in_mangle(rendering):
    """Replies (input) get the label of the connection back; new connections to the proxy are labelled and saved."""
    result = rendering["iptables"]
    out, inp = chain(result, "output"), chain(result, "input")
    lines = [line for line in result["rendered"]["iptables 4"].splitlines() if line.startswith("-A ")]
    assert lines == [
        "-A %s -m conntrack --ctstate RELATED,ESTABLISHED -j CONNSECMARK --restore" % inp,
        "-A %s -m conntrack --ctstate RELATED,ESTABLISHED -j CONNSECMARK --restore" % out,
        "-A %s -d 192.0.2.80/32 -p tcp -m tcp --dport 80 -j SECMARK --selctx %s" % (out, CONTEXT),
        "-A %s -m conntrack --ctstate NEW -j CONNSECMARK --save" % out,
        '-A INPUT -m comment --comment "netconfine:proxy" -j %s  # first' % inp,
        '-A OUTPUT -m comment --comment "netconfine:proxy" -j %s  # first' % out,
    ], result["rendered"]["iptables 4"]
    assert "192.0.2.80" not in result["rendered"].get("iptables 6", "")   # an IPv4 destination only


def test_nftables_secmark_object_and_rules(rendering):
    result = rendering["nftables"]
    out = chain(result, "output")
    text = result["rendered"]["nftables ruleset"]
    assert 'secmark %s.myhttp_client_packet_t { "%s" }' % (out, CONTEXT) in text
    assert "chain mangle_output { type route hook output priority -151; }" in text
    body = text.split("chain %s {\n" % out)[1].split("}")[0].splitlines()
    assert body == ["\tmeta nfproto ipv4 ct state established,related meta secmark set ct secmark",
                    '\tip daddr 192.0.2.80 tcp dport 80 meta secmark set "%s.myhttp_client_packet_t"' % out,
                    "\tmeta nfproto ipv4 ct state new ct secmark set meta secmark"], text


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_the_verify_probes_ran_and_matched(rendering, backend):
    result = rendering[backend]
    assert result["probes"] == {"the proxy answers": "connected", "nothing else listens on the proxy": "refused"}
    assert result["mismatches"] == 0


def test_the_proxy_stand_in_listens(host):
    assert host.socket("tcp://192.0.2.80:80").is_listening


def test_the_kernel_holds_no_label(host):
    for save in ("iptables-save", "ip6tables-save"):
        mangle = host.check_output(save + " -t mangle")
        assert "SECMARK" not in mangle and "NC-proxy" not in mangle and "netconfine" not in mangle, mangle
    tables = json.loads(host.check_output("nft -j list tables"))["nftables"]
    assert [t["table"]["name"] for t in tables if "table" in t and t["table"]["name"] == "netconfine"] == []
    assert "secmark" not in host.check_output("nft list ruleset")
    assert not host.file("/etc/netconfine/netns/%s" % host.backend.name).exists
