"""Fixture layer for the integration tier: real namespaces, users, sockets and ansible-playbook runs.

Everything a test creates is named ``nct`` + this process's session id + a random suffix
(namespaces ``nct-SSSS-RRRR``, users and groups ``nct_SSSS_RRRR``) and is removed by the
context manager that created it, even when the test fails. A process holds a lock on
``/run/nct-sessions/SSSS`` while it lives; :func:`sweep` removes leftovers of sessions
whose lock is no longer held (a killed run) and never touches a live session's objects,
the lab (``nclab-``) or Molecule (``nctmol-``).

Nothing here touches the real host's firewall: every netfilter command runs inside a namespace.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import grp
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Iterator

import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"
CALLBACK_DIR = Path(__file__).resolve().parent / "callback_plugins"
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by unprivileged users, unlike a Python under /root
NETNS_DIR = Path("/run/netns")
SESSION_DIR = Path("/run/nct-sessions")
NAME_RE = re.compile(r"^nct[-_]([0-9a-f]{4})[-_][0-9a-f]{4}$")
# namespaces that must be short (netns_service: at most 12 characters): ``nc`` + session + 4 hex
SHORT_NAME_RE = re.compile(r"^nc([0-9a-f]{4})[0-9a-f]{4}$")
ETC_NETNS = Path("/etc/netns")

_session: tuple[str, object] | None = None  # (id, open lock file) for this process


PERSIST_DIR = Path("/etc/netconfine")


# --------------------------------------------------------------------------- naming and sweeping

def session_id() -> str:
    """This process's session id; the first call takes the session lock."""
    global _session
    if _session is None:
        SESSION_DIR.mkdir(parents=True, exist_ok=True)
        # the lock file appears under its name already locked (made aside, locked, then linked): another
        # session's sweep never sees it unlocked, which would make this session look dead to it
        while True:
            sid = secrets.token_hex(2)
            aside = SESSION_DIR / (".new-%s-%d" % (sid, os.getpid()))
            lock = open(aside, "a+")  # noqa: SIM115 - held for the life of the process
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                os.link(aside, SESSION_DIR / sid)
            except OSError:          # the id is taken (or a sweep removed the file aside): another id
                lock.close()
                continue
            finally:
                aside.unlink(missing_ok=True)
            _session = (sid, lock)
            break
    return _session[0]


def new_short_name() -> str:
    """A fresh short namespace name ``ncSSSSRRRR`` (10 characters), swept like ``nct-`` names."""
    return "nc" + session_id() + secrets.token_hex(2)


def new_name(sep: str = "-") -> str:
    """A fresh test object name: ``nct-SSSS-RRRR`` (sep='-') or ``nct_SSSS_RRRR`` (sep='_')."""
    return sep.join(("nct", session_id(), secrets.token_hex(2)))


def _session_alive(sid: str) -> bool:
    if _session is not None and sid == _session[0]:
        return True
    try:
        with open(SESSION_DIR / sid) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True
    (SESSION_DIR / sid).unlink(missing_ok=True)
    return False


