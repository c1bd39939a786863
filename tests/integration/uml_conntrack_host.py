"""The bridging host of test_uml_bridge_filter_conntrack.py, run INSIDE a User-Mode-Linux guest.

Debian 12's UML kernel builds nf_conntrack_bridge (and only the bridge family of nf_tables), so a UML guest
can be a bridging host that runs uml_bridge_filter's pure bridge-family (conntrack) form for real. This
script is that guest's command (scripts/uml-guest boot - - DIR --writable OUT --modules -- python3 THIS OUT):
it builds br0 with three veth-attached namespace guests (dns on uml-conn0, www on uml-conn1, the uplink up
on up0; the addresses of tests/integration/bridgehost.py), runs the module with ansible-playbook (local
connection: the guest is the managed host), measures the kernel's state and the behaviour with real TCP
connections, and writes what it saw to OUT/facts.json after every step. It asserts nothing: the test on the
machine outside reads the facts and asserts, so a failure shows everything measured up to it.
"""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"
CALLBACKS = ROOT / "tests" / "integration" / "callback_plugins"
PYTHON = "/usr/bin/python3"
HOST4, HOST6 = "198.51.100.1", "fd00:100::1"
GUESTS = {"dns": ("uml-conn0", "198.51.100.21", "fd00:100::21"),
          "www": ("uml-conn1", "198.51.100.22", "fd00:100::22"),
          "up": ("up0", "198.51.100.23", "fd00:100::23")}
SPOOF4, SPOOF6 = "198.51.100.99", "fd00:100::99"
TABLE = ("bridge", "netconfine")

OUT = Path(sys.argv[1])
WORK = Path("/tmp/conntrack-host")
FACTS: dict = {}

SERVER = textwrap.dedent("""
    import select, socket, sys
    socks = []
    for port in map(int, sys.argv[1:]):
        s = socket.socket(socket.AF_INET6)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
        s.listen(16)
        socks.append(s)
    print("listening", flush=True)
    while True:
        for s in select.select(socks, [], [])[0]:
            c = s.accept()[0]
            c.settimeout(3)
            try:
                c.sendall(c.recv(64))       # echo: the reply direction carries data too
            except OSError:
                pass
            c.close()
""")

# one process per namespace tries every (name, host, port, source) at once; a connection counts only when the
# echo of what it sent came back (both directions of an established connection)
CLIENT = textwrap.dedent("""
    import json, socket, sys, threading
    def attempt(host, port, source):
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        s.settimeout(%(timeout)s)
        try:
            if source:
                s.bind((source, 0))
            s.connect((host, port))
            s.sendall(b"ping")
            return "connected" if s.recv(64) == b"ping" else "no-echo"
        except socket.timeout:
            return "timeout"
        except OSError as e:
            return "error-%%s" %% e.errno
        finally:
            s.close()
    found = {}
    def run(name, host, port, source):
        found[name] = attempt(host, port, source)
    threads = [threading.Thread(target=run, args=p) for p in json.loads(sys.argv[1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(found))
""")


def save() -> None:
    tmp = OUT / "facts.json.tmp"
    tmp.write_text(json.dumps(FACTS, indent=1, sort_keys=True))
    tmp.rename(OUT / "facts.json")


def record(key: str, value) -> None:
    FACTS[key] = value
    save()
    print("RESULT %s %s" % (key, json.dumps(value)[:200]), flush=True)


