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
import re
import textwrap

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
    run("ip", "-n", host, "link", "add", BRIDGE, "type", "bridge")
    run("ip", "-n", host, "addr", "add", HOST4 + "/24", "dev", BRIDGE)
    run("ip", "-n", host, "addr", "add", HOST6 + "/64", "dev", BRIDGE, "nodad")
    run("ip", "-n", host, "link", "set", BRIDGE, "up")
    lab = BridgeHost(host, {}, {}, {}, {})
    for index, (name, port) in enumerate(members.items(), start=1):
        ns = cleanup.enter_context(nchelpers.netns())
        ip4, ip6 = addresses(index)
        run("ip", "-n", host, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "-n", host, "link", "set", port, "master", BRIDGE, "up")
        run("ip", "-n", ns, "addr", "add", ip4 + "/24", "dev", "eth0")
        run("ip", "-n", ns, "addr", "add", ip6 + "/64", "dev", "eth0", "nodad")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        lab.ns[name], lab.ports[name], lab.ip4[name], lab.ip6[name] = ns, port, ip4, ip6
    return lab


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
