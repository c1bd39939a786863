"""uml_bridge_filter with the seed's own kind of guest: real User-Mode-Linux guests on taps uml-conn0/1.

The bridging host is a namespace with br0 (bridgehost.build without namespace guests); two taps in
it, uml-conn0 and uml-conn1, are the ports of two UML guests (Debian's user-mode-linux: linux.uml
with the host's file system as its read-only root, hostfs, and an init script as PID 1, ~3 s to
boot; the recipe is scripts/uml-guest, which the lab uses too). The task is applied before the guests
boot, on each backend. Guest "dns" serves TCP 53, 22 and 80 on its IPv4 and IPv6 (fd00::) addresses;
guest "www" checks from inside what it may reach, then forges its source address (IPv4, then IPv6),
and reports. The host checks its own view (SSH-port in, counters
of the LOG and DROP rules).

This tier fails, not skips, where UML cannot run (no kernel scripts/uml-kernel can run, no /dev/net/tun).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

import bridgehost
import nchelpers
from bridgehost import HOST4, HOST6, reach
from nchelpers import ROOT, SYSTEM_PYTHON, run
# pytest fixtures, used by name: both backends, the filter task, the kernel facts
from test_uml_bridge_filter import backend, bridge_filter, kernel  # noqa: F401 pylint: disable=unused-import

UML_GUEST = ROOT / "scripts" / "uml-guest"    # the boot recipe, shared with the lab (playbooks/lab/uml_guests.yml)
DNS4, WWW4, SPOOF4 = "198.51.100.21", "198.51.100.22", "198.51.100.99"
DNS6, WWW6, SPOOF6 = "fd00:100::21", "fd00:100::22", "fd00:100::99"
BOOT_TIMEOUT = 90

_GUEST_PY = textwrap.dedent("""
    import socket, subprocess, sys, time
    role = sys.argv[1]
    if role == "dns":
        socks = []
        for port in (53, 22, 80):
            s = socket.socket(socket.AF_INET6)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::", port))
            s.listen(16)
            socks.append(s)
        print("RESULT dns listening", flush=True)
        import select
        while True:
            for s in select.select(socks, [], [])[0]:
                s.accept()[0].close()
    def attempt(host, port, source=None, timeout=2.0):
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        s.settimeout(timeout)
        try:
            if source:
                s.bind((source, 0))
            s.connect((host, port))
            return "connected"
        except socket.timeout:
            return "timeout"
        except OSError as e:
            return "error-%s" % e.errno
        finally:
            s.close()
    # per family: the DNS guest's address, the address to forge, the host's bridge address
    for tag, (dns, spoof, host) in (("", sys.argv[2:5]), ("6", sys.argv[5:8])):
        deadline = time.time() + 30
        while attempt(dns, 53, timeout=1.0) != "connected" and time.time() < deadline:
            time.sleep(0.5)
        print("RESULT real%s-53 %s" % (tag, attempt(dns, 53)), flush=True)
        print("RESULT real%s-80 %s" % (tag, attempt(dns, 80)), flush=True)
        # before forging: a neighbour solicitation from the forged address is dropped too (as it must be),
        # which leaves the guest's neighbour entry for the host failed for a while
        print("RESULT real%s-host %s" % (tag, attempt(host, 8053)), flush=True)
        subprocess.run(["ip", "addr", "add", spoof + ("/64" if tag else "/24"), "dev", "eth0"]
                       + (["nodad"] if tag else []), check=True)
        print("RESULT spoof%s-53 %s" % (tag, attempt(dns, 53, source=spoof)), flush=True)
        print("RESULT spoof%s-host %s" % (tag, attempt(host, 8053, source=spoof)), flush=True)