def sh(*argv: str, ns: str | None = None, check: bool = True, data: str | None = None) -> subprocess.CompletedProcess:
    full = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    proc = subprocess.run(full, input=data, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError("%s failed (rc=%d): %s" % (" ".join(full), proc.returncode, proc.stderr))
    return proc


# --------------------------------------------------------------------------- the bridging host

def build() -> dict:
    sh("ip", "link", "add", "br0", "type", "bridge")
    sh("ip", "addr", "add", HOST4 + "/24", "dev", "br0")
    sh("ip", "addr", "add", HOST6 + "/64", "dev", "br0", "nodad")
    sh("ip", "link", "set", "br0", "up")
    servers = {}
    for name, (port, ip4, ip6) in GUESTS.items():
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", name)
        sh("ip", "link", "set", port, "master", "br0", "up")
        sh("ip", "-n", name, "addr", "add", ip4 + "/24", "dev", "eth0")
        sh("ip", "-n", name, "addr", "add", ip6 + "/64", "dev", "eth0", "nodad")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
    for ns, ports in (("dns", (53, 22, 80)), ("www", (80,)), ("up", (53, 80, 514)), (None, (8053, 8054))):
        argv = [PYTHON, "-c", SERVER, *map(str, ports)]
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv] if ns else argv, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "listening"
        servers[ns or "host"] = proc
    return servers


def probe(ns: str | None, attempts: list[tuple], timeout: float = 3.0) -> dict:
    """{name: connected | timeout | error-N} for (name, host, port, source or None) tried from ``ns`` at once."""
    code = CLIENT % {"timeout": timeout}
    return json.loads(sh(PYTHON, "-c", code, json.dumps(attempts), ns=ns).stdout)


def behaviour() -> dict:
    """Every declared service in both directions, undeclared ones, the established replies (the echo)."""
    dns4, dns6 = GUESTS["dns"][1:]
    www4 = GUESTS["www"][1]
    up4, up6 = GUESTS["up"][1:]
    found = {}
    found.update(probe("www", [("www-dns-53", dns4, 53, None), ("www-dns6-53", dns6, 53, None),
                               ("www-dns-80", dns4, 80, None), ("www-up-80", up4, 80, None)]))
    found.update(probe("dns", [("dns-up-53", up4, 53, None), ("dns-up6-53", up6, 53, None),
                               ("dns-up-514", up4, 514, None), ("dns-up6-514", up6, 514, None),
                               ("dns-up-80", up4, 80, None), ("dns-www-80", www4, 80, None),
                               ("dns-host-8053", HOST4, 8053, None), ("dns-host6-8053", HOST6, 8053, None),
                               ("dns-host-8054", HOST4, 8054, None)]))
    found.update(probe("up", [("up-dns-53", dns4, 53, None), ("up-dns-22", dns4, 22, None)]))
    found.update(probe(None, [("host-dns-22", dns4, 22, None), ("host-dns6-22", dns6, 22, None),
                              ("host-dns-80", dns4, 80, None), ("host-www-80", www4, 80, None)]))
    return found


def spoofing() -> dict:
    """www forges its source address (IPv4, IPv6) towards dns:53, which its real address may reach."""
    sh("ip", "addr", "add", SPOOF4 + "/24", "dev", "eth0", ns="www")
    sh("ip", "addr", "add", SPOOF6 + "/64", "dev", "eth0", "nodad", ns="www")
    try:
        return probe("www", [("spoof-dns-53", GUESTS["dns"][1], 53, SPOOF4),
                             ("spoof6-dns-53", GUESTS["dns"][2], 53, SPOOF6)])
    finally:
        sh("ip", "addr", "del", SPOOF4 + "/24", "dev", "eth0", ns="www")
        sh("ip", "addr", "del", SPOOF6 + "/64", "dev", "eth0", ns="www")


# --------------------------------------------------------------------------- the kernel's state

def ruleset(without_counters: bool = True) -> list:
    items = json.loads(sh("nft", "-j", "list", "ruleset").stdout)["nftables"]
    items = [i for i in items if "metainfo" not in i]
    for item in items:
        for kind in ("table", "chain", "rule", "set"):
            item.get(kind, {}).pop("handle", None)
    text = json.dumps(items, sort_keys=True)
    if without_counters:
        text = text.replace('"packets": ', '"p": ').replace('"bytes": ', '"b": ')
        text = re.sub(r'\{"counter": \{"b": \d+, "p": \d+\}\}', '{"counter": null}', text)
    return json.loads(text)


