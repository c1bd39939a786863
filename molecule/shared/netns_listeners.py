"""Stand-in TCP listeners and a connect probe for the Molecule verifiers (run inside a namespace).

    with listening(host, 992, 273): ...                      # 127.0.0.1 and [::1] of the host's namespace
    with listening_in("nctmol-bg-dns", ("198.51.100.21", 53)): ...   # any address of any namespace

As a program (a prepare step that leaves a listener running until destroy kills the namespace's processes):

    python3 netns_listeners.py 192.0.2.80:80 [ADDRESS:PORT ...]
"""

import contextlib
import subprocess

# argv: ADDRESS:PORT ... (an IPv6 address as is: "::1:992"); accepts and closes every connection
LISTENER = """
import select, socket, sys
socks = []
for endpoint in sys.argv[1:]:
    addr, _, port = endpoint.rpartition(":")
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, int(port)))
    s.listen(16)
    socks.append(s)
print("ready", flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        s.accept()[0].close()
"""
LOOPBACKS = ("127.0.0.1", "::1")
# argv: ADDRESS PORT [SOURCE]; prints 'connected' or the exception's class name (TimeoutError: dropped)
CONNECT = ("import socket, sys\n"
           "src = (sys.argv[3], 0) if len(sys.argv) > 3 else None\n"
           "try:\n"
           "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2, source_address=src).close()\n"
           "    print('connected')\n"
           "except OSError as e:\n    print(type(e).__name__)")


@contextlib.contextmanager
def listening_in(netns, *endpoints):
    """Accept (and close) TCP connections at each ``(address, port)`` of ``endpoints`` inside namespace ``netns``."""
    args = ["%s:%s" % endpoint for endpoint in endpoints]
    proc = subprocess.Popen(["ip", "netns", "exec", netns, "python3", "-c", LISTENER, *args],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def listening(host, *ports):
    """Accept (and close) TCP connections on 127.0.0.1 and [::1] at ``ports`` inside the host's namespace."""
    with listening_in(host.backend.name, *[(address, port) for address in LOOPBACKS for port in ports]):
        yield


if __name__ == "__main__":
    exec(LISTENER)  # pylint: disable=exec-used  # sys.argv is the listener's
