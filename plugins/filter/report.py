# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side filters that turn probe results and check-mode diffs into reports.

``probe_table``: one compact text table per host (probe, expected, observed, a check mark).
``audit_markdown`` / ``audit_html``: the fleet audit of playbooks/audit.yml, from a list of
host records (see ``audit_markdown``), Markdown for terminals and CI logs and one self-contained
HTML page (inline CSS, no scripts, no external assets).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import difflib
import html

from ansible.errors import AnsibleFilterError

OK = u"\u2713"
BAD = u"\u2717"


def _rows(rows):
    if not isinstance(rows, list):
        raise AnsibleFilterError("expected a list of probe results, got %r" % (rows,))
    out = []
    for row in rows:
        expect = row.get("expect")
        observed = "failed: %s" % row.get("error", "") if row.get("failed") else row.get("outcome") or "-"
        ok = row.get("as_expected")
        out.append({"name": str(row.get("name", "")), "expect": str(expect) if expect is not None else "-",
                    "observed": str(observed), "ok": ok, "error": str(row.get("error") or "")})
    return out


def _mark(ok):
    return OK if ok else (BAD if ok is False else "-")


def _short(text, width=44):
    return text if len(text) <= width else text[:width - 3] + "..."


def probe_table(rows, title=""):
    """Probe results (paranoid.netconfine.probe's ``probes``, or dicts with name/expect/outcome/as_expected)
    -> a text table: ``probe  expected  observed  ✓``, one line per probe, with a title line.
    An observed text longer than 44 characters (an error message) is cut."""
    rows = [dict(r, observed=_short(r["observed"])) for r in _rows(rows)]
    head = ("probe", "expected", "observed", "")
    widths = [max([len(head[0])] + [len(r["name"]) for r in rows]),
              max([len(head[1])] + [len(r["expect"]) for r in rows]),
              max([len(head[2])] + [len(r["observed"]) for r in rows])]
    lines = []
    if title:
        bad = sum(1 for r in rows if r["ok"] is False)
        lines.append(u"%s: %d probes, %s" % (title, len(rows), "%d mismatch(es)" % bad if bad else "all as expected"))
    fmt = u"  %-{0}s  %-{1}s  %-{2}s  %s".format(*widths)
    lines.append((fmt % head).rstrip())
    for r in rows:
        lines.append(fmt % (r["name"], r["expect"], r["observed"], _mark(r["ok"])))
    return u"\n".join(lines)


# --------------------------------------------------------------------------- the audit

def _policy_state(policy):
    """A policy record {role, result} -> (state, diff lines): in sync / drifted / failed / not run.

    A looped task's result (netns_confine: one module call per namespace) counts as one policy: failed when
    an item failed, drifted when an item changed, with every changed item's lines."""
    result = policy.get("result") or {}
    items = [item for item in result.get("results") or [] if isinstance(item, dict) and not item.get("skipped")]
    if items:
        failed = [str(item.get("msg", "failed")) for item in items if item.get("failed") or item.get("unreachable")]
        if failed:
            return "failed", failed
        changed = [item for item in items if item.get("changed")]
        return ("drifted", [line for item in changed for line in _diff_lines(item.get("diff"))]) if changed else ("in sync", [])
    if not result or result.get("skipped"):
        return "not run", []
    if result.get("failed") or result.get("unreachable"):
        return "failed", [str(result.get("msg", "failed"))]
    if not result.get("changed"):
        return "in sync", []
    return "drifted", _diff_lines(result.get("diff"))


def _diff_lines(diff):
    """The rule lines that differ, as unified-diff lines (``-`` what the host has, ``+`` what it should have)."""
    lines = []
    for item in diff if isinstance(diff, list) else [diff] if diff else []:
        before = str(item.get("before") or "").splitlines()
        after = str(item.get("after") or "").splitlines()
        header = item.get("before_header") or item.get("after_header") or ""
        changed = [line for line in difflib.unified_diff(before, after, lineterm="", n=0)
                   if not line.startswith(("---", "+++", "@@"))]
        if changed and header:
            lines.append("# %s" % header)
        lines.extend(changed)
    return lines


def _hosts(hosts):
    if not isinstance(hosts, list):
        raise AnsibleFilterError("expected a list of host records, got %r" % (hosts,))
    out = []
    for host in hosts:
        policies = []
        for policy in host.get("policies") or []:
            state, lines = _policy_state(policy)
            if state != "not run":
                policies.append({"role": policy.get("role", "?"), "state": state, "lines": lines})
        probes = _rows(host.get("probes") or [])
        if host.get("unreachable"):
            state = "failed"
        elif any(p["state"] == "failed" for p in policies):
            state = "failed"
        elif any(p["state"] == "drifted" for p in policies) or any(r["ok"] is False for r in probes):
            state = "drifted"
        elif policies or probes:
            state = "in sync"
        else:
            state = "no policy"
        out.append({"name": str(host.get("name")), "state": state, "policies": policies, "probes": probes,
                    "note": str(host.get("note") or host.get("unreachable") or "")})
    return out


