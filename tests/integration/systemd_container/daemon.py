"""The test daemon of the real-systemd tier: proves what its sandbox lets it do.

    daemon.py PORT            (environment NCT_TARGETS="ADDR:PORT ...")

Writes /tmp/nct-private-tmp (PrivateTmp: must not show in the container's /tmp), listens on PORT,
then tries each target and 127.0.0.1:PORT and writes {target: "connected" | strerror} to
./result-PORT.json (its WorkingDirectory). Answers every client with "ok <netns inode>".
"""
import json
import os
import socket
import sys

port = int(sys.argv[1])
with open("/tmp/nct-private-tmp", "w") as handle:
    handle.write("written by the daemon\n")
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", port))
server.listen(8)
results = {}
for target in os.environ.get("NCT_TARGETS", "").split() + ["127.0.0.1:%d" % port]:
    host, tport = target.rsplit(":", 1)
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.settimeout(3)
    try:
        probe.connect((host, int(tport)))
        results[target] = "connected"
    except OSError as exc:
        results[target] = os.strerror(exc.errno) if exc.errno else str(exc)
    finally:
        probe.close()
    if target.startswith("127.0.0.1"):
        server.accept()[0].close()
tmp = "result-%d.json.tmp" % port
with open(tmp, "w") as handle:
    json.dump(results, handle)
os.rename(tmp, "result-%d.json" % port)
inode = os.stat("/proc/self/ns/net").st_ino
while True:
    conn, _peer = server.accept()
    conn.sendall(b"ok %d\n" % inode)
    conn.close()
