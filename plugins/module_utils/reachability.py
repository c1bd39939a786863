# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Try to reach an address as a given user: the logic of the ``probe`` module.

Private to the paranoid.netconfine collection: its interfaces may change at any
release; do not import it from elsewhere.

Each probe runs in a child process of its own (``os.fork``), which drops to the
probe's identity first (``setgroups``, ``setresgid``, ``setresuid``: the order
matters, see setresuid(2)), enters the probe's SELinux type when it has one,
and only then opens its socket, so netfilter's owner match sees exactly that
user and those groups, and SELinux (SECMARK's packet checks) that domain.
Nothing on the host is changed.

Outcomes (``OUTCOMES``), from what the kernel reports to the sender:

- ``connected``: TCP handshake completed (and, with ``receive``, the peer sent
  data); a UDP datagram or an ICMP echo was answered.
- ``refused``: ``ECONNREFUSED`` - a TCP RST (``REJECT --reject-with tcp-reset``,
  no listener) or an ICMP port/protocol unreachable (``REJECT``'s default).
- ``reset``: ``ECONNRESET``/``EPIPE`` after connecting, or the peer closed the
  connection before sending anything while ``receive`` waited for data.
- ``unreachable``: ``EHOSTUNREACH``/``ENETUNREACH``/``EADDRNOTAVAIL``... - no
  route, ICMP host/net unreachable or administratively prohibited.
- ``timeout``: no answer within the probe's timeout (a ``DROP`` on the way, or a
  UDP service that does not answer).
- ``permission-denied``: ``EPERM``/``EACCES`` when sending - the local OUTPUT
  path dropped a datagram or echo (netfilter returns ``EPERM`` to the sender).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import grp
import json
import math
import os
import pwd
import re
import select
import signal
import socket
import struct
import subprocess
import time
from collections import namedtuple

from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError

OUTCOMES = ("connected", "refused", "reset", "unreachable", "timeout", "permission-denied")
EXPECTATIONS = ("allowed", "denied") + OUTCOMES
PROTOCOLS = ("tcp", "udp", "icmp")
FAMILIES = {"any": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
PING_PATH = ("/usr/bin", "/bin", "/usr/sbin", "/sbin")
# Extra seconds a child may take beyond its timeout (fork, resolving, exec of ping) before it is killed.
GRACE = 5.0
_SELINUX_TYPE = re.compile(r"^[A-Za-z0-9_]+$")

_ERRNO_OUTCOME = {
    errno.ECONNREFUSED: "refused",
    errno.ECONNRESET: "reset",
    errno.EPIPE: "reset",
    errno.ECONNABORTED: "reset",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
    errno.ENETDOWN: "unreachable",
    errno.EHOSTDOWN: "unreachable",
    errno.EADDRNOTAVAIL: "unreachable",
    errno.EAFNOSUPPORT: "unreachable",
    errno.ETIMEDOUT: "timeout",
    errno.EPERM: "permission-denied",
    errno.EACCES: "permission-denied",
}

Identity = namedtuple("Identity", "user uid group gid groups")
Probe = namedtuple("Probe", "index name identity protocol host port family timeout receive payload expect selinux_type")
SELINUX_ENFORCE = "/sys/fs/selinux/enforce"     # exists where SELinux is enabled (enforcing or permissive)
SELINUX_CURRENT = "/proc/thread-self/attr/current"


# --------------------------------------------------------------------------- building probes from params

def _lookup_user(value, field):
    try:
        if isinstance(value, int) or str(value).isdigit():
            return pwd.getpwuid(int(value))
        return pwd.getpwnam(str(value))
    except KeyError:
        raise NetconfineError("unknown user %r on this host" % (value,), field)


def _lookup_group(value, field):
    try:
        if isinstance(value, int) or str(value).isdigit():
            return grp.getgrgid(int(value))
        return grp.getgrnam(str(value))
    except KeyError:
        raise NetconfineError("unknown group %r on this host" % (value,), field)


def _current_identity():
    uid, gid = os.geteuid(), os.getegid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return Identity(user, uid, group, gid, tuple(sorted(set(os.getgroups()))))


def build_identity(user, group, supplementary, field):
    """The identity a probe runs as: (user, uid, group, gid, supplementary gids).

    ``user`` None: the module's own identity (its groups as the process has them).
    ``group``: the group the process runs as (as after ``sg G``); default the user's primary group.
    ``supplementary`` None: the user's groups in the group database (what a login gives, initgroups(3)),
    plus ``group``; a list: exactly those groups (``[]``: none, like ``runuser -g``).
    Errors name the field (``probes[2].user``); switching identity needs root.
    """
    me = _current_identity()
    if user is None and group is None and supplementary is None:
        return me
    pw = _lookup_user(user, field + ".user") if user is not None else pwd.getpwuid(me.uid)
    if group is not None:
        gr = _lookup_group(group, field + ".group")
        gid, gname = gr.gr_gid, gr.gr_name
    else:
        gid = pw.pw_gid
        try:
            gname = grp.getgrgid(gid).gr_name
        except KeyError:
            gname = str(gid)
    if supplementary is None:
        if user is None and pw.pw_uid == me.uid:
            groups = set(me.groups)
        else:
            groups = set(os.getgrouplist(pw.pw_name, pw.pw_gid))
        if group is not None:
            groups.add(gid)
    else:
        groups = set(_lookup_group(g, "%s.supplementary_groups[%d]" % (field, i)).gr_gid
                     for i, g in enumerate(supplementary))
    ident = Identity(pw.pw_name, pw.pw_uid, gname, gid, tuple(sorted(groups)))
    if me.uid != 0 and (ident.uid, ident.gid, set(ident.groups)) != (me.uid, me.gid, set(me.groups)):
        raise NetconfineError("probing as user %s (group %s, groups %s) needs root; the module runs as %s "
                              "(use become: true)" % (ident.user, ident.group, list(ident.groups), me.user),
                              field + (".user" if user is not None else ".group"))
    return ident


def build_probes(items, default_timeout):
    """Validated module params (``probes`` list) -> list of Probe. Raises NetconfineError naming the field."""
    probes = []
    for index, item in enumerate(items):
        field = "probes[%d]" % index
        protocol = item.get("protocol") or "tcp"
        port = item.get("port")
        if protocol in ("tcp", "udp"):
            if port is None:
                raise NetconfineError("a %s probe needs a port" % protocol, field + ".port")
            if not 1 <= port <= 65535:
                raise NetconfineError("must be 1-65535, got %d" % port, field + ".port")
        elif port is not None:
            raise NetconfineError("an icmp probe has no port", field + ".port")
        host = item.get("host")
        if not host or any(c.isspace() or ord(c) < 32 for c in host):
            raise NetconfineError("must be an address or a host name, got %r" % (host,), field + ".host")
        timeout = item.get("timeout")
        timeout = float(default_timeout if timeout is None else timeout)
        if not 0 < timeout <= 300:
            raise NetconfineError("must be more than 0 and at most 300 seconds, got %s" % timeout, field + ".timeout")
        if item.get("receive") and protocol != "tcp":
            raise NetconfineError("receive applies to tcp probes only (udp and icmp always wait for an answer)",
                                  field + ".receive")
        expect = item.get("expect")
        if expect is not None and expect not in EXPECTATIONS:
            raise NetconfineError("must be one of %s, got %r" % (", ".join(EXPECTATIONS), expect), field + ".expect")
        ident = build_identity(item.get("user"), item.get("group"), item.get("supplementary_groups"), field)
        selinux_type = item.get("selinux_type")
        if selinux_type is not None:
            if not _SELINUX_TYPE.match(selinux_type):
                raise NetconfineError("must be an SELinux type name (letters, digits, _), got %r" % (selinux_type,),
                                      field + ".selinux_type")
            if not os.path.exists(SELINUX_ENFORCE):
                raise NetconfineError("SELinux is not enabled on this host (no %s)" % SELINUX_ENFORCE,
                                      field + ".selinux_type")
        name = item.get("name") or default_name(ident, protocol, host, port, item.get("group"),
                                                item.get("supplementary_groups"), selinux_type)
        payload = (item.get("payload") or "netconfine probe\n").encode("utf-8")
        probes.append(Probe(index, name, ident, protocol, host, port, FAMILIES[item.get("family") or "any"],
                            timeout, bool(item.get("receive")), payload, expect, selinux_type))
    return probes


def default_name(ident, protocol, host, port, group=None, supplementary=None, selinux_type=None):
    """``nobody -> 127.0.0.1:992/tcp``, ``root -> [::1]/icmp``, ``alice (as noinet) -> ...``,
    ``bob (groups wheel) -> ...``, ``bob (no groups) -> ...``, ``root (in mozilla_t) -> ...``."""
    who = ident.user
    if group is not None:
        who += " (as %s)" % ident.group
    if supplementary is not None:
        who += " (groups %s)" % ",".join(str(g) for g in supplementary) if supplementary else " (no groups)"
    if selinux_type is not None:
        who += " (in %s)" % selinux_type
    where = "[%s]" % host if ":" in host else host
    return "%s -> %s%s/%s" % (who, where, ":%d" % port if port else "", protocol)


# --------------------------------------------------------------------------- one attempt (in the child)

def classify(exc):
    """OSError -> (outcome, text)."""
    if isinstance(exc, socket.timeout):
        return "timeout", "no answer within the timeout"
    return _ERRNO_OUTCOME.get(exc.errno, "unreachable"), os.strerror(exc.errno) if exc.errno else str(exc)


def _resolve(probe):
    kind = socket.SOCK_STREAM if probe.protocol == "tcp" else socket.SOCK_DGRAM
    infos = socket.getaddrinfo(probe.host, probe.port or 0, probe.family, kind)
    if not infos:
        raise socket.gaierror("no address")
    family, _kind, _proto, _canon, sockaddr = infos[0]
    return family, sockaddr


def _tcp(probe, family, sockaddr, deadline):
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(probe.timeout)
        sock.connect(sockaddr)
        if not probe.receive:
            return "connected", "", ""
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        data = sock.recv(512)
        if not data:
            return "reset", "the peer closed the connection without sending anything", ""
        return "connected", "", data.decode("utf-8", "replace")
    finally:
        sock.close()


def _send_datagram(sock, data):
    """Send; a REJECT on our own OUTPUT path fails the send (EPERM) *and* queues its ICMP error on the
    socket: report that as the refusal it is (ECONNREFUSED), a silent DROP as permission-denied."""
    try:
        sock.send(data)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EACCES):
            raise
        sock.settimeout(0.2)
        try:
            sock.recv(2048)
        except OSError as queued:
            if queued.errno is not None and queued.errno != exc.errno:
                raise queued
        raise exc


def _udp(probe, family, sockaddr, deadline):
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.settimeout(probe.timeout)
        sock.connect(sockaddr)
        _send_datagram(sock, probe.payload)
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        data = sock.recv(512)
        return "connected", "", data.decode("utf-8", "replace")
    finally:
        sock.close()


def _icmp_socket(family, sockaddr, probe, deadline):
    """Echo over an unprivileged ping socket (net.ipv4.ping_group_range). None where not permitted."""
    proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM, proto)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT):
            return None
        raise
    echo_request, echo_reply = (8, 0) if family == socket.AF_INET else (128, 129)
    try:
        sock.settimeout(probe.timeout)
        sock.connect(sockaddr[:1] + (0,) + tuple(sockaddr[2:]))
        # type, code, checksum (the kernel fills it and the identifier in), identifier, sequence
        _send_datagram(sock, struct.pack("!BBHHH", echo_request, 0, 0, 0, 1) + probe.payload)
        while True:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            data = sock.recv(2048)
            if data and data[0] == echo_reply:
                return "connected", "", ""
    finally:
        sock.close()