""")


def require_uml() -> None:
    """Fail (never skip) with the reason when this host cannot run UML guests."""
    try:
        nchelpers.uml_kernel()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    if not os.path.exists("/dev/net/tun"):
        pytest.fail("/dev/net/tun is missing: UML guests need TUN/TAP", pytrace=False)


@contextlib.contextmanager
def uml_guest(host_ns: str, tap: str, address: str, address6: str, role: str, *args: str):
    """Boot a UML guest on ``tap`` (in ``host_ns``); yields the Popen whose stdout is its console."""
    workdir = Path(tempfile.mkdtemp(prefix="nct-uml-", dir="/tmp"))
    os.chmod(workdir, 0o755)
    script = workdir / "guest.py"
    script.write_text(_GUEST_PY)
    argv = ["bash", str(UML_GUEST), "boot", host_ns, tap, str(workdir), "--ip", address + "/24",
            "--ip", address6 + "/64", "--", SYSTEM_PYTHON, str(script), role, *args]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        shutil.rmtree(workdir, ignore_errors=True)


def results(proc, until: str, timeout: float = BOOT_TIMEOUT) -> tuple[dict[str, str], str]:
    """Read the guest's console until a ``RESULT <until>`` line; returns ({key: value}, console text)."""
    found, console = {}, []
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stdout.fileno(), True)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        console.append(line)
        if line.startswith("RESULT "):
            key, _sep, value = line[len("RESULT "):].strip().partition(" ")
            found[key] = value
            if key == until or value == until:
                return found, "".join(console)
    raise AssertionError("guest did not report %r within %ss:\n%s" % (until, timeout, "".join(console[-60:])))


def test_seed001_real_uml_guests_spoof_logged_and_dropped_services_as_declared(cleanup, backend, kernel):
    require_uml()
    lab = bridgehost.build(cleanup, {})
    for tap in ("uml-conn0", "uml-conn1"):
        run("ip", "-n", lab.host, "tuntap", "add", tap, "mode", "tap")
        run("ip", "-n", lab.host, "link", "set", tap, "master", "br0", "up")
    bridgehost.serve(cleanup, lab.host, 8053)
    args = {"name": "umlhost", "guests": [
        {"name": "dns", "port": "uml-conn0", "addresses": [DNS4, DNS6],
         "inbound": [{"protocol": "udp", "port": "53"}, {"protocol": "tcp", "port": "53"}],
         "host_access": [{"protocol": "tcp", "port": "22"}]},
        {"name": "www", "port": "uml-conn1", "addresses": [WWW4, WWW6]},
    ]}
    applied = bridge_filter(lab.host, args, backend=backend)
    assert applied.changed
    assert not bridge_filter(lab.host, args, backend=backend).changed
    before = {f: kernel.drops(lab.host, applied, "g", "www", f) for f in (4, 6)}

    with uml_guest(lab.host, "uml-conn0", DNS4, DNS6, "dns") as dns:
        results(dns, "listening")
        # the host may SSH (TCP 22) into the guest, nothing else
        for address in (DNS4, DNS6):
            assert reach(lab.host, address, 22, timeout=3) == "connected", address
            assert reach(lab.host, address, 80, timeout=3) == "timeout", address
        with uml_guest(lab.host, "uml-conn1", WWW4, WWW6, "www", DNS4, SPOOF4, HOST4, DNS6, SPOOF6, HOST6) as www:
            found, console = results(www, "done")
    for tag in ("", "6"):
        assert found.get("real%s-53" % tag) == "connected", console
        assert found.get("real%s-80" % tag) == "timeout", console
        assert found.get("spoof%s-53" % tag) == "timeout", console
        assert found.get("spoof%s-host" % tag) == "timeout", console
        assert found.get("real%s-host" % tag) == "connected", console
    for family in (4, 6):
        after = kernel.drops(lab.host, applied, "g", "www", family)
        assert after["LOG"] > before[family]["LOG"] and after["DROP"] > before[family]["DROP"], (family, after)
    assert kernel.drops(lab.host, applied, "to", "dns", 4)["DROP"] > 0

    assert bridge_filter(lab.host, dict(args, state="absent"), backend=backend).changed
    assert kernel.anything_ours(lab.host) == []
