"""The seed's daemon stand-in: listens on every port given (all addresses), and answers each connection with
its uid, whether the file it wrote in /tmp is there (a private /tmp: the host's has no such file) and the peer."""
import os
import select
import socket
import sys

MARK = "/tmp/nctmol-netns-confine-daemon"
with open(MARK, "w", encoding="ascii") as mark:
    mark.write("mine\n")
socks = []
for port in sys.argv[1:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port)))
    s.listen(16)
    socks.append(s)
while True:
    for s in select.select(socks, [], [])[0]:
        conn, peer = s.accept()
        conn.sendall(("uid=%d tmp=%s peer=%s\n" % (os.getuid(), os.path.exists(MARK), peer[0])).encode())
        conn.close()
