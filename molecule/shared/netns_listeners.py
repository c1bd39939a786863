"""Stand-in TCP listeners and a connect probe for the Molecule verifiers (run inside the host's namespace)."""

import contextlib
import subprocess

LISTENER = """
import select, socket, sys
socks = []
for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    for port in sys.argv[1:]:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, int(port)))
        s.listen(16)
        socks.append(s)
print("ready", flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        s.accept()[0].close()
"""
# prints 'connected' or the exception's class name
CONNECT = ("import socket, sys\n"
           "try:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close(); print('connected')\n"
           "except OSError as e:\n    print(type(e).__name__)")


@contextlib.contextmanager
def listening(host, *ports):
    """Accept (and close) TCP connections on 127.0.0.1 and [::1] at ``ports`` inside the host's namespace."""
    proc = subprocess.Popen(["ip", "netns", "exec", host.backend.name, "python3", "-c", LISTENER, *map(str, ports)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait()
