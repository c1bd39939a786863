#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: uml_bridge_filter
short_description: Anti-spoofing and per-guest service policy on a host that bridges guests
version_added: 0.2.0
description:
  - On a host that bridges User-Mode-Linux guests (or VM taps, container veths) into a bridge, stops each
    guest from forging its source address and limits it to the services declared for it. One task holds
    B(every guest of one bridging host) in O(guests), so a guest removed from the list loses its rules in
    the same run.
  - "Anti-spoofing, log then drop: a packet that enters the bridge from a guest's O(guests[].port) with a source
    address that is not one of its O(guests[].addresses) is logged (rate-limited, the prefix names the guest) and
    dropped. This covers forwarded traffic (guest to other guests, to the uplink) and traffic to the host itself.
    The LOG rule comes before the DROP rule, because LOG does not stop the evaluation and DROP does."
  - "Only untagged IPv4, IPv6 and ARP from a guest: every other frame from O(guests[].port) (VLAN-tagged, 802.1Q or
    802.1ad, which would carry any source address past the address checks, and every other ether type) is logged
    (prefix C(l2 GUEST:)) and dropped, as libvirt's C(clean-traffic) does with C(no-other-l2-traffic). On the
    iptables backend this is an ebtables chain of ours per guest (br_netfilter shows tagged frames to no physdev
    rule), so it needs C(ebtables-restore) for every guest, with or without O(guests[].mac)."
  - "IPv6 essentials pass: the unspecified address C(::) as the source of neighbour solicitations, router
    solicitations and MLD reports (duplicate address detection), and link-local C(fe80::/64) sources. Router
    advertisements and redirects, DHCP (UDP source port 67) and DHCPv6 (547) server replies from a guest are
    logged and dropped unless O(guests[].allow_router_advertisement) / O(guests[].allow_dhcp_server) is set."
  - "Per-guest service policy, when a guest has any of O(guests[].inbound), O(guests[].outbound),
    O(guests[].host_access), O(guests[].host_services) (an empty list counts): established and related traffic
    first, IPv6 neighbour discovery, the declared services, then everything else bridged to or from the guest,
    and between it and the host, is logged and dropped. A guest without these lists gets anti-spoofing only.
    Guest to guest traffic must be allowed by the sender's O(guests[].outbound) and, when the receiver has a
    policy, by the receiver's O(guests[].inbound)."
  - "Preflight that cannot be bypassed silently: physdev rules see nothing unless C(br_netfilter) is loaded and
    C(net.bridge.bridge-nf-call-iptables) / C(-ip6tables) are 1 (per network namespace). The module loads the
    module and sets them (reported as a change). Where it cannot, it fails with the reason instead of reporting
    success while the rules would be bypassed."
  - "On the iptables backend the task owns whole chains C(NC-<name>-...) in table C(filter), hooked by one tagged
    jump each from C(FORWARD), C(INPUT) and C(OUTPUT), replaced in one C(iptables-restore --noflush) per IP family.
    Rules of other tools are never flushed, reordered or rewritten; hand edits of the owned chains are repaired."
  - "On the nftables backend the anti-spoofing (L3 and, with O(guests[].mac), L2) is in C(table bridge netconfine):
    one chain of the task hooked first from the bridge's C(prerouting), where every check is one set or verdict-map
    lookup (C(iifname . ip saddr), C(iifname . ip6 saddr), C(iifname . ether saddr), C(iifname . arp saddr ip)
    concatenations), so the per-packet cost does not grow with the number of guests."
  - "The nftables backend's service policy needs connection tracking, and comes in two forms (O(bridge_form)).
    V(conntrack), where the kernel has bridge connection tracking (C(nf_conntrack_bridge), Debian's stock kernels):
    everything in C(table bridge netconfine), the per-guest chains dispatched by port (verdict maps on C(iifname)
    / C(oifname)) from the bridge's C(forward), C(input) (guest to host) and C(output) (host to guest, where the
    egress port is known) hooks; no C(inet) chains, no packet marks, no C(br_netfilter) or C(bridge-nf-call-*)
    sysctls: the module loads C(nf_conntrack_bridge) instead (reported as a change, persisted)."
  - "V(marks), elsewhere: the policy is filtered statefully in C(table inet netconfine) (C(forward), C(input),
    C(output)) through C(br_netfilter). There bridged packets show the bridge, not the port, as interface: the bridge
    table records the ingress port in bits 8-15 and the egress port in bits 16-23 of the packet mark (the whole
    mark of frames from a guest with a policy is set; another tool's marks on bridged guest traffic are
    overwritten; at most 255 guests with a policy), and the inet rules match the bridge and those bits.
    C(br_netfilter) and the sysctls are only required when a guest has a service policy. See docs/backends.md."
