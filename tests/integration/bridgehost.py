"""A bridging host for the uml_bridge_filter tests: namespace ``host`` with ``br0``, guests on its ports.

    with bridge_host(cleanup, guests={"dns": "uml-conn0", "www": "uml-conn1"}, uplink="up0") as lab:
        lab.host, lab.ns["dns"], lab.ns["up"]      # namespace names

Each guest is a namespace whose ``eth0`` is the peer of a veth port on ``br0`` in the host
namespace (the same place a UML guest's tap sits). Addresses come from 198.51.100.0/24 and
fd00:100::/64 (see ADDRESSES); the host has .1 on br0; the uplink namespace stands for the
DMZ behind the bridge (upstream DNS, log server). Everything lives in namespaces created by
nchelpers and is removed with them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import textwrap
import time

import nchelpers
from nchelpers import SYSTEM_PYTHON, run

BRIDGE = "br0"
HOST4, HOST6 = "198.51.100.1", "fd00:100::1"


def addresses(index: int) -> tuple[str, str]:
    """IPv4 and IPv6 address of guest/peer number ``index`` (1-based: .21, .22, ...)."""
    return "198.51.100.%d" % (20 + index), "fd00:100::%d" % (20 + index)


@dataclasses.dataclass
class BridgeHost:
    host: str
    ns: dict            # name -> namespace
    ports: dict         # name -> port on br0
    ip4: dict
    ip6: dict


def build(cleanup, members: dict[str, str]) -> BridgeHost:
    """members: name -> port. Returns the lab; the namespaces are deleted by ``cleanup``."""
    host = cleanup.enter_context(nchelpers.netns())
    lab = BridgeHost(host, {}, {}, {}, {})
    for index, (name, port) in enumerate(members.items(), start=1):
        lab.ns[name], lab.ports[name] = cleanup.enter_context(nchelpers.netns()), port
        lab.ip4[name], lab.ip6[name] = addresses(index)
    wire(lab)
    return lab


def wire(lab: BridgeHost) -> None:
    """br0 and the guests' veths in the (empty) host namespace, as the host's network setup makes them."""
    host = lab.host
    run("ip", "-n", host, "link", "add", BRIDGE, "type", "bridge")
    run("ip", "-n", host, "addr", "add", HOST4 + "/24", "dev", BRIDGE)
    run("ip", "-n", host, "addr", "add", HOST6 + "/64", "dev", BRIDGE, "nodad")
    run("ip", "-n", host, "link", "set", BRIDGE, "up")
    for name, ns in lab.ns.items():
        port = lab.ports[name]
        run("ip", "-n", host, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "-n", host, "link", "set", port, "master", BRIDGE, "up")
        run("ip", "-n", ns, "addr", "add", lab.ip4[name] + "/24", "dev", "eth0")
        run("ip", "-n", ns, "addr", "add", lab.ip6[name] + "/64", "dev", "eth0", "nodad")
        run("ip", "-n", ns, "link", "set", "eth0", "up")


# --------------------------------------------------------------------------- traffic

_SERVE = textwrap.dedent("""
    import select, socket, sys
    socks = []
    for port in map(int, sys.argv[1:]):
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(socket.AF_INET6, kind)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::", port))
            if kind == socket.SOCK_STREAM:
                s.listen(64)
            socks.append(s)
    print("ready", flush=True)
    while True:
        for s in select.select(socks, [], [])[0]:
            if s.type == socket.SOCK_STREAM:
                s.accept()[0].close()
            else:
                data, peer = s.recvfrom(2048)
                s.sendto(b"pong:" + data, peer)
""")


def serve(cleanup, ns: str, *ports: int) -> None:
    """TCP accept-and-close and UDP echo on every address of ``ns`` (IPv4 and IPv6) until the test ends."""
    cleanup.enter_context(nchelpers.daemon(ns, SYSTEM_PYTHON, "-c", _SERVE, *map(str, ports), ready="ready"))


_CLIENT = textwrap.dedent("""
    import socket, sys
    proto, src, host, port, timeout = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        if src != "-":
            s.bind((src, 0))
        if proto == "tcp":
            s.connect((host, port))
            print("connected")
        else:
            s.sendto(b"ping", (host, port))
            print("connected" if s.recvfrom(2048)[0] == b"pong:ping" else "garbled")
    except socket.timeout:
        print("timeout")
    except ConnectionRefusedError:
        print("refused")
    except OSError as e:
        print(repr(e))