def sweep(own: bool = False) -> list[str]:
    """Remove ``nct`` objects of dead sessions (and of this one if ``own``). Returns what was removed."""
    def doomed(name: str) -> bool:
        m = NAME_RE.match(name) or SHORT_NAME_RE.match(name)
        if not m:
            return False
        mine = _session is not None and m.group(1) == _session[0]
        return own if mine else not _session_alive(m.group(1))

    removed = []
    for ns in sorted(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else []:
        if doomed(ns):
            _delete_netns(ns)
            removed.append(f"netns {ns}")
    persisted = PERSIST_DIR / "netns"
    for ns in sorted(os.listdir(persisted)) if persisted.is_dir() else []:
        if doomed(ns):      # its namespace may be gone already (a killed run)
            shutil.rmtree(persisted / ns, ignore_errors=True)
            removed.append(f"persisted state of netns {ns}")
    for ns in sorted(os.listdir(ETC_NETNS)) if ETC_NETNS.is_dir() else []:
        if doomed(ns):
            subprocess.run(["rm", "-rf", "--", str(ETC_NETNS / ns)], check=False)
            removed.append(f"{ETC_NETNS / ns}")
    for user in sorted(u.pw_name for u in pwd.getpwall()):
        if doomed(user):
            _delete_user(user)
            removed.append(f"user {user}")
    for group in sorted(g.gr_name for g in grp.getgrall()):
        if doomed(group):
            account("groupdel", group, check=False)
            removed.append(f"group {group}")
    for sid in os.listdir(SESSION_DIR) if SESSION_DIR.is_dir() else []:
        if not sid.startswith(".new-"):
            _session_alive(sid)  # removes the lock files of dead sessions
    return removed


def _idle_persist_dir() -> bool:
    """Whether /etc/netconfine holds nothing but what namespace runs leave: the restore and boot scripts, empty netns/."""
    if not PERSIST_DIR.is_dir():
        return False
    names = set(os.listdir(PERSIST_DIR))
    netns_dir = PERSIST_DIR / "netns"
    return (names <= {"netconfine-restore", "netconfine-boot", "netns"}
            and (not netns_dir.is_dir() or not os.listdir(netns_dir)))


def end_session() -> list[str]:
    """Remove everything this session left behind and release its lock."""
    global _session
    removed = sweep(own=True)
    if _idle_persist_dir():
        shutil.rmtree(PERSIST_DIR, ignore_errors=True)
        removed.append(f"dir {PERSIST_DIR} (only the restore script of the namespaces' runs was left)")
    if _session is not None:
        (SESSION_DIR / _session[0]).unlink(missing_ok=True)
        _session[1].close()
        _session = None
    return removed


# --------------------------------------------------------------------------- commands

def run(*argv: str, ns: str | None = None, check: bool = True, timeout: float = 60,
        input: str | None = None) -> subprocess.CompletedProcess:
    """Run argv (inside namespace ``ns`` if given); text output; raise with stderr on failure if ``check``."""
    if ns is not None:
        argv = ("ip", "netns", "exec", ns, *argv)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> rc {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc


ACCOUNTS_LOCK = "/run/nct-accounts.lock"


def account(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """useradd/groupadd/userdel/groupdel, serialised across test workers.

    shadow-utils refuses ("cannot lock /etc/passwd", exit 10) instead of waiting when another
    process holds its lock, which parallel workers do; take our own lock first and retry briefly.
    """
    with open(ACCOUNTS_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for _attempt in range(20):
            result = run(*argv, check=False)
            if result.returncode != 10:
                break
            time.sleep(0.25)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> rc {result.returncode}\n{result.stdout}{result.stderr}")
    return result


def iptables_save(ns: str, family: int = 4, table: str | None = None) -> str:
    """``iptables-save`` (family 4) or ``ip6tables-save`` (6) inside ``ns``, without comment lines."""
    argv = ["iptables-save" if family == 4 else "ip6tables-save"]
    if table:
        argv += ["-t", table]
    out = run(*argv, ns=ns).stdout
    return "".join(line for line in out.splitlines(keepends=True) if not line.startswith("#"))


def nft_json(ns: str) -> dict:
    """``nft -j list ruleset`` inside ``ns``, parsed."""
    return json.loads(run("nft", "-j", "list", "ruleset", ns=ns).stdout)


# --------------------------------------------------------------------------- one kernel read for both backends

BACKENDS = ("iptables", "nftables")
OUR_TABLE = ("inet", "netconfine")
XTABLES_TABLES = {"filter", "nat", "mangle", "raw", "security"}   # what iptables-nft makes in families ip / ip6
_CHAIN_COUNTERS = re.compile(r" \[\d+:\d+\]$", re.M)
_OURS_IPTABLES = re.compile(r"^(:NC-|-A NC-)|-[jg] NC-|netconfine:")


def _without_counters(value):
    if isinstance(value, dict):
        return {k: (None if k == "counter" else _without_counters(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_counters(v) for v in value]
    return value


def _nft_items(ns: str) -> list[tuple[tuple[str, str], str]]:
    """(family, table) and the canonical JSON of every item of ``nft -j list ruleset`` (counters blanked)."""
    out = []
    for item in nft_json(ns)["nftables"]:
        (kind, body), = item.items()
        if kind == "metainfo":
            continue
        key = (body.get("family"), body.get("table", body.get("name")))
        out.append((key, json.dumps(_without_counters(item), sort_keys=True)))
    return out


def uml_kernel() -> dict[str, str]:
    """The User-Mode-Linux kernel that runs user space on this machine (scripts/uml-kernel).

    Keys LINUX_UML (the binary), UML_MODULES (its modules/VER directory), UML_MODROOT (D with
    D/lib/modules/VER, for ``modprobe -d``), UML_VERSION. Raises RuntimeError with the script's reason
    when there is none: the UML tiers fail with it, they never skip.
    """
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "uml-kernel")], capture_output=True, text=True,
                          check=False, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError("no User-Mode-Linux kernel can run here: %s" % (proc.stderr.strip() or proc.stdout))
    return dict(line.split("=", 1) for line in proc.stdout.split())


def kernel_rules(ns: str, backend: str, ours: bool | None = None) -> list[str]:
    """What the kernel holds in ``ns``, as the ``backend``'s own tool reads it, one string per line or item.

    ``iptables``: ``iptables-save`` then ``ip6tables-save`` (every table, chain counters blanked), plus the
    native nftables tables beside iptables-nft's; ``nftables``: every item of ``nft -j list ruleset``
    (counters blanked). ``ours``: None = everything, True = only what netconfine owns (NC- chains, their jumps,
    the netconfine: tags; the table inet netconfine), False = everything else (what must stay untouched).
    Comparing two reads tells whether anything changed; traffic does not (counters are not compared).
    """
    lines: list[tuple[bool, str]] = []
    if backend == "iptables":
        for family in (4, 6):
            for line in _CHAIN_COUNTERS.sub("", iptables_save(ns, family)).splitlines():
                lines.append((bool(_OURS_IPTABLES.search(line)), "%d %s" % (family, line)))
        lines += [(False, text) for (fam, table), text in _nft_items(ns)
                  if not (fam in ("ip", "ip6") and table in XTABLES_TABLES)]
    elif backend == "nftables":
        lines += [(key == OUR_TABLE, text) for key, text in _nft_items(ns)]
    else:
        raise ValueError(backend)
    return [text for mine, text in lines if ours is None or mine == ours]


# --------------------------------------------------------------------------- other tools' rules

# What Docker, kube-proxy and fail2ban leave in iptables(-nft), as iptables-restore input per family.
FOREIGN_XTABLES = {4: """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-SERVICES - [0:0]
:f2b-sshd - [0:0]
-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd
-A INPUT -j KUBE-FIREWALL
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -j KUBE-FIREWALL
-A DOCKER -d 198.51.100.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" \
-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A f2b-sshd -s 203.0.113.7/32 -j REJECT --reject-with icmp-port-unreachable
-A f2b-sshd -j RETURN
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 198.51.100.0/24 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 198.51.100.2:80
COMMIT
""".replace("\\\n", ""), 6: """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER-USER - [0:0]
:f2b-sshd - [0:0]
-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd
-A FORWARD -j DOCKER-USER
-A OUTPUT -d fd00:5::/64 -j DOCKER-USER
-A DOCKER-USER -j RETURN
-A f2b-sshd -s fd00:bad::7/128 -j REJECT --reject-with icmp6-port-unreachable
-A f2b-sshd -j RETURN
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A OUTPUT -j DOCKER
-A POSTROUTING -s fd00:5::/64 ! -o docker0 -j MASQUERADE
COMMIT
"""}


def load_foreign_xtables(ns: str) -> None:
    """Other tools' iptables rules (:data:`FOREIGN_XTABLES`) loaded beside whatever ``ns`` holds."""
    for family in (4, 6):
        run("iptables-restore" if family == 4 else "ip6tables-restore", "--noflush", ns=ns,
            input=FOREIGN_XTABLES[family])


def make_native_tables(ns: str) -> None:
    """A Docker-like and a firewalld-like native nftables table, at the output hook beside ours."""
    run("nft", "-f", "-", ns=ns, input=textwrap.dedent("""
        table ip dockerlike {
            set published { type inet_service; elements = { 8080, 8443 } }
            chain out { type filter hook output priority filter + 10; policy accept;
                oifname "docker0" tcp dport @published counter accept
            }
        }
        table inet firewalldlike {
            chain filter_OUTPUT { type filter hook output priority filter + 10; policy accept;
                ct state established,related accept
                meta l4proto ipv6-icmp accept
            }
        }
    """))


def make_foreign_rules(ns: str) -> None:
    """Other tools' rules: iptables-nft's (filter, nat) and :func:`make_native_tables`."""
    run("iptables", "-A", "OUTPUT", "-p", "tcp", "--dport", "5555", "-m", "comment", "--comment", "keep me",
        "-j", "ACCEPT", ns=ns)
    run("ip6tables", "-A", "OUTPUT", "-p", "udp", "--dport", "5556", "-j", "DROP", ns=ns)
    run("iptables", "-t", "nat", "-N", "DOCKER", ns=ns)
    run("iptables", "-t", "nat", "-A", "OUTPUT", "-d", "198.51.100.0/24", "-j", "DOCKER", ns=ns)
    make_native_tables(ns)


# --------------------------------------------------------------------------- namespaces, users, groups

def _delete_netns(name: str) -> None:
    pids = run("ip", "netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    run("ip", "netns", "del", name, check=False)
    # what modules persisted for this namespace (persist: true, default persist_dir)
    shutil.rmtree(PERSIST_DIR / "netns" / name, ignore_errors=True)


def reboot(ns: str) -> None:
    """Lose everything the kernel held for ``ns``, as a reboot does; keep its name (and so its files).

    Its veth pairs are deleted first, by their end in ``ns``: ``ip netns del`` leaves them to the kernel's
    asynchronous namespace teardown, so a peer in another namespace (a guest's eth0) could still exist
    when the host's network setup makes the pair again ("RTNETLINK answers: File exists").
    """
    for link in json.loads(run("ip", "-j", "link", "show", "type", "veth", ns=ns).stdout or "[]"):
        run("ip", "-n", ns, "link", "delete", link["ifname"])
    run("ip", "netns", "del", ns)
    run("ip", "netns", "add", ns)
    run("ip", "link", "set", "lo", "up", ns=ns)


@contextlib.contextmanager
def netns(name: str | None = None) -> Iterator[str]:
    """A new network namespace with ``lo`` up; killed processes and deleted on exit."""
    name = name or new_name("-")
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        _delete_netns(name)


@contextlib.contextmanager
def local_group(name: str | None = None) -> Iterator[str]:
    """A new local group; deleted on exit."""
    name = name or new_name("_")
    account("groupadd", name)
    try:
        yield name
    finally:
        account("groupdel", name, check=False)


def _delete_user(name: str) -> None:
    uid = pwd.getpwnam(name).pw_uid
    for pid in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == uid:
                os.kill(int(pid), signal.SIGKILL)
    account("userdel", "-r", name, check=False)  # also removes its user-private group


@contextlib.contextmanager
def local_user(group: str | None = None, groups: tuple[str, ...] | list[str] = (),
               name: str | None = None) -> Iterator[str]:
    """A new local user (home, shell /bin/sh) with optional primary ``group`` and supplementary ``groups``."""
    name = name or new_name("_")
    argv = ["useradd", "--create-home", "--shell", "/bin/sh"]
    if group:
        argv += ["--gid", group]
    if groups:
        argv += ["--groups", ",".join(groups)]
    account(*argv, name)
    try:
        yield name
    finally:
        _delete_user(name)


def user_file(user: str, text: str, name: str = "daemon.py") -> tuple[pwd.struct_passwd, Path]:
    """``text`` written to ``name`` in ``user``'s home (removed with the user), owned by the user:
    (the user's passwd entry, the path). For a daemon script the user runs."""
    entry = pwd.getpwnam(user)
    path = Path(entry.pw_dir) / name
    path.write_text(text)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return entry, path


# --------------------------------------------------------------------------- sockets

_LISTENER = textwrap.dedent("""
    import select, socket, sys
    port = int(sys.argv[1])
    socks = []
    for addr in sys.argv[2:]:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((addr, port))
        s.listen(64)
        socks.append(s)
    print("ready", flush=True)
    while True:
        for s in select.select(socks, [], [])[0]:
            s.accept()[0].close()
""")


@contextlib.contextmanager
def daemon(ns: str, *argv: str, ready: str | None = None, interactive: bool = False) -> Iterator[subprocess.Popen]:
    """Run argv inside ``ns`` in its own session; optionally wait for a line ``ready``; killed on exit."""
    proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv],
                            stdin=subprocess.PIPE if interactive else subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        if ready is not None:
            line = proc.stdout.readline()
            if line.strip() != ready:
                raise RuntimeError(f"{argv[0]} in {ns} did not start: {line}{proc.stdout.read()}")
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        if proc.stdin:
            proc.stdin.close()


LOOPBACKS = ("127.0.0.1", "::1")
ALL_ADDRESSES = ("0.0.0.0", "::")  # what stunnel -c -d PORT binds: every address of both families


@contextlib.contextmanager
def tcp_listener(ns: str, port: int, addresses: tuple[str, ...] = LOOPBACKS) -> Iterator[int]:
    """Accept (and close) TCP connections on each of ``addresses`` (default 127.0.0.1 and ::1), PORT, inside
    ``ns``; killed on exit. ``ALL_ADDRESSES`` listens on 0.0.0.0 and [::] (IPv6 socket v6-only)."""
    with daemon(ns, SYSTEM_PYTHON, "-c", _LISTENER, str(port), *addresses, ready="ready"):
        yield port


_CONNECT = textwrap.dedent("""
    import errno, socket, sys
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
        print("connected")
    except socket.timeout:
        print("timeout")
    except OSError as e:
        print({errno.ECONNREFUSED: "refused", errno.EPERM: "denied", errno.EACCES: "denied",
               errno.EHOSTUNREACH: "unreachable", errno.ENETUNREACH: "unreachable"}.get(e.errno, repr(e)))
""")
OUTCOMES = ("connected", "refused", "timeout", "denied", "unreachable")


def try_connect(ns: str, user: str, host: str, port: int, group: str | None = None, timeout: float = 2.0) -> str:
    """Connect as ``user`` (running as group ``group`` if given) from inside ``ns``.

    Enters the namespace as root, then drops to the user with runuser (the other order is
    not permitted). Note ``runuser -g`` drops the user's supplementary groups.
    Returns one of OUTCOMES: connected, refused (RST or REJECT with tcp-reset), timeout (SYN
    dropped, also on OUTPUT), denied (EPERM/EACCES), unreachable (no route or ICMP unreachable).
    """
    drop = ["runuser", "-u", user] + (["-g", group] if group else []) + ["--"]
    proc = run(*drop, SYSTEM_PYTHON, "-c", _CONNECT, host, str(port), str(timeout), ns=ns, check=False,
               timeout=timeout + 30)
    outcome = proc.stdout.strip()
    if outcome not in OUTCOMES:
        raise RuntimeError(f"connect as {user} to {host}:{port} in {ns} failed to run: {outcome}{proc.stderr}")
    return outcome


def connect_as(ns: str, user: str, host: str, port: int, group: str | None = None, timeout: float = 2.0) -> bool:
    """True if ``user`` (as ``group``) can open a TCP connection to host:port from inside ``ns``."""
    return try_connect(ns, user, host, port, group, timeout) == "connected"


# --------------------------------------------------------------------------- ansible-playbook

@dataclasses.dataclass
class TaskResult:
    host: str
    task: str
    action: str
    status: str  # ok, changed, failed, skipped, unreachable
    result: dict

    @property
    def changed(self) -> bool:
        return bool(self.result.get("changed"))

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "unreachable")

    @property
    def msg(self) -> str:
        return str(self.result.get("msg", ""))


@dataclasses.dataclass
class PlaybookRun:
    rc: int
    output: str  # command line, stdout and stderr (default callback): use it as the assertion message
    results: dict[str, list[TaskResult]]  # host -> task results in order
    stats: dict[str, dict]  # host -> {ok, changed, failures, unreachable, skipped, ...}

    def task(self, host: str, name: str) -> TaskResult:
        """The (last) result of task ``name`` on ``host``."""
        for res in reversed(self.results.get(host, [])):
            if res.task == name:
                return res
        seen = [r.task for r in self.results.get(host, [])]
        raise KeyError(f"no result for task {name!r} on {host!r}; tasks seen: {seen}\n{self.output}")


def inventory(hosts: list[str] | dict[str, dict]) -> dict:
    """Inventory with every host on the netns connection (system Python, pipelining).

    ``hosts`` is a list of namespace names, or a mapping host -> host vars (e.g. ``ansible_netns``).
    """
    if not isinstance(hosts, dict):
        hosts = {h: {} for h in hosts}
    return {"all": {
        "vars": {"ansible_connection": "paranoid.netconfine.netns",
                 "ansible_python_interpreter": SYSTEM_PYTHON,
                 "ansible_pipelining": True},
        "hosts": {h: dict(v or {}) for h, v in hosts.items()},
    }}


def ansible_playbook(playbook: str | Path, hosts: list[str] | dict[str, dict], extra_vars: dict | None = None,
                     check: bool = False, diff: bool = False, forks: int = 5, timeout: float = 600,
                     args: tuple[str, ...] = (), netns: str | None = None) -> PlaybookRun:
    """Run ``playbook`` (YAML text or a path) with .venv's ansible-playbook against namespace hosts.

    ``netns``: run the controller itself inside that namespace (e.g. to reach a host over SSH there).
    """
    with tempfile.TemporaryDirectory(prefix="nct-play-") as tmp:
        tmp = Path(tmp)
        if isinstance(playbook, Path) or "\n" not in playbook:
            playbook_path = Path(playbook).resolve()
        else:
            playbook_path = tmp / "playbook.yml"
            playbook_path.write_text(textwrap.dedent(playbook))
        (tmp / "inventory.yml").write_text(yaml.safe_dump(inventory(hosts)))
        (tmp / "extra_vars.json").write_text(json.dumps(extra_vars or {}))
        results_file = tmp / "results.jsonl"
        argv = [*(["ip", "netns", "exec", netns] if netns else []),
                str(ANSIBLE_PLAYBOOK), "-i", str(tmp / "inventory.yml"), "-e", f"@{tmp / 'extra_vars.json'}",
                "--forks", str(forks), *(["--check"] if check else []), *(["--diff"] if diff else []),
                *args, str(playbook_path)]
        env = dict(os.environ,
                   ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
                   ANSIBLE_CALLBACK_PLUGINS=str(CALLBACK_DIR),
                   ANSIBLE_CALLBACKS_ENABLED="nct_results",
                   NCT_RESULTS_FILE=str(results_file),
                   ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_DEPRECATION_WARNINGS="0")
        start = time.monotonic()
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
        output = f"$ {' '.join(argv)}  # {time.monotonic() - start:.1f}s\n{proc.stdout}{proc.stderr}"
        results: dict[str, list[TaskResult]] = {}
        stats: dict[str, dict] = {}
        for line in results_file.read_text().splitlines() if results_file.exists() else []:
            rec = json.loads(line)
            if rec.get("stats"):
                stats = rec["stats"]
            else:
                results.setdefault(rec["host"], []).append(TaskResult(**rec))
        return PlaybookRun(proc.returncode, output, results, stats)


def nft_tables(ns: str) -> set[str]:
    """The nf_tables tables in namespace ``ns``, as "family name" (iptables-nft's and ebtables-nft's too)."""
    listed = json.loads(run("nft", "-j", "list", "tables", ns=ns).stdout)["nftables"]
    return {"%s %s" % (i["table"]["family"], i["table"]["name"]) for i in listed if "table" in i}


def boot_restore(persist_dir, ns: str) -> None:
    """Run what netconfine-restore.service runs at boot (the script the modules wrote under ``persist_dir``)
    for namespace ``ns``; it must succeed."""
    restore = subprocess.run(["sh", str(Path(persist_dir) / "netconfine-restore"), ns], capture_output=True,
                             text=True, check=False)
    assert restore.returncode == 0, restore.stderr
