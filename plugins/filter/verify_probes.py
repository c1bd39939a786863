# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side filters that derive paranoid.netconfine.probe probes from what a role declared.

A role's ``verify`` tasks feed these the role's own variables; the result is a list of probe
dicts (``user``, ``group``, ``protocol``, ``host``, ``port``, ``expect``, ``name``) for one
``paranoid.netconfine.probe`` task. Only what can be decided from the declaration is derived:
an allowed owner is probed with ``expect: allowed`` (which also needs the service to be
listening), a denied one with ``expect: denied``/``refused``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

FAMILY_ADDRESSES = {"ipv4": ["127.0.0.1"], "ipv6": ["::1"], "both": ["127.0.0.1", "::1"]}


def _addresses(address, ip_version):
    """``localhost`` -> 127.0.0.1 and ::1 (as the modules mean it), limited to ``ip_version``."""
    if address in (None, "", "localhost"):
        return list(FAMILY_ADDRESSES[ip_version])
    address = str(address)
    family = "ipv6" if ":" in address else "ipv4"
    return [address.split("/", maxsplit=1)[0]] if ip_version in ("both", family) else []


def _where(host, port, protocol):
    shown = "[%s]" % host if ":" in host else host
    return "%s%s/%s" % (shown, ":%s" % port if port else "", protocol)


def tunnel_guard_probes(tunnels, denied_user="nobody", ip_version="both", label="tunnel_guard"):
    """tunnel_guard_tunnels -> probes: every allowed user may reach each listener, ``denied_user`` may not.

    The denied user is not probed where it is one of the tunnel's allowed users. Group members are not
    derived (which user is a member is the host's business): list them in ``tunnel_guard_verify``.
    """
    if not isinstance(tunnels, list):
        raise AnsibleFilterError("tunnel_guard_probes: expected the list tunnel_guard_tunnels, got %r" % (tunnels,))
    probes = []
    for tunnel in tunnels:
        protocol = tunnel.get("protocol") or "tcp"
        if protocol not in ("tcp", "udp"):
            continue
        port = int(tunnel["port"])
        allowed = [str(u) for u in tunnel.get("allow_users") or [] if "-" not in str(u)]
        for host in _addresses(tunnel.get("address"), ip_version):
            for user in allowed:
                probes.append({"name": "%s: %s -> %s" % (label, user, _where(host, port, protocol)), "user": user,
                               "protocol": protocol, "host": host, "port": port, "expect": "allowed"})
            if denied_user and str(denied_user) not in allowed:
                probes.append({"name": "%s: %s -> %s" % (label, denied_user, _where(host, port, protocol)),
                               "user": str(denied_user), "protocol": protocol, "host": host, "port": port,
                               "expect": "refused" if protocol == "tcp" else "denied"})
    return probes


def _applies(policy, user, group, protocol, port):
    """Does a user_egress policy match a probe (user, running group, protocol, port)?"""
    users, groups = policy.get("users"), policy.get("groups")
    if users and user not in [str(u) for u in users]:
        return False
    if groups and group not in [str(g) for g in groups]:
        return False
    wanted = policy.get("protocol")
    if wanted in ("icmp", "ipv6-icmp"):
        wanted = "icmp"
    if wanted not in (None, "all") and wanted != protocol:
        return False
    if policy.get("icmp_type") not in (None, "echo-request", "8", "128") and protocol == "icmp":
        return False
    if policy.get("destination_port") not in (None, "") and port is not None:
        low, _sep, high = str(policy["destination_port"]).partition(":")
        if not int(low) <= port <= int(high or low):
            return False
    return True


def _verdict(policies, user, group, protocol, port):
    """First ACCEPT/DROP/REJECT/RETURN that matches decides (LOG goes on); nothing: the packet goes on, allowed."""
    for policy in policies:
        if policy.get("jump") in ("ACCEPT", "DROP", "REJECT", "RETURN") and _applies(policy, user, group, protocol,
                                                                                     port):
            return "allowed" if policy["jump"] in ("ACCEPT", "RETURN") else "denied"
    return "allowed"


def user_egress_probes(policies, targets=None, other_user="nobody", label="user_egress"):
    """user_egress_policies -> probes: for each owner a policy names, what the ordered policies decide.

    ICMP policies (and policies for any protocol) are probed with an echo to each of ``targets``
    (default 127.0.0.1 and ::1); TCP/UDP policies with a port, where they deny, with a connection to the
    port on each target. Owner-less policies are probed as ``other_user``. Destinations, uid ranges and
    a user's primary group are not modelled: list such cases in ``user_egress_verify``.
    """
    if not isinstance(policies, list):
        raise AnsibleFilterError("user_egress_probes: expected the list user_egress_policies, got %r" % (policies,))
    targets = list(targets or FAMILY_ADDRESSES["both"])
    owners = []  # (user, group) in order of appearance
    for policy in policies:
        if policy.get("destination"):
            continue
        for user in policy.get("users") or []:
            if "-" not in str(user) and (str(user), None) not in owners:
                owners.append((str(user), None))
        for group in policy.get("groups") or []:
            if "-" not in str(group) and (str(other_user), str(group)) not in owners:
                owners.append((str(other_user), str(group)))
    if (str(other_user), None) not in owners:
        owners.append((str(other_user), None))
    kinds = []  # (protocol, port)
    for policy in policies:
        proto = policy.get("protocol")
        if policy.get("destination"):
            continue
        if proto in (None, "all", "icmp", "ipv6-icmp"):
            kind = ("icmp", None)
        elif proto in ("tcp", "udp") and policy.get("destination_port") and policy.get("jump") in ("DROP", "REJECT"):
            kind = (proto, int(str(policy["destination_port"]).partition(":")[0]))
        else:
            continue
        if kind not in kinds:
            kinds.append(kind)
    probes = []
    for user, group in owners:
        for protocol, port in kinds:
            expect = _verdict(policies, user, group, protocol, port)
            if protocol != "icmp" and expect == "allowed":
                continue  # allowed TCP/UDP needs a service: not derivable
            who = "%s (as %s)" % (user, group) if group else user
            for host in targets:
                probe = {"name": "%s: %s -> %s" % (label, who, _where(host, port, protocol)), "user": user,
                         "protocol": protocol, "host": host, "expect": expect}
                if group:
                    probe["group"] = group
                if port is not None:
                    probe["port"] = port
                probes.append(probe)
    return probes


class FilterModule(object):
    def filters(self):
        return {"tunnel_guard_probes": tunnel_guard_probes, "user_egress_probes": user_egress_probes}