author:
  - paranoid.netconfine developers (@paranoid-netconfine)
extends_documentation_fragment:
  - paranoid.netconfine.netfilter
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Check mode reads the kernel and predicts the real run exactly; it changes nothing.
  diff_mode:
    support: full
    details: The owned rules (and bridge sysctls) before and after, per unit.
  platform:
    support: full
    platforms: posix
options:
  backend:
    description:
      - Netfilter backend. V(iptables) drives C(iptables-restore) with C(-m physdev) rules (nf_tables or legacy
        variant) and C(ebtables-restore) for L2 (what a guest may send at all and, with a MAC, MAC and ARP checks).
      - V(nftables) uses a C(bridge) table of ours for L2/L3 anti-spoofing (set lookups) and the C(inet) table of
        ours for the service policy (one C(nft -f) transaction per table).
      - V(auto) uses V(nftables) where C(nft) is installed and the kernel answers it, else V(iptables). Switching
        removes what the other backend owned for this task in the same run.
    type: str
    choices: [auto, iptables, nftables]
    default: auto
  bridge_form:
    description:
      - Where the nftables backend filters the per-guest service policy (RV(bridge_form) says which a run used).
      - V(conntrack) statefully in C(table bridge netconfine) itself, with bridge connection tracking
        (C(nf_conntrack_bridge)); C(br_netfilter) is not needed. Fails, changing nothing, where the kernel cannot
        track connections in the bridge family, naming the missing module.
      - V(marks) in C(table inet netconfine) through C(br_netfilter), the ports carried in packet marks. Fails where
        the kernel has no nf_tables C(inet) family (User-Mode-Linux's kernel builds only the bridge family).
      - V(auto) asks the kernel (C(nft -c) of a C(ct state) rule in a throwaway bridge table, which commits nothing
        and loads C(nf_conntrack_bridge) where it is a module), only when some guest has a service policy, and uses
        V(conntrack) where it can, else V(marks). With O(state=rendered) (no root) it renders V(marks).
      - The run that moves a host from one form to the other removes the other form's chains in the same run.
      - Only for O(backend=nftables); another value than V(auto) with the iptables backend is an error.
    type: str
    choices: [auto, conntrack, marks]
    default: auto
  bridge:
    description:
      - The bridge the guests' ports belong to, for example V(br0). Every O(guests[].port) must be one of its ports.
      - Host to guest rules (O(guests[].host_access)) match packets leaving the host through this bridge.
    type: str
    required: true
  log_prefix:
    description:
      - Start of the prefix of every log line; the module appends C(spoof GUEST:), C(rogue GUEST:) or
        C(drop GUEST:). The whole prefix must fit in 29 characters.
    type: str
    default: "bridge "
  log_limit:
    description: Rate limit of each log rule, for example V(10/min) (units second, minute, hour, day).
    type: str
    default: 10/min
  log_burst:
    description: Burst of each log rule's rate limit (1-10000).
    type: int
    default: 5
  guests:
    description:
      - Every guest bridged on this host. A guest missing from the list has no rules of this task.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Short name of the guest; it names its chains and its log lines.
        type: str
        required: true
      port:
        description:
          - The guest's port on the bridge, as the host sees it (the UML tap V(uml-conn0), a VM's tap, a container's
            host-side veth). At most 15 characters, no wildcards.
        type: str
        required: true
      addresses:
        description:
          - IPv4 and IPv6 addresses or prefixes the guest may use as source (V(192.0.2.10), V(2001:db8::10/128)).
            Host bits in a prefix are an error; two guests may not claim overlapping addresses.
        type: list
        elements: str
        required: true
      mac:
        description:
          - The guest's MAC address (unicast). With it, L2 anti-spoofing through C(ebtables) (chains of ours,
            hooked first from the bridge's C(FORWARD) and C(INPUT)). Frames from O(guests[].port) with another
            source MAC are dropped. ARP whose sender MAC is not this one, or whose sender IP is none of the
            guest's IPv4 addresses (C(0.0.0.0) probes excepted), is dropped, so the guest cannot poison another
            guest's or the host's ARP cache. Both are logged first (prefix C(l2 GUEST:)).
        type: str
      allow_dhcp_server:
        description: Let the guest send DHCP (UDP source port 67) and DHCPv6 (547) server replies.
        type: bool
        default: false
      allow_router_advertisement:
        description: Let the guest send IPv6 router advertisements and redirects.
        type: bool
        default: false
      inbound:
        description:
          - Who may reach the guest's services through the bridge (FORWARD). Entries take O(guests[].inbound[].from).
        type: list
        elements: dict
        suboptions: &service
          protocol:
            description: V(icmp) applies to IPv4 only, V(ipv6-icmp) to IPv6 only.
            type: str
            required: true
            choices: [tcp, udp, icmp, ipv6-icmp]
          port:
            description: Destination port or range V(6000:6010) (tcp, udp). Omitted means every port.
            type: str
          from:
            description:
              - Source addresses, prefixes or host names (resolved on the host) for O(guests[].inbound) and
                O(guests[].host_services). Omitted means any.
            type: list
            elements: str
          to:
            description:
              - Destination addresses, prefixes or host names (resolved on the host) for O(guests[].outbound) and
                O(guests[].host_access). Omitted means any.
            type: list
            elements: str
      outbound:
        description: Where the guest may connect through the bridge (FORWARD). Entries take O(guests[].outbound[].to).
        type: list
        elements: dict
        suboptions: *service
      host_access:
        description:
          - What the host may open on the guest (OUTPUT through O(bridge)), for example SSH.
            Entries take O(guests[].host_access[].to), one of the guest's addresses.
        type: list
        elements: dict
        suboptions: *service
      host_services:
        description:
          - Which of the host's services the guest may use (INPUT), for example DNS on the host.
            Entries take O(guests[].host_services[].from), one of the guest's addresses.
        type: list
        elements: dict
        suboptions: *service
