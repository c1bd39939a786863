"""Run netconfine modules in-process, inside the namespace this script was started in.

Started by :func:`reliability.kernel.run_modules` as
``ip netns exec NS .venv/bin/python module_driver.py JOB.json RESULT.json``. The job lists module
calls ``{"module": "owner_rule", "args": {...}, "check": false, "diff": false}``; each is run
through the module's real ``main()`` (argument spec, model, engine, real iptables/nft binaries
found on PATH, real kernel), exactly as Ansible would run it, but without starting a new Python
and re-importing Ansible for every call. Results (the module's JSON, plus ``_start``/``_end``
wall-clock times) go to RESULT.json.

``start_at`` (epoch seconds) makes several drivers start their first call at the same moment; a call's
``pause`` (seconds) waits before it. Two more kinds of entry: ``{"op": "barrier", "dir", "key", "parties"}``
waits until that many drivers have reached the same key (lock-step trials), ``{"op": "snapshot"}`` records
iptables-save, ip6tables-save and nft list ruleset as they are at that moment.
"""

import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, ".build", "collections"))

from ansible.module_utils import basic  # noqa: E402

PACKAGE = "ansible_collections.paranoid.netconfine.plugins.modules."


def _forget_host_caches():
    """Drop per-process caches of the engine (a real module process starts without them)."""
    identity = sys.modules.get("ansible_collections.paranoid.netconfine.plugins.module_utils.identity")
    for value in vars(identity).values() if identity else ():
        if hasattr(value, "cache_clear"):
            value.cache_clear()


def call(module, args, check=False, diff=False):
    payload = dict(args, _ansible_check_mode=bool(check), _ansible_diff=bool(diff))
    basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": payload}).encode()
    basic._ANSIBLE_PROFILE = "legacy"
    _forget_host_caches()
    out = io.StringIO()
    start = time.time()
    with contextlib.redirect_stdout(out):
        try:
            importlib.import_module(PACKAGE + module).main()
        except SystemExit:
            pass
    text = out.getvalue().strip()
    try:
        result = json.loads(text.splitlines()[-1]) if text else {"failed": True, "msg": "module printed nothing"}
    except ValueError:
        result = {"failed": True, "msg": "module printed no JSON: %s" % text[-2000:]}
    result["_start"], result["_end"] = start, time.time()
    return result


def barrier(directory, key, parties, timeout=120):
    """Wait until ``parties`` drivers have reached the barrier ``key`` (files in ``directory``)."""
    open(os.path.join(directory, "%s.%d" % (key, os.getpid())), "w").close()
    deadline = time.time() + timeout
    while sum(1 for name in os.listdir(directory) if name.startswith(key + ".")) < parties:
        if time.time() > deadline:
            return {"failed": True, "msg": "barrier %s timed out" % key}
        time.sleep(0.002)
    return {"barrier": key, "_end": time.time()}


def snapshot():
    """The namespace's iptables/ip6tables/nft text, right now."""
    out = {}
    for key, argv in (("iptables", ["iptables-save"]), ("ip6tables", ["ip6tables-save"]),
                      ("nft", ["nft", "list", "ruleset"])):
        out[key] = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    return {"snapshot": out}


def main():
    with open(sys.argv[1]) as handle:
        job = json.load(handle)
    if job.get("start_at"):
        time.sleep(max(0.0, job["start_at"] - time.time()))
    results = []
    for c in job["calls"]:
        time.sleep(c.get("pause", 0))
        if c.get("op") == "barrier":
            results.append(barrier(c["dir"], c["key"], c["parties"]))
        elif c.get("op") == "snapshot":
            results.append(snapshot())
        else:
            results.append(call(c["module"], c["args"], c.get("check", False), c.get("diff", False)))
    with open(sys.argv[2], "w") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main()