""")


def reach(ns: str, host: str, port: int, proto: str = "tcp", source: str | None = None,
          timeout: float = 1.5) -> str:
    """From ``ns`` (as root, optionally from address ``source``): connected, refused, timeout or an error."""
    proc = run(SYSTEM_PYTHON, "-c", _CLIENT, proto, source or "-", host, str(port), str(timeout), ns=ns,
               check=False, timeout=timeout + 30)
    return proc.stdout.strip() or proc.stderr.strip()


_FRAMES_RECEIVE = textwrap.dedent("""
    import select, socket, sys
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))     # ETH_P_ALL: whatever arrives
    raw.bind(("eth0", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", int(sys.argv[1])))
    print("ready", flush=True)
    while True:
        for s in select.select([raw, udp], [], [])[0]:
            data, peer = s.recvfrom(2048)
            if b"netconfine" in data:
                print("frame" if s is raw else "datagram " + peer[0], flush=True)
""")
_FRAMES_SEND = textwrap.dedent("""
    import socket, struct, sys
    dst_mac, src, dst, port, ether_type = sys.argv[1:6]
    tags = [int(t, 0) for t in sys.argv[6:]]              # (tpid, tci) pairs, outermost first
    src_mac = open("/sys/class/net/eth0/address").read().strip()
    payload = b"netconfine"
    udp = struct.pack("!HHHH", 40000, int(port), 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    words = sum(struct.unpack("!10H", header))
    words = (words & 0xffff) + (words >> 16)
    header = header[:10] + struct.pack("!H", ~((words & 0xffff) + (words >> 16)) & 0xffff) + header[12:]
    frame = b"".join(bytes.fromhex(m.replace(":", "")) for m in (dst_mac, src_mac))
    for tpid, tci in zip(tags[::2], tags[1::2]):
        frame += struct.pack("!HH", tpid, tci)
    frame += struct.pack("!H", int(ether_type, 0)) + header + udp
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("eth0", 0))
    for _ in range(3):
        s.send(frame)
""")
VLAN_TAGS = {"802.1Q": 0x8100, "802.1ad": 0x88a8}


def forged_frames(sender: str, receiver: str, source: str, destination: str, tags=(), ether_type: int = 0x0800,
                  port: int = 9999, wait: float = 1.5) -> dict:
    """Three hand-made frames from ``sender``'s eth0 to ``receiver``'s: an IPv4 UDP datagram ``source`` ->
    ``destination``:``port`` behind the VLAN ``tags`` ((\"802.1Q\" or \"802.1ad\", vid), outermost first) and
    ``ether_type``. Returns {"frames": how many reached the receiver's eth0, "datagrams": [the sources its
    UDP socket received from]} (the kernel delivers a priority-tagged frame, vid 0, as an untagged one)."""
    mac = run("cat", "/sys/class/net/eth0/address", ns=receiver).stdout.strip()
    argv = [mac, source, destination, str(port), hex(ether_type)]
    for kind, vid in tags:
        argv += [hex(VLAN_TAGS[kind]), str(vid)]
    with nchelpers.daemon(receiver, SYSTEM_PYTHON, "-c", _FRAMES_RECEIVE, str(port), ready="ready") as proc:
        run(SYSTEM_PYTHON, "-c", _FRAMES_SEND, *argv, ns=sender)
        time.sleep(wait)
        os.killpg(proc.pid, signal.SIGKILL)
        lines = [line.split() for line in proc.stdout.read().splitlines()]
    return {"frames": sum(1 for line in lines if line == ["frame"]),
            "datagrams": [line[1] for line in lines if line[0] == "datagram"]}


def counters(ns: str, family: int, chain: str) -> dict[str, int]:
    """Packet counters of the LOG and DROP rules at the end of ``chain`` (the log-then-drop pair)."""
    out = run("iptables-save" if family == 4 else "ip6tables-save", "-c", "-t", "filter", ns=ns).stdout
    found = {}
    for match in re.finditer(r"^\[(\d+):\d+\] -A %s (.*)$" % re.escape(chain), out, re.M):
        rule = match.group(2)
        if rule.endswith("-j DROP") and " -p " not in " " + rule:
            found["DROP"] = int(match.group(1))
        elif "-j LOG" in rule and " -p " not in " " + rule:
            found["LOG"] = int(match.group(1))
    return found


# --------------------------------------------------------------------------- the kernel, per backend

BACKENDS = ("iptables", "nftables")
OUR_NFT_TABLES = ("inet netconfine", "bridge netconfine")
# nf_tables tables that iptables-nft / ebtables-nft keep (compared through iptables-save / ebtables-save)
XTABLES_NFT = ("ip filter", "ip6 filter", "bridge filter", "ip mangle", "ip6 mangle", "ip nat", "ip6 nat")
_OURS = re.compile(r"^(:NC-|-A NC-)|-[jg] NC-|netconfine:")
_SAVE_COUNTERS = re.compile(r"^\[\d+:\d+\] | \[\d+:\d+\]$", re.M)
_NFT_COUNTERS = re.compile(r"counter packets \d+ bytes \d+")


def _nft_tables(text: str) -> dict[str, str]:
    """``nft list ruleset`` text -> {"family name": the table's block}."""
    out, current, lines = {}, None, []
    for line in text.splitlines():
        if line.startswith("table "):
            current, lines = line[len("table "):].rstrip(" {"), [line]
        elif current is not None:
            lines.append(line)
            if line == "}":
                out[current] = "\n".join(lines)
                current = None
    return out


def _save(ns: str, tool: str) -> str:
    """``tool`` (iptables-save ...) without counters and without its comment lines (they carry the time)."""
    text = _SAVE_COUNTERS.sub("", run(tool, ns=ns).stdout)
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


class Kernel:
    """What the kernel holds, read the way the backend under test is compared (counters left out)."""

    def __init__(self, backend: str):
        self.backend = backend

    @staticmethod
    def nft_text(ns: str) -> dict[str, str]:
        return _nft_tables(_NFT_COUNTERS.sub("counter", run("nft", "list", "ruleset", ns=ns).stdout))

    def snapshot(self, ns: str) -> dict[str, str]:
        """Everything: iptables-save of both families, ebtables-save, every nftables table."""
        out = {"iptables 4": _save(ns, "iptables-save"), "iptables 6": _save(ns, "ip6tables-save"),
               "ebtables": _save(ns, "ebtables-save")}
        out.update(("nft " + k, v) for k, v in self.nft_text(ns).items() if k not in XTABLES_NFT)
        return out

    def ours(self, ns: str) -> list[str]:
        """The lines of what the module owns on this backend."""
        snap = self.snapshot(ns)
        if self.backend == "iptables":
            return [line for key in ("iptables 4", "iptables 6", "ebtables") for line in snap[key].splitlines()
                    if _OURS.search(line)]
        return [line for table in OUR_NFT_TABLES for line in snap.get("nft " + table, "").splitlines()]

    def anything_ours(self, ns: str) -> list[str]:
        """What either backend owns (after state absent or a switch, nothing)."""
        return Kernel("iptables").ours(ns) + Kernel("nftables").ours(ns)

    def foreign(self, ns: str) -> dict[str, object]:
        """Everything the module does not own, on either backend."""
        snap = self.snapshot(ns)
        out = {}
        for key in ("iptables 4", "iptables 6", "ebtables"):
            out[key] = [line for line in snap[key].splitlines() if not _OURS.search(line)]
        if out["ebtables"] == ["*filter", ":INPUT ACCEPT", ":FORWARD ACCEPT", ":OUTPUT ACCEPT"]:
            out["ebtables"] = []    # the empty table ebtables-restore made and left (it records no made table)
        for key, text in snap.items():
            name = key[len("nft "):]
            if key.startswith("nft ") and name not in OUR_NFT_TABLES and name not in XTABLES_NFT:
                out[key] = text
        return out

    def _nft_chain_counters(self, ns: str, table: str, match) -> list[tuple[dict, str]]:
        items = json.loads(run("nft", "-j", "list", "table", *table.split(), ns=ns).stdout)["nftables"]
        return [(i["rule"], i["rule"]["chain"]) for i in items if "rule" in i and match(i["rule"]["chain"])]

    def drops(self, ns: str, result, word: str, guest: str, family: int) -> dict[str, int]:
        """Packet counters of the log-then-drop pair of ``guest``'s ``word`` chain (g: anti-spoofing,
        to/from/hin/hout: its service policy) as {"LOG": n, "DROP": n}."""
        if self.backend == "iptables":
            return counters(ns, family, _chain(result, word, guest))
        if word == "g":
            rules = self._nft_chain_counters(ns, "bridge netconfine",
                                             lambda c: c.endswith(".spoof%d-%s" % (family, guest)))
        else:
            name = _chain(result, word, guest)
            proto = {4: "ipv4", 6: "ipv6"}[family]
            rules = [(r, c) for r, c in self._nft_chain_counters(ns, "inet netconfine", lambda c: c == name)
                     if proto in json.dumps(r["expr"])]
        found = {}
        for rule, _chain_name in rules:
            packets = [e["counter"]["packets"] for e in rule["expr"] if "counter" in e]
            kinds = set(k for e in rule["expr"] for k in e)
            if packets and "log" in kinds:
                found["LOG"] = found.get("LOG", 0) + packets[0]
            elif packets and "drop" in kinds:
                found["DROP"] = found.get("DROP", 0) + packets[0]
        return found

    def l2_drops(self, ns: str, guest: str) -> int:
        """Frames the L2 (MAC/ARP) anti-spoofing of ``guest`` dropped."""
        if self.backend == "iptables":
            out = run("ebtables-save", "-c", ns=ns).stdout
            counts = [int(m.group(1)) for m in re.finditer(
                r"^\[(\d+):\d+\] -A (NC-\S*-l2drop-%s\S*) -j DROP$" % re.escape(guest[:1]), out, re.M)]
            assert counts, out
            return sum(counts)
        rules = self._nft_chain_counters(ns, "bridge netconfine", lambda c: c.endswith(".l2-" + guest))
        counts = [e["counter"]["packets"] for r, _c in rules for e in r["expr"] if "counter" in e
                  and any("drop" in x for x in r["expr"])]
        assert counts, rules
        return sum(counts)


def _chain(result, word: str, guest: str) -> str:
    found = [c for c in result.result["chains"] if re.fullmatch(r"NC-umlhost-%s-%s-[0-9a-f]{8}" % (word, guest), c)]
    assert len(found) == 1, result.result["chains"]
    return found[0]
