"""Reading a namespace's netfilter state, and running modules in it, for the reliability suite.

Everything runs inside a namespace the test created (``ip netns exec NS ...``); nothing here
touches the host's firewall.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import nchelpers

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "module_driver.py"
PYTHON = nchelpers.ROOT / ".venv" / "bin" / "python"
OWN_CHAIN = re.compile(r"^NC-")
OWN_TAG = "netconfine:"
_COUNTERS = re.compile(r"\[\d+:\d+\]")
_NFT_COUNTER = re.compile(r"counter packets \d+ bytes \d+")


# --------------------------------------------------------------------------- reading

def _save(ns: str | None, argv: list[str]) -> str:
    return _normal_save(nchelpers.run(*argv, ns=ns).stdout)


def _normal_save(out: str) -> str:
    lines = [line for line in out.splitlines() if not line.startswith("#")]
    return "\n".join(_COUNTERS.sub("[0:0]", line) for line in lines) + "\n"


def normalise(raw: dict[str, str]) -> dict[str, str]:
    """A raw snapshot (as module_driver's ``snapshot`` op records it) in ``snapshot``'s form."""
    return {key: (_NFT_COUNTER.sub("counter packets 0 bytes 0", text) if key == "nft" else _normal_save(text))
            for key, text in raw.items()}


def snapshot_of_pid(pid: int) -> dict[str, str]:
    """``snapshot`` of the network namespace process ``pid`` is in (also one no longer in /run/netns)."""
    enter = ["nsenter", "--net=/proc/%d/ns/net" % pid]
    return {
        "iptables": _save(None, enter + ["iptables-save"]),
        "ip6tables": _save(None, enter + ["ip6tables-save"]),
        "nft": _NFT_COUNTER.sub("counter packets 0 bytes 0", nchelpers.run(*enter, "nft", "list", "ruleset").stdout),
    }


def snapshot(ns: str, legacy: bool = False) -> dict[str, str]:
    """The whole netfilter state of ``ns`` as text, counters zeroed: iptables and ip6tables
    (nf_tables variant), ``nft list ruleset`` (which also shows every nft table of other tools),
    and with ``legacy`` the legacy xtables of both families."""
    state = {
        "iptables": _save(ns, ["iptables-save"]),
        "ip6tables": _save(ns, ["ip6tables-save"]),
        "nft": _NFT_COUNTER.sub("counter packets 0 bytes 0", nchelpers.run("nft", "list", "ruleset", ns=ns).stdout),
    }
    if legacy:
        state["iptables-legacy"] = _save(ns, ["iptables-legacy-save"])
        state["ip6tables-legacy"] = _save(ns, ["ip6tables-legacy-save"])
    return state


def digest(state: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]


def diff_text(before: dict[str, str], after: dict[str, str]) -> str:
    """A readable unified diff of two snapshots (for assertion messages)."""
    import difflib
    out = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key, "").splitlines(), after.get(key, "").splitlines()
        if a != b:
            out += ["=== %s" % key] + list(difflib.unified_diff(a, b, "before", "after", lineterm="", n=1))
    return "\n".join(out)


def chains(view: dict[str, str]) -> dict[str, str]:
    """Split a snapshot or view into chains: ``"iptables filter DOCKER"`` -> its policy line and rules;
    nft tables as a whole (``"nft table inet x {"`` -> the table's text)."""
    out: dict[str, list[str]] = {}
    for key, text in view.items():
        if key == "nft":
            for block in _nft_blocks(text):
                out["nft " + block[0]] = block
            continue
        table = None
        for line in text.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":"):
                out.setdefault("%s %s %s" % (key, table, line[1:].split(" ", 1)[0]), []).insert(0, line)
            elif line.startswith("-A "):
                out.setdefault("%s %s %s" % (key, table, line.split(" ", 2)[1]), []).append(line)
    return dict((k, "\n".join(v)) for k, v in out.items())


def foreign_view(state: dict[str, str]) -> dict[str, str]:
    """Everything in a snapshot that netconfine does not own: chains not prefixed NC-, rules without
    the netconfine tag, nft tables not prefixed like ours. What other tools must find untouched."""
    view = {}
    for key, text in state.items():
        if key == "nft":
            view[key] = "\n".join(_nft_foreign_tables(text))
            continue
        keep = []
        for line in text.splitlines():
            if line.startswith(":NC-") or (line.startswith("-A NC-")) or OWN_TAG in line:
                continue
            keep.append(line)
        view[key] = "\n".join(keep)
    return view


def owned_view(state: dict[str, str]) -> dict[str, str]:
    """Only what netconfine owns in a snapshot: NC- chains, tagged jumps, our nft tables."""
    view = {}
    for key, text in state.items():
        if key == "nft":
            view[key] = "\n".join(_nft_tables(text, own=True))
            continue
        view[key] = "\n".join(line for line in text.splitlines()
                              if line.startswith(("*", ":NC-", "-A NC-")) or OWN_TAG in line)
    return view


def _nft_blocks(text: str):
    block: list[str] = []
    for line in text.splitlines():
        if line.startswith("table "):
            block = [line]
        elif block:
            block.append(line)
            if line == "}":
                yield block
                block = []


def _is_own_nft_table(header: str) -> bool:
    # "table inet NC-xyz {" / "table ip netconfine {": the nft backend's own tables
    name = header.split()[2] if len(header.split()) > 2 else ""
    return name.lower().startswith(("nc-", "nc_", "netconfine"))


def _is_xtables_nft_table(header: str) -> bool:
    # tables iptables-nft manages (shown again, in xtables form, by iptables-save)
    parts = header.split()
    return len(parts) > 2 and parts[1] in ("ip", "ip6") and parts[2] in ("filter", "nat", "mangle", "raw", "security")


def _nft_tables(text: str, own: bool):
    for block in _nft_blocks(text):
        if _is_own_nft_table(block[0]) == own:
            yield from block


def _nft_foreign_tables(text: str):
    for block in _nft_blocks(text):
        if not _is_own_nft_table(block[0]) and not _is_xtables_nft_table(block[0]):
            yield from block


# --------------------------------------------------------------------------- running modules

def module_env(path_prefix: str | Path | None = None, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    if path_prefix:
        env["PATH"] = "%s:%s" % (path_prefix, env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
    env.update(extra or {})
    return env


def start_modules(ns: str, calls: list[dict], path_prefix=None, start_at: float | None = None,
                  env_extra: dict | None = None):
    """Start a driver process running ``calls`` in order inside ``ns``. Returns (Popen, result path)."""
    tmp = Path(tempfile.mkdtemp(prefix="nct-rly-"))
    job, result = tmp / "job.json", tmp / "result.json"
    job.write_text(json.dumps({"calls": calls, "start_at": start_at}))
    proc = subprocess.Popen(["ip", "netns", "exec", ns, str(PYTHON), str(DRIVER), str(job), str(result)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=module_env(path_prefix, env_extra), start_new_session=True)
    return proc, result


def finish_modules(proc, result: Path, timeout: float = 300) -> list[dict]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        raise RuntimeError("module driver timed out after %ss\n%s%s" % (timeout, out, err))
    try:
        if proc.returncode != 0 or not result.exists():
            raise RuntimeError("module driver failed (rc=%s)\n%s%s" % (proc.returncode, out, err))
        return json.loads(result.read_text())
    finally:
        for leftover in result.parent.iterdir():
            leftover.unlink()
        result.parent.rmdir()


def run_modules(ns: str, calls: list[dict], path_prefix=None, env_extra=None, timeout: float = 300) -> list[dict]:
    """Run module ``calls`` in one driver process inside ``ns``; their results, in order."""
    proc, result = start_modules(ns, calls, path_prefix, env_extra=env_extra)
    return finish_modules(proc, result, timeout)


def run_module(ns: str, module: str, args: dict, check: bool = False, diff: bool = False, **kw) -> dict:
    return run_modules(ns, [{"module": module, "args": args, "check": check, "diff": diff}], **kw)[0]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
