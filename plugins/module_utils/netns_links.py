# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Named network namespaces and their links (``netns_model.Netns`` resources), behind the engine's seam.

Private to the paranoid.netconfine collection. A *state* for
``engine.converge(..., states=[NetnsLinks(...)])``: one unit per namespace
(``netns NAME``). ``read`` asks ``ip -j`` (iproute2's JSON) for the namespace
(exact name in ``ip -j netns list``), its loopback, the veth pair (host side in
the namespace the module runs in, peer inside NAME, paired by ``link_index``),
their global addresses, NAME's default routes, and reads
``/etc/netns/NAME/resolv.conf`` (what ``ip netns exec`` bind-mounts on
``/etc/resolv.conf``). What the task owns is a set of *facts*; ``script`` turns
the facts that differ into ``ip`` commands (one line each, shell syntax) and
``apply`` runs them. Only what differs is changed; ``state: absent`` deletes
the veth pair, the namespace and the resolv.conf.

The pair is deleted by its host end (``ip link delete vh-NAME``), before the
namespace: that is synchronous (both ends are gone when ``ip`` returns).
``ip netns delete`` only unmounts the name; the kernel tears the namespace
down, and with it the peer end and so the pair, later, in a work queue (and
never while a process still runs in it), so a read-back right after it could
still find the host end up and addressed.

The name under ``/run/netns`` is a bind mount: made in a mount namespace that
is a slave of another (``ip netns exec`` gives every command one), it vanishes
when the command exits. ``read`` refuses that case instead of "succeeding"
once.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import json
import os
import re
import shlex
from dataclasses import dataclass
from typing import Tuple

from ansible_collections.paranoid.netconfine.plugins.module_utils import netns_model, sysctl_state
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError

NETNS_DIR = "/run/netns"
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_./:@=+-]+\Z")
ETC_NETNS = "/etc/netns"
MOUNTINFO = "/proc/self/mountinfo"
# facts in the order they are created (and, reversed, removed)
ORDER = ("netns", "lo", "veth", "up", "addr", "route", "dns")
WRITE_RESOLV = "write-resolv.conf"
REMOVE_RESOLV = "remove-resolv.conf"


@dataclass(frozen=True)
class Links:
    """What one namespace holds of the task: facts (tuples, see ``_facts``) in creation order."""
    facts: Tuple[tuple, ...] = ()

    def lines(self):
        return [_fact_text(f) for f in self.facts]


def _fact_text(fact):
    kind = fact[0]
    if kind == "netns":
        return "netns %s" % fact[1]
    if kind == "lo":
        return "%s: lo up" % fact[1]
    if kind == "veth":
        return "%s: veth, peer %s in netns %s" % (fact[1], fact[3], fact[2])
    if kind in ("up", "addr"):
        where = "%s/%s" % (fact[1], fact[2]) if fact[1] else fact[2]
        return "%s: up" % where if kind == "up" else "%s: address %s" % (where, fact[3])
    if kind == "route":
        return "%s: default via %s dev %s" % (fact[1], fact[3], fact[2])
    return "%s/%s/resolv.conf: %s" % (ETC_NETNS, fact[1], ", ".join("nameserver %s" % s for s in fact[2]))


def _sorted(facts):
    return tuple(sorted(set(facts), key=lambda f: (ORDER.index(f[0]), f)))


def declared(policy):
    """{unit: netns_model.Netns} of the policy's namespaces."""
    return dict((item.name, item) for item in policy.resources if isinstance(item, netns_model.Netns))


def desired_facts(ns):
    facts = [("netns", ns.name), ("lo", ns.name)]
    if ns.host_link:
        facts += [("veth", ns.host_link, ns.name, ns.peer_link),
                  ("up", "", ns.host_link), ("up", ns.name, ns.peer_link)]
        facts += [("addr", "", ns.host_link, a) for a in ns.host_addresses]
        facts += [("addr", ns.name, ns.peer_link, a) for a in ns.peer_addresses]
        facts += [("route", ns.name, ns.peer_link, g) for g in ns.gateways]
    if ns.dns:
        facts.append(("dns", ns.name, tuple(ns.dns)))
    return _sorted(facts)


def boot_commands(ns):
    """argv lists that build ``ns`` in an empty host, in order (namespace, lo, veth, up, addresses, routes).

    The same commands ``script`` writes for a missing namespace; what a boot unit runs
    (``systemd_units``). resolv.conf is a file under /etc and survives a reboot by itself.
    """
    return [NetnsLinks._create(f) for f in desired_facts(ns) if f[0] != "dns"]


def shell_word(arg):
    """``arg`` as one word of a boot command line (a systemd unit's or the boot hook's), or an error."""
    if not _SAFE_WORD.match(arg):
        raise NetconfineError("%r cannot be written into a boot unit" % (arg,), "name")
    return arg