def _ping_binary():
    for directory in PING_PATH:
        path = os.path.join(directory, "ping")
        if os.access(path, os.X_OK):
            return path
    return None


def ping_outcome(returncode, output):
    """What iputils ping(8) printed for one echo -> (outcome, text).

    A REJECT on the sender's OUTPUT path makes ping print both the ICMP error it got back
    ("Destination Port Unreachable") and "sendmsg: Operation not permitted": the ICMP error decides.
    A DROP there makes no error at all for ping's raw socket: one echo, no reply, exit status 1.
    """
    lines = [line.strip() for line in output.splitlines()
             if line.strip() and not line.startswith(("PING ", "---", "rtt ")) and "packets transmitted" not in line]
    text = "; ".join(lines)
    lower = text.lower()
    if returncode == 0:
        return "connected", ""
    if "port unreachable" in lower or "protocol unreachable" in lower:
        return "refused", text
    if "unreachable" in lower or "prohibited" in lower:
        return "unreachable", text
    if "not permitted" in lower or "permission denied" in lower:
        return "permission-denied", text
    if returncode == 1:
        return "timeout", text or "no echo reply within the timeout"
    return None, text


def _icmp(probe, family, sockaddr, deadline):
    outcome = _icmp_socket(family, sockaddr, probe, deadline)
    if outcome is not None:
        return outcome
    ping = _ping_binary()
    if ping is None:
        raise RuntimeError("icmp probes need ping sockets (sysctl net.ipv4.ping_group_range) or ping(8); "
                           "neither is available")
    wait = max(1, int(math.ceil(probe.timeout)))
    argv = [ping, "-4" if family == socket.AF_INET else "-6", "-n", "-c", "1", "-W", str(wait), sockaddr[0]]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"}, timeout=wait + GRACE / 2, check=False)
    outcome, text = ping_outcome(proc.returncode, proc.stdout.decode("utf-8", "replace"))
    if outcome is None:
        raise RuntimeError("ping exited %d: %s" % (proc.returncode, text))
    return outcome, text, ""