notes:
  - "On nftables, a spoofed packet is logged and counted in the chain C(NC-<name>-bridge-<hash>.spoof4-GUEST)
    (C(spoof6-) for IPv6, C(rogue-) for DHCP/router advertisements, C(l2-) for MAC, ARP and frames that are not
    untagged IPv4, IPv6 or ARP) of the bridge table;
    each log rule has its own rate limit. LOG lines of a network namespace other than the initial one are only
    written with C(net.netfilter.nf_log_all_netns=1); the counters always count."
  - The kernel refuses C(--physdev-out) in C(OUTPUT), where the bridge port is not known yet, so on the iptables
    backend and the V(marks) form host to guest rules match the guest's addresses leaving through O(bridge); the
    anti-spoofing rules are what make an address stand for a guest. The V(conntrack) form matches the port.
  - "Link-local IPv6 sources (C(fe80::/64)) are accepted from every guest: without L2 anti-spoofing a guest can
    claim another guest's link-local address."
seealso:
  - module: paranoid.netconfine.owner_rule
"""

EXAMPLES = r"""
# The seed's DNS guest (Paranoid Penguin, "Running Network Services under User-Mode Linux, Part III"):
# it accepts DNS over TCP and UDP, may recurse against upstream servers, may send syslog to logserver,
# and the host may SSH in; nothing else. A second guest gets anti-spoofing only.
- name: Bridge firewall of the UML host
  paranoid.netconfine.uml_bridge_filter:
    name: umlhost
    bridge: br0
    guests:
      - name: dns
        port: uml-conn0
        addresses: [198.51.100.21, "2001:db8:100::21"]
        inbound:
          - {protocol: udp, port: 53}
          - {protocol: tcp, port: 53}
        outbound:
          - {protocol: udp, port: 53, to: [203.0.113.53, 203.0.113.54]}
          - {protocol: tcp, port: 53, to: [203.0.113.53, 203.0.113.54]}
          - {protocol: udp, port: 514, to: [logserver]}
        host_access:
          - {protocol: tcp, port: 22}
      - name: www
        port: uml-conn1
        addresses: [198.51.100.22]

