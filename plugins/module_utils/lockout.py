# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The static lockout guard: refuse, before anything is applied, a policy that cuts the controller off.

Private to the paranoid.netconfine collection. The management path is the SSH
connection the controller uses: this host's address(es) and sshd port as the
controller connects to them (the action plugin passes ``management_path``:
``ansible_host`` resolved on the controller, ``ansible_port``, the controller's
own source address), refined by ``SSH_CONNECTION`` on the target where the
module sees it (and all of it when the module runs without the action plugin).
A connection without a network path (``local``, ``paranoid.netconfine.netns``,
``docker``...) has none, and the guard does nothing.

:func:`check` walks each owned chain hooked into INPUT/PREROUTING (packets
from the controller: a new connection and an established one) or
OUTPUT/POSTROUTING (sshd's answers, which conntrack counts as established)
with those packets and refuses:

* a DROP or REJECT rule that matches them for sure, with nothing before it that
  may let them through (the field of that rule);
* a DROP policy of the built-in chain that an established connection would reach:
  the owned chain does not accept it (established/related) first (field ``policy``).

It is conservative: a match it cannot decide from the path (an owner, a cgroup,
an interface, a limit, the controller's address when unknown) counts as "may
match", which never refuses; so does a jump hooked ``last`` (foreign rules
before it may accept the connection). ``allow_lockout: true`` skips it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
from collections import namedtuple

from ansible_collections.paranoid.netconfine.plugins.module_utils import model
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError

INBOUND = ("PREROUTING", "INPUT")
OUTBOUND = ("OUTPUT", "POSTROUTING")
EPHEMERAL = (1024, 65535)      # where the controller's source port of a fresh connection can be
NO, MAYBE, SURE = 0, 1, 2

# One way to the host: ``local`` this host's address as the packets carry it, ``port`` sshd's port (sets of
# candidates: every one must match for SURE), ``peers`` the controller's address(es) (empty: unknown),
# ``peer_port`` the current connection's source port on the controller (None: unknown).
Path = namedtuple("Path", "family local port peers peer_port")
# One packet of the management connection as a chain sees it.
Packet = namedtuple("Packet", "family state src src_ports dst dst_ports")


def _address(text):
    try:
        addr = ipaddress.ip_address(str(text).partition("%")[0])
    except ValueError:
        return None
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped or addr


def _ssh_connection(value):
    """SSH_CONNECTION ("client port server port") -> (client, client_port, server, server_port) or None."""
    parts = (value or "").split()
    if len(parts) != 4 or not parts[1].isdigit() or not parts[3].isdigit():
        return None
    client, server = _address(parts[0]), _address(parts[2])
    if client is None or server is None:
        return None
    return client, int(parts[1]), server, int(parts[3])


def management(given, environ):
    """The management paths (a list of Path, one per address of this host) or [] where there is none.

    ``given``: the action plugin's ``management_path`` (None: the module ran without it), a dict with
    ``addresses`` (this host as the controller resolved it; none: a connection without a network path),
    ``port`` (None: ssh's default) and ``sources`` (the controller's own address towards each).
    """
    ssh = _ssh_connection(environ.get("SSH_CONNECTION"))
    if given is None:
        if ssh is None:
            return []
        client, client_port, server, server_port = ssh
        return [Path(server.version, frozenset([server]), frozenset([server_port]), frozenset([client]),
                     client_port)]
    locals_ = [a for a in (_address(x) for x in given.get("addresses") or ()) if a is not None]
    if not locals_:
        return []
    sources = [a for a in (_address(x) for x in given.get("sources") or ()) if a is not None]
    paths = []
    for local in locals_:
        candidates, ports, peers, peer_port = {local}, set(), set(s for s in sources if s.version == local.version), None
        if given.get("port"):
            ports.add(int(given["port"]))
        if ssh is not None and ssh[2].version == local.version:
            # what the packets carry here (after any NAT on the way): a candidate beside the controller's view
            candidates.add(ssh[2])
            peers.add(ssh[0])
            peer_port = ssh[1]
            if not given.get("port"):
                ports.add(ssh[3])
        paths.append(Path(local.version, frozenset(candidates), frozenset(ports or [22]), frozenset(peers),
                          peer_port))
    return paths


def packets(path, direction):
    """The packets of the management connection a chain of ``direction`` (in/out) sees."""
    peer_ports = ("peer", path.peer_port)
    if direction == "in":
        return [Packet(path.family, state, path.peers, peer_ports, path.local, path.port)
                for state in ("NEW", "ESTABLISHED")]
    return [Packet(path.family, "ESTABLISHED", path.local, path.port, path.peers, peer_ports)]


def _all(values):
    values = list(values)
    if NO in values:
        return NO
    return MAYBE if MAYBE in values else SURE


def _in_set(candidates, test):
    """SURE if ``test`` holds for every candidate, NO for none, MAYBE otherwise or when there are none."""
    results = set(test(c) for c in candidates)
    if results == {True}:
        return SURE
    if results == {False}:
        return NO
    return MAYBE


def _address_match(net, negate, candidates):
    if net is None:
        return SURE
    return _in_set(candidates, lambda a: (a.version == net.version and a in net) != negate)


def _port_match(span, negate, ports):
    if span is None:
        return SURE
    low, high = span

    def hit(port):
        return (low <= port <= high) != negate

    if isinstance(ports, tuple) and ports and ports[0] == "peer":
        # the controller's side: the current connection's port, and any ephemeral port of a fresh one
        current = ports[1]
        covers = (low <= EPHEMERAL[0] and high >= EPHEMERAL[1]) if not negate else \
            (high < EPHEMERAL[0] or low > EPHEMERAL[1])
        disjoint = (high < EPHEMERAL[0] or low > EPHEMERAL[1]) if not negate else \
            (low <= EPHEMERAL[0] and high >= EPHEMERAL[1])
        if covers and (current is None or hit(current)):
            return SURE
        if disjoint and (current is None or not hit(current)):
            return NO
        return MAYBE
    return _in_set(ports, hit)


def _match(match, packet, direction):
    if isinstance(match, model.Comment):
        return SURE
    if isinstance(match, model.Ports):
        if match.protocol != "tcp":
            return NO
        return _all([_port_match(match.sport, match.sport_negate, packet.src_ports),
                     _port_match(match.dport, match.dport_negate, packet.dst_ports)])
    if isinstance(match, model.Conntrack):
        return SURE if packet.state in match.states else NO
    if isinstance(match, model.Icmp):
        return NO
    if isinstance(match, model.DestinationType) and direction == "in" and match.type == "LOCAL":
        return NO if match.negate else SURE
    return MAYBE        # owner, cgroup, physdev, limit, ...: not decidable from the path


def rule_matches(rule, packet, direction):
    """NO, MAYBE or SURE: whether ``rule`` matches ``packet`` in a chain of ``direction``."""
    if rule.family != packet.family or rule.protocol not in (None, "tcp"):
        return NO
    checks = [_address_match(rule.source, rule.source_negate, packet.src),
              _address_match(rule.destination, rule.destination_negate, packet.dst)]
    if rule.in_interface is not None or rule.out_interface is not None:
        checks.append(MAYBE)
    checks.extend(_match(m, packet, direction) for m in rule.matches)
    return _all(checks)


def _kind(target):
    if isinstance(target, model.Reject) or (isinstance(target, model.Verdict) and target.name == "DROP"):
        return "drop"
    if isinstance(target, model.Verdict) and target.name == "ACCEPT":
        return "accept"
    if isinstance(target, (model.Log, model.Secmark, model.ConnSecmark)):
        return "continue"
    return "other"      # RETURN, a jump to a helper chain, NAT: where the packet goes from there is not ours to see


def verdict(rules, packet, direction):
    """(outcome, rule) of a chain for a packet: drop / accept / other (surely), unknown (a rule that may
    let it through), end (no rule took it: back to the built-in chain)."""
    for rule in rules:
        hit = rule_matches(rule, packet, direction)
        kind = _kind(rule.target)
        if hit == NO or kind == "continue":
            continue
        if hit == SURE:
            return kind, rule
        if kind != "drop":          # a rule that may drop it: if it does not, the next ones decide
            return "unknown", rule
    return "end", None


def _describe(path, packet, direction):
    peer = ", ".join(sorted(str(p) for p in path.peers)) or "the controller"
    host = "/".join(sorted(str(a) for a in path.local))
    port = "/".join(str(p) for p in sorted(path.port))
    what = "%s SSH connection %s -> %s port %s" % (packet.state.lower(), peer, host, port)
    return what + (" (sshd's answers)" if direction == "out" else "")


def findings(policy, paths):
    """Every (field, message) the guard refuses ``policy`` for, given the management ``paths``."""
    return [(field, message) for _index, field, message in _findings(policy, paths)]


def _findings(policy, paths):
    """:func:`findings` as (index of the path, field, message), so that one pass tells which paths are cut."""
    found = []
    if not policy.present or not paths:
        return found
    for chain in policy.chains:
        if chain.hook is None or chain.hook.builtin not in INBOUND + OUTBOUND:
            continue
        direction = "in" if chain.hook.builtin in INBOUND else "out"
        for index, path in enumerate(paths):
            if path.family not in policy.families:
                continue
            rules = [r for r in chain.rules if r.family == path.family]
            for packet in packets(path, direction):
                outcome, rule = verdict(rules, packet, direction)
                where = "%s %s (IPv%d)" % (chain.table, chain.hook.builtin, path.family)
                if outcome == "drop" and chain.hook.position == "first":
                    found.append((index, rule.field or "rules", "would cut the controller off: %s drops the %s"
                                  % (where, _describe(path, packet, direction))))
                elif (outcome == "end" and chain.builtin_policy == "DROP" and packet.state == "ESTABLISHED"):
                    found.append((index, "policy", "would cut the controller off: the DROP policy of %s is reached by "
                                  "the %s, which the chain does not accept (established/related) first"
                                  % (where, _describe(path, packet, direction))))
    return found


def check(policy, paths):
    """Raise NetconfineError naming the field where ``policy`` locks out every management path."""
    found = _findings(policy, paths)
    # ssh tries each address of the host in turn: a lockout only where every path is cut
    if not found or len(set(index for index, _field, _message in found)) < len(paths):
        return
    found = [(field, message) for _index, field, message in found]
    field, message = found[0]
    raise NetconfineError("%s; nothing was applied. Set allow_lockout: true to apply it anyway (with "
                          "rollback_timeout the host puts it back when the controller cannot reconnect)"
                          % message, field, lockouts=[dict(field=f, msg=m) for f, m in found])