ATTEMPTS = {"tcp": _tcp, "udp": _udp, "icmp": _icmp}


def attempt(probe):
    """Try once, as the current process's identity. -> dict(outcome, error, address, received)."""
    start = time.monotonic()
    deadline = start + probe.timeout
    address = ""
    try:
        family, sockaddr = _resolve(probe)
        address = sockaddr[0]
    except socket.gaierror as exc:
        return {"outcome": "unreachable", "error": "cannot resolve %s: %s" % (probe.host, exc),
                "address": "", "received": ""}
    try:
        outcome, error, received = ATTEMPTS[probe.protocol](probe, family, sockaddr, deadline)
    except (socket.timeout, OSError) as exc:
        outcome, error = classify(exc)
        received = ""
    return {"outcome": outcome, "error": error, "address": address, "received": received}


def become(ident):
    """Drop this process to ``ident`` for good: supplementary groups, then gid, then uid."""
    if os.geteuid() == ident.uid and os.getegid() == ident.gid and set(os.getgroups()) == set(ident.groups):
        return
    os.setgroups(list(ident.groups))
    os.setresgid(ident.gid, ident.gid, ident.gid)
    os.setresuid(ident.uid, ident.uid, ident.uid)


def enter_selinux_type(selinux_type):
    """Switch this process (a forked, single-threaded child) to ``selinux_type``, keeping the user, role and
    level of its SELinux context: what setcon(3) does. The policy must allow the current domain
    ``process dyntransition`` to it (and itself ``setcurrent``); otherwise this raises the kernel's error."""
    with open(SELINUX_CURRENT, "rb") as attr:
        parts = attr.read().decode("ascii", "replace").rstrip("\0\n").split(":")
    if len(parts) < 3:
        raise OSError(errno.EINVAL, "unexpected SELinux context %r" % ":".join(parts))
    parts[2] = selinux_type
    fd = os.open(SELINUX_CURRENT, os.O_WRONLY)      # a fresh open: the kernel takes a write at offset 0 only
    try:
        os.write(fd, ":".join(parts).encode("ascii"))
    except OSError as exc:
        raise OSError(exc.errno, "cannot enter the SELinux type %s (from %s): %s; the policy must allow "
                      "process dyntransition to it" % (selinux_type, ":".join(parts[:2]), os.strerror(exc.errno)))
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- running many (in the module)