def our_table() -> dict:
    """{chain: [rule text]} of table bridge netconfine (nft's own words), {} when there is none."""
    proc = sh("nft", "list", "table", *TABLE, check=False)
    if proc.returncode != 0:
        return {}
    chains, current = {}, None
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("chain "):
            current = line.split()[1]
            chains[current] = []
        elif current and line and line != "}":
            chains[current].append(line)
    return chains


def drops(chain_suffix: str) -> int:
    """Packets counted by the drop rule of our chain ``<task chain>.<suffix>``."""
    items = json.loads(sh("nft", "-j", "list", "table", *TABLE).stdout)["nftables"]
    total = 0
    for item in items:
        rule = item.get("rule")
        if rule and rule["chain"].endswith("." + chain_suffix) and {"drop": None} in rule["expr"]:
            total += sum(e["counter"]["packets"] for e in rule["expr"] if isinstance(e, dict) and "counter" in e)
    return total


def kernel_state() -> dict:
    modules = sh("cat", "/proc/modules").stdout
    tables = sorted("%s %s" % (i["table"]["family"], i["table"]["name"])
                    for i in json.loads(sh("nft", "-j", "list", "tables").stdout)["nftables"] if "table" in i)
    return {"modules": sorted(line.split()[0] for line in modules.splitlines()),
            "tables": tables,
            "proc_sys_net_bridge": os.path.exists("/proc/sys/net/bridge"),
            "br_netfilter": os.path.exists("/sys/module/br_netfilter")}


# --------------------------------------------------------------------------- ansible-playbook

def play(args: dict, check: bool = False, diff: bool = False, tag: str = "") -> dict:
    """One uml_bridge_filter task through ansible-playbook (local connection); its result, rc, changed count, time."""
    results = WORK / ("results-%s.jsonl" % tag)
    playbook = WORK / ("play-%s.yml" % tag)
    playbook.write_text(json.dumps([{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "bridge", "paranoid.netconfine.uml_bridge_filter": args}]}]))
    inventory = WORK / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"umlbridge": {
        "ansible_connection": "local", "ansible_python_interpreter": PYTHON}}}}))
    env = dict(os.environ, HOME="/tmp/home", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_LOCAL_TEMP="/tmp/ansible-local", ANSIBLE_REMOTE_TEMP="/tmp/ansible-remote",
               ANSIBLE_CALLBACK_PLUGINS=str(CALLBACKS), ANSIBLE_CALLBACKS_ENABLED="nct_results",
               NCT_RESULTS_FILE=str(results), ANSIBLE_NOCOLOR="1", ANSIBLE_DEPRECATION_WARNINGS="0")
    argv = [str(PLAYBOOK), "-i", str(inventory), *(["--check"] if check else []), *(["--diff"] if diff else []),
            str(playbook)]
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    took = round(time.monotonic() - start, 1)
    task, stats = {}, {}
    for line in results.read_text().splitlines() if results.exists() else []:
        rec = json.loads(line)
        if rec.get("stats"):
            stats = rec["stats"].get("umlbridge", {})
        elif rec.get("task") == "bridge":
            task = rec
    result = task.get("result", {})
    return {"rc": proc.returncode, "status": task.get("status"), "changed": bool(result.get("changed")),
            "failed": task.get("status") == "failed", "msg": result.get("msg", ""), "field": result.get("field"),
            "bridge_form": result.get("bridge_form"), "backend": result.get("backend"),
            "scripts": result.get("scripts"), "rendered": result.get("rendered"), "diff": result.get("diff"),
            "stats_changed": stats.get("changed"), "seconds": took,
            "output": (proc.stdout + proc.stderr)[-3000:] if proc.returncode else ""}


