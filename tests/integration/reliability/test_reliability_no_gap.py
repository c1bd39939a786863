"""No gap during replacement: while a user floods UDP that must be refused, the owned chain is replaced
100 times (content, rule order and the jump's position change); the receiver counts 0 datagrams.

Controls: the same flood reaches the receiver before the policy is applied and after it is removed
(the sender was alive and the receiver counting), and the receiving sockets dropped nothing for lack
of buffer (UDP RcvbufErrors unchanged), so a leaked datagram could not go uncounted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import textwrap
import time

import nchelpers
from reliability import kernel, tally

REPLACEMENTS = 100

_RECEIVER = textwrap.dedent("""
    import select, socket, sys, threading, time
    port, path = int(sys.argv[1]), sys.argv[2]
    count = [0]
    socks = []
    for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind((addr, port))
        s.setblocking(False)
        socks.append(s)
    def report():
        while True:
            with open(path + ".tmp", "w") as out:
                out.write(str(count[0]))
            import os; os.replace(path + ".tmp", path)
            time.sleep(0.02)
    threading.Thread(target=report, daemon=True).start()
    print("ready", flush=True)
    while True:
        for s in select.select(socks, [], [])[0]:
            while True:
                try:
                    s.recv(64)
                except BlockingIOError:
                    break
                count[0] += 1
""")

_SENDER = textwrap.dedent("""
    import errno, signal, socket, sys, time
    port = int(sys.argv[1])
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    targets = [(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), ("127.0.0.1", port)),
               (socket.socket(socket.AF_INET6, socket.SOCK_DGRAM), ("::1", port))]
    sent = refused = 0
    print("ready", flush=True)
    while not stop:
        for sock, addr in targets:
            try:
                sock.sendto(b"must not arrive", addr)
                sent += 1
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EACCES, errno.ECONNREFUSED):
                    raise
                refused += 1
        if (sent + refused) % 20 == 0:
            time.sleep(0.0005)
    print(sent, refused, flush=True)
""")


@contextlib.contextmanager
def _process(argv, ns):
    proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", line + proc.stderr.read()
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _flood_policy(world, variant):
    rules = [{"protocol": "udp", "destination": ["localhost"], "destination_port": str(world.port),
              "uid_owner": world.user, "jump": "DROP", "comment": "flood v%d" % variant}]
    if variant % 3 == 1:
        rules.insert(0, {"protocol": "udp", "destination_port": "9", "jump": "DROP"})
    if variant % 4 == 3:
        rules.append({"protocol": "tcp", "destination_port": "9", "jump": "REJECT", "comment": "extra %d" % variant})
    return {"name": "rly-flood", "position": "last" if variant % 2 else "first", "rules": rules,
            "backend": world.backend.name}


def _rcvbuf_errors(ns) -> int:
    total = 0
    for path in ("/proc/net/snmp", "/proc/net/snmp6"):
        text = nchelpers.run("cat", path, ns=ns).stdout
        if path.endswith("snmp"):
            lines = [line.split() for line in text.splitlines() if line.startswith("Udp:")]
            total += int(dict(zip(lines[0][1:], lines[1][1:]))["RcvbufErrors"])
        else:
            total += sum(int(line.split()[1]) for line in text.splitlines() if line.startswith("Udp6RcvbufErrors"))
    return total


def test_no_packet_gets_through_while_the_chain_is_replaced_100_times(world, tmp_path):
    counter = tmp_path / "received"

    def received():
        return int(counter.read_text()) if counter.exists() else 0

    def settled(limit=15.0):
        """The count once it stops moving (bounded: a count that keeps moving fails the test, never hangs it)."""
        deadline, last = time.monotonic() + limit, received()
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = received()
            if now == last:
                return now
            last = now
        raise AssertionError("datagrams kept arriving for %.0fs while they should all be refused" % limit)

    with _process([nchelpers.SYSTEM_PYTHON, "-c", _RECEIVER, str(world.port), str(counter)], world.ns):
        with _process(["runuser", "-u", world.user, "--", nchelpers.SYSTEM_PYTHON, "-c", _SENDER, str(world.port)],
                      world.ns) as sender:
            assert kernel.wait_for(lambda: received() > 100, 20), "control: the flood does not arrive without policy"
            first = kernel.run_module(world.ns, "owner_rule", _flood_policy(world, 0))
            assert not first.get("failed"), first
            before, errors_before = settled(), _rcvbuf_errors(world.ns)

            calls = [{"module": "owner_rule", "args": _flood_policy(world, i)} for i in range(1, REPLACEMENTS + 1)]
            results = kernel.run_modules(world.ns, calls)

            after, errors_after = settled(), _rcvbuf_errors(world.ns)
            removed = kernel.run_module(world.ns, "owner_rule", dict(_flood_policy(world, 0), state="absent"))
            assert kernel.wait_for(lambda: received() > after + 100, 20), \
                "control: the flood does not arrive after the policy is removed"
            sender.send_signal(signal.SIGTERM)
            sent, refused = map(int, sender.communicate(timeout=30)[0].split())

    failed = [r.get("msg") for r in results if r.get("failed")]
    assert not failed, failed
    replaced = sum(1 for r in results if r.get("changed"))
    tally.add("replacements", replaced)
    tally.add("packets_leaked", after - before)
    assert replaced == REPLACEMENTS
    assert not removed.get("failed"), removed
    assert after - before == 0, "%d datagrams got through while the chain was replaced" % (after - before)
    assert errors_after == errors_before, "the receiver dropped datagrams for lack of buffer: could miss leaks"
    assert refused > 1000, "the flood was too thin to mean anything: %d refused, %d sent" % (refused, sent)