def audit_markdown(hosts, title="paranoid.netconfine audit", generated=""):
    """Host records -> Markdown.

    A host record: ``{name, policies: [{role, result}], probes: [probe results], unreachable: msg, note}``
    where ``result`` is the role's check-mode, diff-mode module result (``changed``, ``diff``, ``failed``).
    """
    hosts = _hosts(hosts)
    lines = ["# %s" % title, ""]
    if generated:
        lines += [generated, ""]
    lines += ["| host | state | policies | probes |", "|---|---|---|---|"]
    for h in hosts:
        bad = sum(1 for r in h["probes"] if r["ok"] is False)
        lines.append("| %s | %s | %s | %d (%d mismatch) |" % (
            h["name"], h["state"], ", ".join("%s: %s" % (p["role"], p["state"]) for p in h["policies"]) or "-",
            len(h["probes"]), bad))
    for h in hosts:
        lines += ["", "## %s: %s" % (h["name"], h["state"])]
        if h["note"]:
            lines += ["", h["note"]]
        for p in h["policies"]:
            lines += ["", "- **%s**: %s" % (p["role"], p["state"])]
            if p["lines"]:
                lines += ["", "```diff"] + p["lines"] + ["```"]
        if h["probes"]:
            lines += ["", "- **reachability** (every probe of the host's roles)", "",
                      "| probe | expected | observed | |", "|---|---|---|---|"]
            for r in h["probes"]:
                lines.append("| %s | %s | %s | %s |" % (
                    r["name"].replace("|", "\\|"), r["expect"], r["observed"], _mark(r["ok"])))
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em;color:#1d2330;background:#fafbfc}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin:0}
.meta{color:#667}
table{border-collapse:collapse;margin:.6em 0}
th,td{border:1px solid #d5d9e0;padding:.25em .6em;text-align:left;font-size:.92em}
th{background:#eef1f5}
section{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:1em 1.2em;margin:1em 0}
.badge{display:inline-block;padding:.1em .6em;border-radius:1em;font-size:.85em;font-weight:600;margin-left:.5em}
.in-sync{background:#d7f5dd;color:#135c22}.drifted{background:#fff0c2;color:#7a5200}
.failed{background:#ffd9d9;color:#8a1010}.no-policy,.not-run{background:#e8eaee;color:#555}
td.ok{background:#e3f7e6;color:#135c22;text-align:center}td.bad{background:#ffe1e1;color:#8a1010;text-align:center}
td.allowed{color:#135c22}td.denied{color:#4a5160}
h3{font-size:1em;margin:1em 0 .2em}h3 .meta{font-weight:normal;font-size:.85em}
pre{background:#f4f5f7;padding:.6em;border-radius:4px;overflow-x:auto;font-size:.85em}
.add{color:#135c22}.del{color:#8a1010}
"""


def _cls(state):
    return state.replace(" ", "-")


def audit_html(hosts, title="paranoid.netconfine audit", generated=""):
    """Host records (as for ``audit_markdown``) -> one self-contained HTML page (inline CSS only)."""
    hosts = _hosts(hosts)
    esc = html.escape
    out = [u"<!DOCTYPE html>", u'<html lang="en"><head><meta charset="utf-8">',
           u"<title>%s</title><style>%s</style></head><body>" % (esc(title), _CSS),
           u"<h1>%s</h1>" % esc(title)]
    if generated:
        out.append(u'<p class="meta">%s</p>' % esc(generated))
    out.append(u"<table><tr><th>host</th><th>state</th><th>policies</th><th>probes</th></tr>")
    for h in hosts:
        bad = sum(1 for r in h["probes"] if r["ok"] is False)
        out.append(u'<tr><td><a href="#host-%s">%s</a></td><td><span class="badge %s">%s</span></td><td>%s</td>'
                   u"<td>%d (%d mismatch)</td></tr>" % (
                       esc(h["name"]), esc(h["name"]), _cls(h["state"]), esc(h["state"]),
                       esc(", ".join("%s: %s" % (p["role"], p["state"]) for p in h["policies"]) or "-"),
                       len(h["probes"]), bad))
    out.append(u"</table>")
    for h in hosts:
        out.append(u'<section id="host-%s"><h2>%s<span class="badge %s">%s</span></h2>' % (
            esc(h["name"]), esc(h["name"]), _cls(h["state"]), esc(h["state"])))
        if h["note"]:
            out.append(u'<p class="meta">%s</p>' % esc(h["note"]))
        for p in h["policies"]:
            out.append(u'<p><b>%s</b><span class="badge %s">%s</span></p>' % (esc(p["role"]), _cls(p["state"]),
                                                                              esc(p["state"])))
            if p["lines"]:
                body = u"\n".join(u'<span class="%s">%s</span>' % (
                    "add" if line.startswith("+") else "del" if line.startswith("-") else "", esc(line))
                    for line in p["lines"])
                out.append(u"<pre>%s</pre>" % body)
        if h["probes"]:
            out.append(u"<h3>reachability <span class=\"meta\">every probe of the host's roles: green connected, "
                       u"grey not; the last column says whether that was expected</span></h3>")
            out.append(u"<table><tr><th>who &rarr; where</th><th>expected</th><th>observed</th><th></th></tr>")
            for r in h["probes"]:
                verdict = "allowed" if r["observed"] == "connected" else "denied"
                out.append(u'<tr><td>%s</td><td>%s</td><td class="%s" title="%s">%s</td><td class="%s">%s</td></tr>' % (
                    esc(r["name"]), esc(r["expect"]), verdict, esc(r["error"]), esc(r["observed"]),
                    "ok" if r["ok"] else "bad" if r["ok"] is False else "", _mark(r["ok"])))
            out.append(u"</table>")
        out.append(u"</section>")
    out.append(u"</body></html>")
    return u"\n".join(out) + u"\n"


def audit_state(hosts):
    """Host records -> {host: state}, for a playbook to decide its exit status."""
    return dict((h["name"], h["state"]) for h in _hosts(hosts))


class FilterModule(object):
    def filters(self):
        return {"probe_table": probe_table, "audit_markdown": audit_markdown, "audit_html": audit_html,
                "audit_state": audit_state}