def task_args(**extra) -> dict:
    up = [GUESTS["up"][1], GUESTS["up"][2]]
    args = {"name": "umlhost", "bridge": "br0", "backend": "nftables", "persist_dir": "/tmp/persist",
            "boot_hook": "none", "guests": [
                {"name": "dns", "port": "uml-conn0", "addresses": list(GUESTS["dns"][1:]),
                 "inbound": [{"protocol": "udp", "port": "53"}, {"protocol": "tcp", "port": "53"}],
                 "outbound": [{"protocol": "udp", "port": "53", "to": up}, {"protocol": "tcp", "port": "53", "to": up},
                              {"protocol": "tcp", "port": "514", "to": [GUESTS["up"][1]]}],
                 "host_access": [{"protocol": "tcp", "port": "22"}],
                 "host_services": [{"protocol": "tcp", "port": "8053"}]},
                {"name": "www", "port": "uml-conn1", "addresses": list(GUESTS["www"][1:])},
            ]}
    args.update(extra)
    return args


def persisted() -> dict:
    found = {}
    for path in sorted(Path("/tmp/persist").rglob("*")):
        if path.is_file() and ".sysctl-" in path.name:
            found[str(path.relative_to("/tmp/persist"))] = path.read_text()
        elif path.is_file():
            found[str(path.relative_to("/tmp/persist"))] = ""
    return found


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    Path("/tmp/home").mkdir(exist_ok=True)
    record("uname", os.uname().release)
    start = time.monotonic()
    build()
    record("build_seconds", round(time.monotonic() - start, 1))
    record("control", behaviour())
    record("kernel_before", kernel_state())
    empty = ruleset()
    args = task_args()

    record("check", play(args, check=True, tag="check"))
    record("check_left_ruleset_alone", ruleset() == empty)
    record("apply", play(args, diff=True, tag="apply"))
    record("check_again", play(args, check=True, tag="check2"))
    record("apply_again", play(args, tag="apply2"))
    record("kernel_after", kernel_state())
    record("table", our_table())
    record("persisted", persisted())

    before = {c: drops(c) for c in ("to-dns", "from-dns", "hostin-dns", "hostout-dns", "spoof4-www", "spoof6-www")}
    record("behaviour", behaviour())
    record("spoofing", spoofing())
    record("drops", {c: [before[c], drops(c)] for c in before})

    held = ruleset()
    record("forced_marks", play(dict(args, bridge_form="marks"), tag="marks"))
    record("forced_marks_left_ruleset_alone", ruleset() == held)
    record("forced_conntrack", play(dict(args, bridge_form="conntrack"), tag="conntrack"))

    # the Docker case: another tool loads br_netfilter, so bridged packets also pass the IP hooks
    sh("modprobe", "br_netfilter")
    record("br_netfilter_loaded_by_hand", kernel_state())
    record("apply_with_br_netfilter", play(args, tag="brnf"))
    record("behaviour_with_br_netfilter", behaviour())

    record("absent", play(dict(args, state="absent"), tag="absent"))
    record("kernel_absent", kernel_state())
    record("table_absent", our_table())
    record("persisted_absent", persisted())
    record("absent_again", play(dict(args, state="absent"), tag="absent2"))

    # the iptables backend on a kernel whose nf_tables has no ip family: iptables-legacy holds the rules, and
    # the run that switches back to nftables removes them (the engine reads and cleans the other backend)
    record("iptables", play(dict(args, backend="iptables"), tag="iptables"))
    record("iptables_legacy_save", sh("iptables-legacy-save", "-t", "filter").stdout)
    record("iptables_behaviour", behaviour())
    record("switch_to_nftables", play(args, tag="switch"))
    record("iptables_legacy_save_after_switch", sh("iptables-legacy-save", "-t", "filter").stdout)
    record("switch_absent", play(dict(args, state="absent"), tag="absent3"))
    record("kernel_end", kernel_state())
    record("done", True)


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # the facts say where it stopped; the test fails on the missing keys
        record("error", "%s: %s" % (type(exc).__name__, exc))
        raise