def link_sysctls(policy):
    """{namespace: ((key, value), ...)}: sysctls of the host side of each namespace's veth
    (``net/ipv4/conf/vh-NAME/route_localnet``). They can only be set once the veth exists, so the boot
    restore of sysctls leaves them out (``sysctl_state.boot_script``) and whoever builds the namespace
    at boot sets them."""
    return dict((n.name, tuple(sorted((i.key, i.value) for i in policy.resources
                                      if isinstance(i, sysctl_state.Sysctl) and n.host_link and i.link == n.host_link)))
                for n in declared(policy).values())


def boot_lines(ns, ip, sysctls=()):
    """Shell command lines that build ``ns`` at boot and set its veth's ``sysctls`` (``link_sysctls``)."""
    lines = [" ".join(shell_word(w) for w in [ip] + argv[1:]) for argv in boot_commands(ns)]
    return lines + ["echo %s > /proc/sys/%s" % (shell_word(value), shell_word(key)) for key, value in sysctls]


def _global_addresses(link):
    return ["%s/%d" % (_canonical(a["local"]), a["prefixlen"]) for a in link.get("addr_info", [])
            if a.get("scope") == "global" and "local" in a]


def _canonical(text):
    return str(ipaddress.ip_address(u"%s" % text))


class NetnsLinks:
    """Reads and changes namespaces, veth pairs, addresses and routes with ``ip``."""

    name = "netns"

    def __init__(self, run, ip, netns_dir=NETNS_DIR, etc_netns=ETC_NETNS, mountinfo=MOUNTINFO, persistent=False):
        """``run(argv, data=None) -> (rc, out, err)``; ``ip`` is the path of iproute2's ``ip`` (or None);
        ``persistent``: ``persistence`` keeps ``boot_script`` for boot (where no namespace unit does it)."""
        self.run = run
        self.ip = ip
        self.netns_dir = netns_dir
        self.etc_netns = etc_netns
        self.mountinfo = mountinfo
        self.persistent = persistent
        self._declared = {}
        self._sysctls = {}
        self._present = True

    @property
    def offline_units(self):
        return tuple(self._declared)

    def units(self, policy):
        self._declared = declared(policy)
        self._sysctls = link_sysctls(policy)
        self._present = policy.present
        return tuple(sorted(self._declared))

    def boot_script(self, desired):
        """The boot file of ``persistence`` (``*.netns-NAME``, run by ``netconfine-restore`` where systemd does
        not run): build the namespace as the namespace unit would, unless it exists."""
        if not desired:
            return ""
        (unit,) = desired
        ns = self._declared[unit]
        lines = ["test -e %s/%s && exit 0" % (self.netns_dir, shell_word(ns.name))]
        return "".join(line + "\n" for line in lines + boot_lines(ns, self.ip or "ip", self._sysctls.get(unit, ())))

    # ---------------------------------------------------------- reading

    def _ip(self, *argv, **kwargs):
        if not self.ip:
            raise NetconfineError("the ip command (package iproute2) is not installed", "name")
        rc, out, err = self.run([self.ip] + list(argv))
        if rc != 0 and not kwargs.get("missing_ok"):
            raise NetconfineError("ip %s failed (rc=%d): %s" % (" ".join(argv), rc, (err or out).strip()), "name")
        if rc != 0:
            return None
        try:
            return json.loads(out) if out.strip() else []
        except ValueError as exc:
            raise NetconfineError("cannot parse the JSON of ip %s (%s)" % (" ".join(argv), exc), "name")

    def read(self, unit):
        ns = self._declared[unit]
        names = [item.get("name") for item in self._ip("-j", "netns", "list") or []]
        facts = []
        exists = ns.name in names
        host = None
        if ns.host_link:
            found = self._ip("-j", "-d", "addr", "show", "dev", ns.host_link, missing_ok=True)
            host = found[0] if found else None
            if self._present:          # removal never depends on what else the host routes
                self._check_routes(ns)
        if host is not None:
            if "UP" in host.get("flags", []):
                facts.append(("up", "", ns.host_link))
            facts += [("addr", "", ns.host_link, a) for a in _global_addresses(host)]
        if exists:
            facts.append(("netns", ns.name))
            inside = self._ip("-n", ns.name, "-j", "-d", "addr", "show", missing_ok=True) or []
            by_name = dict((link.get("ifname"), link) for link in inside)
            if "UP" in by_name.get("lo", {}).get("flags", []):
                facts.append(("lo", ns.name))
            peer = by_name.get(ns.peer_link) if ns.peer_link else None
            if peer is not None:
                if host is not None and _paired(host, peer):
                    facts.append(("veth", ns.host_link, ns.name, ns.peer_link))
                if "UP" in peer.get("flags", []):
                    facts.append(("up", ns.name, ns.peer_link))
                facts += [("addr", ns.name, ns.peer_link, a) for a in _global_addresses(peer)]
                for version in ("-4", "-6"):
                    for route in self._ip("-n", ns.name, version, "-j", "route", "show", "default",
                                          missing_ok=True) or []:
                        if route.get("dev") == ns.peer_link and "gateway" in route:
                            facts.append(("route", ns.name, ns.peer_link, _canonical(route["gateway"])))
        servers = self._resolv(ns.name)
        if servers:
            facts.append(("dns", ns.name, servers))
        return {"facts": _sorted(facts), "exists": exists, "host": host is not None}

    def _check_routes(self, ns):
        """A subnet of ours that overlaps a route of this host outside our veth would shadow or be shadowed."""
        for version, field in (("-4", "subnet"), ("-6", "subnet6")):
            wanted = [ipaddress.ip_interface(u"%s" % a).network for a in ns.host_addresses
                      if ipaddress.ip_interface(u"%s" % a).version == int(version[1])]
            if not wanted:
                continue
            for route in self._ip(version, "-j", "route", "show", missing_ok=True) or []:
                dst = route.get("dst")
                if not dst or dst == "default" or route.get("dev") == ns.host_link:
                    continue
                try:
                    net = ipaddress.ip_network(u"%s" % dst, strict=False)
                except ValueError:
                    continue
                if net.is_link_local or net.is_multicast:
                    continue
                for mine in wanted:
                    if mine.overlaps(net):
                        raise NetconfineError(
                            "%s overlaps the route %s dev %s of this host (another namespace or link uses it); "
                            "choose another subnet" % (mine, dst, route.get("dev")), field)

    def _resolv(self, name):
        try:
            with open(os.path.join(self.etc_netns, name, "resolv.conf")) as handle:
                text = handle.read()
        except (IOError, OSError):
            return ()
        return tuple(line.split()[1] for line in text.splitlines()
                     if line.startswith("nameserver ") and len(line.split()) == 2) or ("(other content)",)

    def owned(self, read, policy, unit):
        if not read["facts"]:
            return {}
        return {unit: Links(read["facts"])}

    def render(self, policy, unit):
        if not policy.present:
            return {}
        return {unit: Links(desired_facts(self._declared[unit]))}

    # ---------------------------------------------------------- changing

    def script(self, read, current, desired, restore_jumps=None):
        """``ip`` commands (shell syntax, one a line) taking ``current`` facts to ``desired``."""
        have = set(next(iter(current.values())).facts) if current else set()
        want = set(next(iter(desired.values())).facts) if desired else set()
        gone, new = have - want, want - have
        lines = []
        netns_gone = set(f[1] for f in gone if f[0] == "netns")
        veth_gone = set(f[1] for f in gone if f[0] == "veth")
        for fact in sorted(gone, key=lambda f: (-ORDER.index(f[0]), f)):
            kind = fact[0]
            inside = fact[1] if kind in ("lo", "route", "dns") else (fact[2] if kind == "veth" else fact[1])
            if kind not in ("dns", "netns", "veth") and inside in netns_gone:
                continue              # goes with the namespace
            if kind in ("up", "addr") and not fact[1] and fact[2] in veth_gone:
                continue              # goes with the veth pair
            lines.append(self._remove(fact))
        # a peer address that changes takes the default routes with it: put them back
        readdress = any(f[0] == "addr" and f[1] for f in gone | new)
        for fact in sorted(want if readdress else new, key=lambda f: (ORDER.index(f[0]), f)):
            if fact in new or fact[0] == "route":
                lines.append(self._create(fact))
        return "".join(shlex.join(argv) + "\n" for argv in lines)

    @staticmethod
    def _create(fact):
        kind = fact[0]
        if kind == "netns":
            return ["ip", "netns", "add", fact[1]]
        if kind == "lo":
            return ["ip", "-n", fact[1], "link", "set", "lo", "up"]
        if kind == "veth":
            return ["ip", "link", "add", fact[1], "type", "veth", "peer", "name", fact[3], "netns", fact[2]]
        where = ["-n", fact[1]] if fact[1] else []
        if kind == "up":
            return ["ip"] + where + ["link", "set", fact[2], "up"]
        if kind == "addr":
            extra = ["nodad"] if ":" in fact[3] else []
            return ["ip"] + where + ["addr", "add", fact[3], "dev", fact[2]] + extra
        if kind == "route":
            return ["ip", "-n", fact[1], "route", "replace", "default", "via", fact[3], "dev", fact[2]]
        return [WRITE_RESOLV, fact[1]] + list(fact[2])

    @staticmethod
    def _remove(fact):
        kind = fact[0]
        if kind == "netns":
            return ["ip", "netns", "delete", fact[1]]
        if kind == "lo":
            return ["ip", "-n", fact[1], "link", "set", "lo", "down"]
        if kind == "veth":
            return ["ip", "link", "delete", fact[1]]
        where = ["-n", fact[1]] if fact[1] else []
        if kind == "up":
            return ["ip"] + where + ["link", "set", fact[2], "down"]
        if kind == "addr":
            return ["ip"] + where + ["addr", "del", fact[3], "dev", fact[2]]
        if kind == "route":
            return ["ip", "-n", fact[1], "route", "del", "default", "via", fact[3], "dev", fact[2]]
        return [REMOVE_RESOLV, fact[1]]

    def apply(self, unit, script):
        ns = self._declared[unit]
        for line in script.splitlines():
            argv = shlex.split(line)
            if argv[0] == WRITE_RESOLV:
                self._write_resolv(argv[1], argv[2:], ns.field)
                continue
            if argv[0] == REMOVE_RESOLV:
                self._remove_resolv(argv[1], ns.field)
                continue
            if argv[1:3] == ["netns", "add"]:
                self._check_persistent(ns)
            if argv[1:3] == ["netns", "delete"] and not os.path.exists(os.path.join(self.netns_dir, argv[3])):
                continue              # already gone (the namespace unit's ExecStop deletes it); read back checks
            rc, out, err = self.run([self.ip] + argv[1:])
            # a default route goes by itself with the address it used, a veth pair with its namespace (the
            # namespace unit's ExecStop); the read-back checks the rest
            if rc != 0 and argv[3:5] != ["route", "del"] and not (argv[1:3] == ["link", "delete"] and
                                                                  self._link_gone(argv[3])):
                raise NetconfineError("%s failed (rc=%d): %s" % (line, rc, (err or out).strip()), ns.field,
                                      command=line, stderr=err)

    def _link_gone(self, name):
        rc, _out, _err = self.run([self.ip, "link", "show", "dev", name])
        return rc != 0

    def _check_persistent(self, ns):
        """Refuse to bind a namespace name where the bind cannot outlive this process (a slave mount namespace)."""
        target = os.path.realpath(self.netns_dir)
        best, slave = "", False
        try:
            with open(self.mountinfo) as handle:
                for line in handle:
                    parts = line.split(" - ")[0].split()
                    point = parts[4]
                    if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                        best, slave = point, any(p.startswith("master:") for p in parts[6:])
        except (IOError, OSError):
            return
        if slave:
            raise NetconfineError(
                "this task runs in a mount namespace that is a slave of another (as under 'ip netns exec'): the "
                "bind mount %s/%s would vanish when the task ends. Run it in the host's mount namespace (over SSH, "
                "or 'nsenter --net' instead of 'ip netns exec')" % (self.netns_dir, ns.name), ns.field)

    def _write_resolv(self, name, servers, field):
        directory = os.path.join(self.etc_netns, name)
        path = os.path.join(directory, "resolv.conf")
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o755)
            tmp = path + ".netconfine-tmp"
            with open(tmp, "w") as handle:
                handle.write("# managed by paranoid.netconfine (netns_service %s)\n" % name)
                handle.write("".join("nameserver %s\n" % s for s in servers))
            os.chmod(tmp, 0o644)
            os.rename(tmp, path)
        except (IOError, OSError) as exc:
            raise NetconfineError("cannot write %s: %s" % (path, exc), "dns")

    def _remove_resolv(self, name, field):
        directory = os.path.join(self.etc_netns, name)
        try:
            os.unlink(os.path.join(directory, "resolv.conf"))
            if not os.listdir(directory):
                os.rmdir(directory)
        except (IOError, OSError) as exc:
            raise NetconfineError("cannot remove %s/resolv.conf: %s" % (directory, exc), "dns")


def _kind(link):
    return (link.get("linkinfo") or {}).get("info_kind")


def _paired(host, peer):
    """Whether two links read with ``ip -j -d`` are the two ends of one veth pair."""
    return (_kind(host) == "veth" and _kind(peer) == "veth" and host.get("link_index") == peer.get("ifindex")
            and peer.get("link_index") == host.get("ifindex"))


def make_state(module, run):
    """Factory for ``netfilter_task.run_module(..., states=(make_state, ...))``. Where systemd runs the
    namespace unit rebuilds the namespace at boot (``systemd_units``); elsewhere the boot restore does."""
    from ansible_collections.paranoid.netconfine.plugins.module_utils.systemd_units import systemd_running

    return NetnsLinks(run, module.get_bin_path("ip"), persistent=not systemd_running())
