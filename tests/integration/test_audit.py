"""playbooks/audit.yml, for real: a converged namespace host, one owned rule deleted by hand -> the audit
shows the host drifted with that rule line, exits non-zero (2, a failed task on localhost; with
netconfine_audit_fail=false it only reports and exits 0), changes nothing, and its HTML page renders in
headless Chromium."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from nchelpers import ROOT, ansible_playbook, iptables_save, run

SITE = ROOT / "playbooks" / "site.yml"
AUDIT = ROOT / "playbooks" / "audit.yml"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def chromium_screenshot(page: Path, png: Path, size: str = "1100,1400") -> subprocess.CompletedProcess:
    """Render ``page`` with Debian's headless chromium to ``png``; a throwaway profile directory."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed (scripts/bootstrap's DEB_PACKAGES has it)", pytrace=False)
    with tempfile.TemporaryDirectory(prefix="nct-chromium-") as profile:
        return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                               f"--screenshot={png}", page.as_uri()], capture_output=True, text=True, timeout=120,
                              check=False)


@pytest.fixture
def audited_host(netns_host, make_user, listener, tmp_path):
    ns = netns_host
    plebian = make_user()
    listener(ns, 992)
    groups = tmp_path / "groups.yml"
    groups.write_text(yaml.safe_dump({"all": {"children": {"tunnel_clients": {"hosts": {ns: None}}}}}))
    hosts = {ns: {"ansible_become": False, "tunnel_guard_backend": "iptables",
                  "tunnel_guard_tunnels": [{"name": "telnet", "port": 992, "allow_users": ["root"]}],
                  "tunnel_guard_verify_denied_user": plebian}}
    converged = ansible_playbook(SITE, hosts, args=("-i", str(groups)))
    assert converged.rc == 0, converged.output
    return ns, hosts, ("-i", str(groups))


def audit(hosts, inventory, out: Path, rc=0, **extra):
    play = ansible_playbook(AUDIT, hosts, {"netconfine_audit_dir": str(out), **extra}, args=inventory)
    assert play.rc == rc, play.output
    return play, (out / "audit.md").read_text(), (out / "audit.html").read_text()


def test_audit_in_sync_then_drifted_with_the_missing_line(audited_host, tmp_path):
    ns, hosts, inventory = audited_host
    play, md, html = audit(hosts, inventory, tmp_path / "a")
    assert f"## {ns}: in sync" in md, md
    assert "audit: every host in sync" in play.output, play.output
    assert json.loads((tmp_path / "a" / "audit.json").read_text()) == {ns: "in sync"}
    assert "tunnel_guard: root -> [::1]:992/tcp | allowed | connected | \u2713" in md

    # delete the REJECT rule of the owned chain by hand (IPv4)
    save = iptables_save(ns, 4, "filter")
    line = next(ln for ln in save.splitlines() if ln.startswith("-A NC-tunnel-guard-") and "-j REJECT" in ln)
    run("iptables", "-D", *shlex.split(line)[1:], ns=ns)
    assert line not in iptables_save(ns, 4, "filter")

    play, md, html = audit(hosts, inventory, tmp_path / "b", rc=2)     # drifted: the audit fails (for CI)
    assert f"audit: 1 host(s) not in sync: {ns}: drifted" in play.output, play.output
    assert play.stats[ns]["failures"] == 0 and play.stats["localhost"]["failures"] == 1, play.output
    assert f"## {ns}: drifted" in md, md
    assert "+" + line in md, md                          # the missing rule line, as what should be there
    assert re.search(r"tunnel_guard: \S+ -> 127\.0\.0\.1:992/tcp \| refused \| connected \| \u2717", md), md
    assert line not in iptables_save(ns, 4, "filter")    # the audit changed nothing
    assert json.loads((tmp_path / "b" / "audit.json").read_text()) == {ns: "drifted"}
    only_report, md_only, _html = audit(hosts, inventory, tmp_path / "c", netconfine_audit_fail=False)
    assert f"## {ns}: drifted" in md_only and "+" + line in md_only, md_only
    assert json.loads((tmp_path / "c" / "audit.json").read_text()) == {ns: "drifted"}   # what scripts/lab reads
    assert "<script" not in html and "http" not in html.replace('lang="en"', "")  # self-contained
    assert f'id="host-{ns}"' in html and "drifted" in html

    png = tmp_path / "audit.png"
    page = tmp_path / "b" / "audit.html"
    shot = chromium_screenshot(page, png)
    assert shot.returncode == 0, shot.stdout + shot.stderr
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, shot.stderr

    # the next converge repairs it
    repaired = ansible_playbook(SITE, hosts, args=inventory)
    assert repaired.rc == 0 and repaired.stats[ns]["changed"] == 1, repaired.output
    assert line in iptables_save(ns, 4, "filter")