def _child(probe, write_fd):
    """In the forked child: become the probe's identity, attempt, write one JSON line, exit."""
    code = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        become(probe.identity)
        if probe.selinux_type is not None:
            enter_selinux_type(probe.selinux_type)
        result = attempt(probe)
    except Exception as exc:  # reported, never raised: the child must not return into the module
        result = {"failed": True, "error": "%s: %s" % (type(exc).__name__, exc)}
        code = 1
    try:
        os.write(write_fd, json.dumps(result).encode("utf-8"))
    finally:
        os._exit(code)  # no atexit handlers: they belong to the parent (Ansible's temp dirs)


def _start(probe):
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_fd)
        _child(probe, write_fd)
    os.close(write_fd)
    return pid, read_fd, time.monotonic()


def _finish(probe, pid, read_fd, started, data, killed):
    os.close(read_fd)
    os.waitpid(pid, 0)
    elapsed = round(time.monotonic() - started, 3)
    if killed:
        result = {"outcome": "timeout", "error": "the probe did not finish within %.1f s" % (probe.timeout + GRACE),
                  "address": "", "received": ""}
    else:
        try:
            result = json.loads(data.decode("utf-8")) if data else {"failed": True, "error": "the probe died"}
        except ValueError:
            result = {"failed": True, "error": "unreadable probe result: %r" % data[:200]}
    return describe(probe, result, elapsed)


