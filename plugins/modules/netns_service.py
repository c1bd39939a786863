#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: netns_service
short_description: A named network namespace for a daemon, reachable only through NAT and declared port forwards
version_added: 0.2.0
description:
  - Gives a daemon its own network stack, as C(ip netns add), a veth pair, C(iptables -t nat ... -j MASQUERADE) and
    C(-j DNAT) would by hand, but idempotently and with C(state=absent) removing everything again.
  - B(Namespace and links.) The namespace O(name) exists (exact name under C(/run/netns)) with loopback up. With
    O(subnet) there is one veth pair, C(vh-NAME) on the host and C(vn-NAME) in the namespace, the host side
    addressed C(.1) and the namespace side C(.2) of O(subnet) (or O(host_address) / O(namespace_address)), and a
    default route in the namespace via the host side. O(subnet6) adds C(::1)/C(::2) of an IPv6 /64. O(dns)
    writes C(/etc/netns/NAME/resolv.conf), which C(ip netns exec) shows the daemon as C(/etc/resolv.conf).
    The state is read with C(ip -j) and only what differs is changed.
  - B(Host side, through the same engine as M(paranoid.netconfine.owner_rule).) IPv4 (and with O(subnet6) IPv6)
    forwarding is switched on; it is reported as a change only when it was off, and never switched off again.
    Owned chains hook C(FORWARD) (replies and the declared forwards in, the namespace's own address out, every other
    packet to or from the veth dropped), C(nat PREROUTING) and C(nat OUTPUT) (one DNAT per O(port_forwards) item,
    so remote clients and local clients of the host reach the daemon) and C(nat POSTROUTING) (MASQUERADE of the
    namespace's address). On the nftables backend these are base chains of type C(nat) at the C(dstnat)/C(srcnat)
    priorities in the collection's table C(inet netconfine), changed in one transaction.
  - B(Bad input changes nothing.) Names with C(/), C(..), spaces or over 12 characters, a subnet that overlaps a
    route of this host (another namespace's veth, the uplink), ports out of range, a host port forwarded twice,
    a host port that another task already forwards (its DNAT in C(nat PREROUTING), read from the kernel on both
    backends, on any address or the same one) - an error naming the field, nothing applied.
  - The name under C(/run/netns) is a bind mount in the mount namespace the module runs in. The module refuses to
    create it from a slave mount namespace (as C(ip netns exec) gives), where it would vanish when the task ends.
author:
  - paranoid.netconfine developers (@paranoid-netconfine)
extends_documentation_fragment:
  - paranoid.netconfine.netfilter
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Check mode reads the host and predicts the real run exactly; it changes nothing.
  diff_mode:
    support: full
    details: Links, addresses, routes, forwarding and the owned rules before and after, per unit.
  platform:
    support: full
    platforms: posix
notes:
  - O(name) here is also the namespace's name. It must be 1-12 characters of V(a-z), V(0-9), V(_) and V(-),
    starting with a letter or digit, so that the veth names C(vh-NAME) and C(vn-NAME) fit 15 characters.
    The owned chains are named after C(netns-NAME).
  - O(ip_version) follows from the addresses given (O(subnet), O(subnet6)); leave it at V(both).
  - Reaching the daemon from the host's own C(127.0.0.1) needs C(route_localnet) on the host side of the veth
    (CVE-2020-8558 exposure). It is never set silently, see O(allow_localhost_forward).
options:
  network:
    description:
      - V(none) (seed 002's C(unshare -n)) - a namespace with loopback only, no veth, no forwarding, NAT or
        host-side rules; the daemon sees "Network is unreachable" for every address but loopback. O(subnet),
        O(subnet6), O(port_forwards), O(dns), O(egress) and O(outbound_interface) are refused with it.
      - V(veth) - a veth pair addressed from O(subnet) (required then).
      - Default V(veth) when O(subnet) is given, else V(none).
      - Under systemd the daemon joins this named namespace (C(NetworkNamespacePath=)) rather than a fresh
        C(PrivateNetwork=yes) one, so C(ip -n NAME link) and C(/proc/PID/ns/net) show what it has, and it
        follows a restart of the namespace unit as a daemon with links does.
    type: str
    choices: [veth, none]
  subnet:
    description:
      - IPv4 network of the veth pair, a V(/30) or larger, host bits clear (V(192.0.2.0/30)).
      - Omit it for a namespace with loopback only and no host-side rules.
    type: str
  host_address:
    description: Address of the host side in O(subnet). Default the first address (C(.1)).
    type: str
  namespace_address:
    description: Address of the namespace side in O(subnet). Default the second address (C(.2)).
    type: str
  subnet6:
    description:
      - Optional IPv6 V(/64) of the veth pair (for example in V(fd00::/8)); the host side gets C(::1), the namespace
        C(::2). Needs O(subnet).
    type: str
  outbound_interface:
    description:
      - The host's uplink. The namespace's own connections are forwarded and masqueraded only out of it.
        Default any interface but the namespace's veth.
    type: str
  dns:
    description: Name servers of the namespace (C(/etc/netns/NAME/resolv.conf)). No file when empty.
    type: list
    elements: str
    default: []
  port_forwards:
    description:
      - Ports of this host forwarded to the daemon in the namespace (DNAT in C(nat PREROUTING) and C(nat OUTPUT)).
      - Without O(port_forwards[].host_address), connections to any address of this host on O(port_forwards[].host_port)
        are forwarded, except to loopback (see O(allow_localhost_forward)).
    type: list
    elements: dict
    default: []
    suboptions:
      protocol:
        description: Transport protocol.
        type: str
        choices: [tcp, udp]
        default: tcp
      host_port:
        description: Port on the host (1-65535).
        type: int
        required: true
      port:
        description: Port of the daemon in the namespace. Default O(port_forwards[].host_port).
        type: int
      from:
        description: Only these sources (addresses, networks, hostnames) may use the forward. Default any.
        type: list
        elements: str
      host_address:
        description: Forward only connections to this one address of the host.
        type: str
  allow_localhost_forward:
    description:
      - Also forward connections of local clients to C(127.0.0.1):O(port_forwards[].host_port).
      - This sets C(net.ipv4.conf.vh-NAME.route_localnet=1) and masquerades loopback sources out of the veth.
        With C(route_localnet) the kernel routes C(127.0.0.0/8) on that link (CVE-2020-8558). IPv6 cannot forward
        C(::1) at all.
    type: bool
    default: false
  egress:
    description:
      - Where the daemon may connect, enforced inside the namespace (its C(OUTPUT), through the same engine and
        backend as the host side, in one transaction there). Loopback and replies are allowed; every other new
        connection is rejected with C(icmp port-unreachable), so the daemon sees "connection refused".
      - Omit it to leave the namespace's own netfilter alone (everything may go out through NAT). An empty list
        allows loopback only.
    type: list
    elements: dict
    suboptions:
      destination:
        description: Addresses, networks or hostnames (resolved on the host when the task runs).
        type: list
        elements: str
        required: true
      protocol:
        description: V(tcp), V(udp), V(icmp), V(ipv6-icmp) or V(all). Default any.
        type: str
      port:
        description: Destination port or range V(low:high) (needs O(egress[].protocol) V(tcp) or V(udp)).
        type: str
  service:
    description:
      - The daemon.
      - B(Where systemd runs) (C(/run/systemd/system) exists) it gets the unit C(netconfine-NAME.service) with
        C(NetworkNamespacePath=/run/netns/NAME), C(BindsTo=)/C(After=) the namespace unit
        C(netconfine-ns-NAME.service), C(User=)/C(Group=), C(PrivateTmp=), C(NoNewPrivileges=yes),
        C(WorkingDirectory=), C(Environment=) and the sandbox settings below. Both units are enabled and started
        (O(service.start) is for the launcher only); a changed daemon unit restarts the daemon.
      - B(Without systemd) a launcher script is installed at C(/usr/local/libexec/netconfine/ns-NAME). It enters
        the namespace, gives the daemon a private C(/tmp) (a fresh tmpfs in a mount namespace of its own, gone
        when the daemon exits), drops to O(service.user) with C(setpriv) (that user's groups, C(no_new_privs)),
        clears the environment and runs O(service.exec). Start it from your init system, or with
        O(service.start). The sandbox settings need systemd and are refused there.
      - O(state=absent) stops the daemon and removes its unit or launcher.
      - B(At boot) the unit's namespace unit rebuilds the namespace where systemd runs. Without systemd, with
        O(persist), C(netconfine-boot) does (the namespace, its links, addresses, routes and the veth's
        sysctls, then what was persisted inside it) and starts the launcher when O(service.start); have it run
        at boot with O(boot_hook).
    type: dict
    suboptions:
      exec:
        description: Absolute path of the daemon's program.
        type: str
        required: true
      args:
        description: Its arguments.
        type: list
        elements: str
        default: []
      user:
        description: User (name or uid) the daemon runs as. Unknown users and root are refused.
        type: str
        required: true
      group:
        description: Group it runs as. Default the user's primary group.
        type: str
      working_directory:
        description: Absolute directory it starts in.
        type: str
        default: /
      environment:
        description: Variables set for it (besides C(PATH), C(HOME), C(USER), C(LOGNAME)).
        type: dict
        default: {}
      private_tmp:
        description: Give it a private C(/tmp).
        type: bool
        default: true
      start:
        description:
          - Without systemd, keep one launcher process running. It is started when none runs, and restarted when
            the launcher changes. Under systemd the daemon's unit is always enabled and started.
        type: bool
        default: false
      ip_address_allow:
        description:
          - C(IPAddressAllow=) of systemd.resource-control(5) - addresses or networks (or V(any), V(localhost),
            V(link-local), V(multicast)) the daemon may exchange packets with, despite O(service.ip_address_deny).
            Enforced by cgroup BPF in the kernel, beside (not instead of) the netfilter rules.
        type: list
        elements: str
      ip_address_deny:
        description: C(IPAddressDeny=), the same forms (V(any) with an allow-list is the usual pair).
        type: list
        elements: str
      socket_bind_allow:
        description:
          - C(SocketBindAllow=) (systemd 249 or later) - C([ipv4:|ipv6:][tcp:|udp:]any|PORT|LOW-HIGH) the daemon
            may C(bind()) to.
        type: list
        elements: str
      socket_bind_deny:
        description: C(SocketBindDeny=) (systemd 249 or later), the same forms.
        type: list
        elements: str
      restrict_address_families:
        description:
          - C(RestrictAddressFamilies=) - socket families the daemon may use (V(AF_UNIX), V(AF_INET), ...), or with
            C(~) each the families it may not use, or V(none).
        type: list
        elements: str
      restrict_network_interfaces:
        description:
          - C(RestrictNetworkInterfaces=) (systemd 250 or later) - interfaces the daemon's packets may use (or,
            each with C(~), may not).
        type: list
        elements: str
  restart:
    description:
      - Restart the daemon in this run even when nothing changed, for a handler after its configuration or program
        changed (the role's C(netns_confine restart) does). Where systemd runs, C(systemctl restart) of an active
        C(netconfine-NAME.service). Without systemd, the launcher's processes that ran when the task began are
        stopped and the launcher is started again (with O(service.start); without it the task warns that it has
        nothing to restart). The task fails (it does not converge) while one of those processes still runs.
      - A changed unit or launcher restarts the daemon without it.
    type: bool
    default: false
seealso:
  - module: paranoid.netconfine.owner_rule
  - name: ip-netns(8)
    description: Process network namespace management.
    link: https://man7.org/linux/man-pages/man8/ip-netns.8.html
"""

EXAMPLES = r"""
# The seed's daemon on TCP 10105 in its own namespace: outbound through NAT, inbound only through the forward.
- name: Namespace web for the daemon on 10105
  paranoid.netconfine.netns_service:
    name: web
    subnet: 192.0.2.0/30          # host side vh-web 192.0.2.1, namespace side vn-web 192.0.2.2
    subnet6: fd00:19::/64
    outbound_interface: eth0
    dns: [192.0.2.53]
    port_forwards:
      - protocol: tcp
        host_port: 10105

- name: The seed's daemon itself, as www-data with its own /tmp, started by the launcher
  paranoid.netconfine.netns_service:
    name: web
    subnet: 192.0.2.0/30
    port_forwards:
      - host_port: 10105
    service:
      exec: /usr/sbin/my-net-daemon
      args: [--port, "10105"]
      user: www-data
      start: true

- name: Only the office network may use the forward, on one address of the host
  paranoid.netconfine.netns_service:
    name: web
    subnet: 192.0.2.0/30
    port_forwards:
      - host_port: 10105
        from: [198.51.100.0/24]
        host_address: 203.0.113.10

- name: The daemon may reach only the database and the name server
  paranoid.netconfine.netns_service:
    name: web
    subnet: 192.0.2.0/30
    port_forwards:
      - host_port: 10105
    egress:
      - destination: [198.51.100.20]
        protocol: tcp
        port: "5432"
      - destination: [192.0.2.53]
        protocol: udp
        port: "53"

# Seed 002's "unshare -n", declared: a program that must never talk to the network (a document converter).
# network: none (or no subnet): a namespace with loopback only, no veth, no host-side rules.
- name: The document converter has no network at all
  paranoid.netconfine.netns_service:
    name: converter
    network: none
    service:
      exec: /usr/bin/unoconv-listener
      user: converter
      start: true

# Under systemd: netconfine-web.service in namespace web, and a kernel-enforced allow-list beside the rules.
- name: The seed's daemon as a systemd unit that may talk to its subnet and the database only
  paranoid.netconfine.netns_service:
    name: web
    subnet: 192.0.2.0/30
    port_forwards:
      - host_port: 10105
    service:
      exec: /usr/sbin/my-net-daemon
      user: www-data
      environment: {LANG: C.UTF-8}
      ip_address_deny: [any]
      ip_address_allow: [192.0.2.0/30, 198.51.100.20]
      restrict_address_families: [AF_UNIX, AF_INET, AF_INET6]
      socket_bind_allow: [tcp:10105]
      socket_bind_deny: [any]

# A host without systemd: netconfine-boot rebuilds the namespace and starts the launcher at boot,
# run by ifupdown when it brings up the loopback.
- name: The seed's daemon on a host without systemd, back after a reboot
  paranoid.netconfine.netns_service:
    name: web
    subnet: 192.0.2.0/30
    port_forwards: [{host_port: 10105}]
    service: {exec: /usr/sbin/my-net-daemon, user: www-data, start: true}
    boot_hook: if-pre-up

# In a handler, after the daemon's configuration changed (what the role's "netns_confine restart" does):
# the task's own parameters, and restart.
- name: Restart the seed's daemon
  paranoid.netconfine.netns_service:
    name: web
    subnet: 192.0.2.0/30
    service:
      exec: /usr/sbin/my-net-daemon
      user: www-data
      start: true
    port_forwards:
      - host_port: 10105
    restart: true

- name: Remove the namespace, its veth pair, resolv.conf and every host-side rule
  paranoid.netconfine.netns_service:
    name: web
    state: absent
"""

RETURN = r"""
changed:
  description: Whether anything was (or, in check mode, would be) changed.
  returned: always
  type: bool
backend:
  description: The netfilter backend that converged the host-side rules.
  returned: always
  type: str
  sample: iptables
chains:
  description: Names of the owned chains.
  returned: always
  type: list
  elements: str
rendered:
  description:
    - What the task owns after the run (or would own in check mode), as text, per unit. C(netns NAME) lists the
      namespace's facts (links, addresses, routes, resolv.conf), C(sysctl kernel) the forwarding switches,
      C(iptables 4) / C(nftables ruleset) the owned rules.
  returned: always
  type: dict
  sample: {"netns web": "netns web\nweb: lo up\nvh-web: veth, peer vn-web in netns web\n..."}
scripts:
  description: The commands applied (or, in check mode, that would be applied), per unit that changes.
  returned: always
  type: dict
  sample: {"netns web": "ip netns add web\nip -n web link set lo up\n..."}
diff:
  description: What the task owns before and after, per unit that changes.
  returned: when diff mode is on
  type: dict
field:
  description: On failure, the parameter at fault (for example C(port_forwards[1].host_port)).
  returned: failure
  type: str
"""

from ansible_collections.paranoid.netconfine.plugins.module_utils import (
    netns_links, netns_netfilter, sysctl_state, systemd_units)
from ansible_collections.paranoid.netconfine.plugins.module_utils.netfilter_task import run_module
from ansible_collections.paranoid.netconfine.plugins.module_utils.netns_model import build_policy

FORWARD_OPTIONS = {
    "protocol": dict(type="str", default="tcp", choices=["tcp", "udp"]),
    "host_port": dict(type="int", required=True),
    "port": dict(type="int"),
    "from": dict(type="list", elements="str"),
    "host_address": dict(type="str"),
}

EGRESS_OPTIONS = {
    "destination": dict(type="list", elements="str", required=True),
    "protocol": dict(type="str"),
    "port": dict(type="str"),
}

SERVICE_OPTIONS = {
    "exec": dict(type="str", required=True),
    "args": dict(type="list", elements="str", default=[]),
    "user": dict(type="str", required=True),
    "group": dict(type="str"),
    "working_directory": dict(type="str", default="/"),
    "environment": dict(type="dict", default={}),
    "private_tmp": dict(type="bool", default=True),
    "start": dict(type="bool", default=False),
    "ip_address_allow": dict(type="list", elements="str"),
    "ip_address_deny": dict(type="list", elements="str"),
    "socket_bind_allow": dict(type="list", elements="str"),
    "socket_bind_deny": dict(type="list", elements="str"),
    "restrict_address_families": dict(type="list", elements="str"),
    "restrict_network_interfaces": dict(type="list", elements="str"),
}

ARGUMENT_SPEC = dict(
    network=dict(type="str", choices=["veth", "none"]),
    subnet=dict(type="str"),
    host_address=dict(type="str"),
    namespace_address=dict(type="str"),
    subnet6=dict(type="str"),
    outbound_interface=dict(type="str"),
    dns=dict(type="list", elements="str", default=[]),
    port_forwards=dict(type="list", elements="dict", default=[], options=FORWARD_OPTIONS),
    allow_localhost_forward=dict(type="bool", default=False),
    egress=dict(type="list", elements="dict", options=EGRESS_OPTIONS),
    service=dict(type="dict", options=SERVICE_OPTIONS),
    restart=dict(type="bool", default=False),
)


def main():
    states = (netns_netfilter.make_host_ports, netns_links.make_state, sysctl_state.make_state,
              netns_netfilter.make_state, systemd_units.make_state)
    run_module(ARGUMENT_SPEC, build_policy, states=states)


if __name__ == "__main__":
    main()