- name: Remove every rule of that task
  paranoid.netconfine.uml_bridge_filter:
    name: umlhost
    bridge: br0
    state: absent
"""

RETURN = r"""
backend:
  description: The backend that converged the policy.
  returned: always
  type: str
  sample: iptables
bridge_form:
  description:
    - Where the service policy is filtered on the nftables backend (O(bridge_form)); V(none) when no guest has a
      service policy (both forms are then the same anti-spoofing table, and nothing is probed).
  returned: when the backend is nftables and O(state) is not V(absent)
  type: str
  choices: [conntrack, marks, none]
  sample: conntrack
chains:
  description: Names of the chains the task owns.
  returned: always
  type: list
  elements: str
rendered:
  description: What the task owns after the run (or would own, in check mode), per unit.
  returned: always
  type: dict
scripts:
  description: The input applied (or, in check mode, that would be applied), per unit that changes.
  returned: always
  type: dict
diff:
  description: Owned rules and bridge sysctls before and after, per unit that changes.
  returned: when diff mode is on
  type: dict
resolved:
  description: Host names in the service lists and the addresses they resolved to.
  returned: when a host name was given
  type: dict
  sample: {"logserver": ["203.0.113.9"]}
field:
  description: On failure, the parameter at fault (for example C(guests[1].mac)).
  returned: failure
  type: str
"""

from ansible_collections.paranoid.netconfine.plugins.module_utils import sysctl_state
from ansible_collections.paranoid.netconfine.plugins.module_utils.bridge_model import build_policy
from ansible_collections.paranoid.netconfine.plugins.module_utils.ebtables_state import ebtables_state
from ansible_collections.paranoid.netconfine.plugins.module_utils.netfilter_task import run_module
from ansible_collections.paranoid.netconfine.plugins.module_utils.nft_bridge import FORMS, choose_form, nft_bridge_state

SERVICE_OPTIONS = {
    "protocol": dict(type="str", required=True, choices=["tcp", "udp", "icmp", "ipv6-icmp"]),
    "port": dict(type="str"),
    "from": dict(type="list", elements="str"),
    "to": dict(type="list", elements="str"),
}

GUEST_OPTIONS = dict(
    name=dict(type="str", required=True),
    port=dict(type="str", required=True),
    addresses=dict(type="list", elements="str", required=True),
    mac=dict(type="str"),
    allow_dhcp_server=dict(type="bool", default=False),
    allow_router_advertisement=dict(type="bool", default=False),
    inbound=dict(type="list", elements="dict", options=SERVICE_OPTIONS),
    outbound=dict(type="list", elements="dict", options=SERVICE_OPTIONS),
    host_access=dict(type="list", elements="dict", options=SERVICE_OPTIONS),
    host_services=dict(type="list", elements="dict", options=SERVICE_OPTIONS),
)

ARGUMENT_SPEC = dict(
    backend=dict(type="str", default="auto", choices=["auto", "iptables", "nftables"]),
    bridge_form=dict(type="str", default="auto", choices=list(FORMS)),
    bridge=dict(type="str", required=True),
    log_prefix=dict(type="str", default="bridge "),
    log_limit=dict(type="str", default="10/min"),
    log_burst=dict(type="int", default=5),
    guests=dict(type="list", elements="dict", default=[], options=GUEST_OPTIONS),
)


def main():
    run_module(ARGUMENT_SPEC, build_policy, states=(sysctl_state.make_state, ebtables_state, nft_bridge_state),
               select_form=choose_form)


if __name__ == "__main__":
    main()