def describe(probe, result, elapsed):
    """A probe and its raw result -> the dict the module returns for it."""
    ident = probe.identity
    out = {
        "name": probe.name, "user": ident.user, "uid": ident.uid, "group": ident.group, "gid": ident.gid,
        "groups": list(ident.groups), "protocol": probe.protocol, "host": probe.host, "port": probe.port,
        "address": result.get("address", ""), "outcome": result.get("outcome"),
        "allowed": result.get("outcome") == "connected", "error": result.get("error", ""),
        "elapsed": elapsed, "expect": probe.expect, "failed": bool(result.get("failed")),
    }
    if result.get("received"):
        out["received"] = result["received"][:200]
    if probe.selinux_type is not None:
        out["selinux_type"] = probe.selinux_type
    out["as_expected"] = None if probe.expect is None or out["failed"] else matches(probe.expect, out["outcome"])
    return out


def matches(expect, outcome):
    """``allowed`` = connected; ``denied`` = anything else; an outcome name = exactly that outcome."""
    if expect == "allowed":
        return outcome == "connected"
    if expect == "denied":
        return outcome != "connected"
    return outcome == expect


def run_probes(probes, concurrency=16):
    """Run every probe in a child of its own, at most ``concurrency`` at a time. -> results in probe order."""
    pending = list(probes)
    running = {}  # read_fd -> [probe, pid, started, bytearray]
    results = {}
    while pending or running:
        while pending and len(running) < concurrency:
            probe = pending.pop(0)
            pid, read_fd, started = _start(probe)
            running[read_fd] = [probe, pid, started, bytearray()]
        now = time.monotonic()
        wait = min(entry[0].timeout + GRACE - (now - entry[2]) for entry in running.values())
        ready = select.select(list(running), [], [], max(0.0, wait))[0]
        for read_fd in ready:
            entry = running[read_fd]
            chunk = os.read(read_fd, 65536)
            if chunk:
                entry[3].extend(chunk)
                continue
            del running[read_fd]
            results[entry[0].index] = _finish(entry[0], entry[1], read_fd, entry[2], bytes(entry[3]), False)
        now = time.monotonic()
        for read_fd, entry in list(running.items()):
            if now - entry[2] > entry[0].timeout + GRACE:
                try:
                    os.kill(entry[1], signal.SIGKILL)
                except OSError:
                    pass
                del running[read_fd]
                results[entry[0].index] = _finish(entry[0], entry[1], read_fd, entry[2], b"", True)
    return [results[p.index] for p in probes]


def summarise(results):
    """-> (counts per outcome, number of probes whose outcome differs from expect)."""
    counts = dict((o, 0) for o in OUTCOMES)
    for res in results:
        if res["outcome"] in counts:
            counts[res["outcome"]] += 1
    return counts, sum(1 for res in results if res["as_expected"] is False)
