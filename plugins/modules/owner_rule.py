#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: owner_rule
short_description: Allow or deny network use by the user, group or cgroup that owns the socket
version_added: 0.1.0
description:
  - Manages an ordered list of netfilter rules that match the owner of locally generated packets
    (C(-m owner), C(-m cgroup)). In short, who on this host may connect where.
  - The task owns one chain per table and IP family, named C(NC-<name>-<hash>), plus one tagged jump into it
    from the built-in chain O(chain). The whole chain is replaced in one atomic
    C(iptables-restore --noflush) per family; rules of other tools (Docker, firewalld, kube-proxy, fail2ban)
    are never flushed, reordered or rewritten.
  - On the nftables backend the chain lives in the collection's own table C(inet netconfine), both families
    change in one C(nft -f) transaction, and runs of owner rules that differ only in ids and ports become one
    set or verdict-map lookup. See O(backend) for how its meaning differs from iptables.
  - Users and groups are resolved to numeric ids on the managed host. C(localhost) means both
    C(127.0.0.1) and C(::1), so a listener on C([::1]) is covered too. O(rules[].destination_type=local)
    means every address of the host, which is what a listener bound to all addresses needs.
  - Rule keys use the names of M(ansible.builtin.iptables) where the meaning is the same, so existing
    tasks migrate by moving them into one O(rules) list.
  - Drift is repaired. A rule edited or deleted by hand in the owned chain, or a jump that was moved or
    removed, is put back on the next run, and that run reports C(changed).
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
    details: The owned rules before and after, per backend unit.
  platform:
    support: full
    platforms: posix
options:
  chain:
    description:
      - Built-in chain that jumps into the owned chain.
      - Owner matching works only where the kernel knows the sending socket, for locally generated packets.
        That is C(OUTPUT) in table C(filter), and C(OUTPUT) or C(POSTROUTING) in C(mangle) and C(nat).
        Any other chain is refused, with that reason.
    type: str
    default: OUTPUT
  table:
    description: Table of the owned chain.
    type: str
    choices: [filter, mangle, nat]
    default: filter
  position:
    description:
      - Where the jump sits in O(chain). V(first) places it before every rule not made by netconfine.
        V(last) places it after every such rule. The position is enforced on every run.
    type: str
    choices: [first, last]
    default: first
  policy:
    description:
      - Manage the policy of the built-in O(chain) (table C(filter) only).
      - V(drop) also puts C(ctstate RELATED,ESTABLISHED -j ACCEPT) first in the owned chain, so replies to
        accepted connections still flow.
      - The task records in the kernel that it owns the policy (the first rule of its chain is a
        counter-only rule commented C(netconfine:policy)). A policy the task set is released to C(ACCEPT) when
        the task no longer declares it, or with O(state=absent), even if that task does not repeat O(policy).
        A policy set by anyone else is never changed.
      - Omit it to leave the built-in policy alone.
    type: str
    choices: [accept, drop]
  rules:
    description:
      - Ordered rules. The first rule that matches decides. A packet that matches no rule returns to the
        built-in chain.
    type: list
    elements: dict
    default: []
    suboptions:
      jump:
        description:
          - Verdict for matching packets.
          - V(LOG) writes a kernel log line and goes on with the next rule. Inside a network namespace
            other than the initial one the kernel drops those lines unless the machine-wide sysctl
            C(net.netfilter.nf_log_all_netns) is V(1) (containers, the C(netns) connection).
            The rule's packet counter counts its hits there all the same.
          - Every rule has a packet counter on the V(iptables) backend (C(iptables -L CHAIN -v -x)); on
            V(nftables) every rule that logs, rejects or drops carries a C(counter) statement
            (C(nft list table inet netconfine)). Counter values never count as a change.
        type: str
        required: true
        choices: [ACCEPT, DROP, REJECT, LOG, RETURN]
      uid_owner:
        description:
          - User name, numeric uid or uid range (V(1000-1999)) of the socket owner.
          - Prefix with V(!) to negate. An unknown user name is an error, and nothing is changed.
          - In check mode only, an unknown name is a warning instead (it does not exist yet; an earlier task
            such as M(ansible.builtin.user) is assumed to create it), and the task predicts a change. The same
            holds for group names in O(rules[].gid_owner).
        type: str
      gid_owner:
        description:
          - Group name, numeric gid or gid range. Prefix with V(!) to negate.
          - Without O(rules[].suppl_groups) it matches the group the process runs as (its effective group).
            For example, C(sg noinet -c CMD) runs CMD as group C(noinet).
        type: str
      suppl_groups:
        description:
          - Make O(rules[].gid_owner) match any group of the process, primary or supplementary.
            Then every member of C(wheel) counts, not only processes running as group C(wheel).
        type: bool
        default: false
      socket_exists:
        description: Match only packets that have (V(true)) or do not have (V(false)) an owning socket.
        type: bool
      cgroup:
        description:
          - cgroup v2 path of the sending process, for example V(/system.slice/stunnel4.service).
            Prefix with V(!) to negate.
          - The path must exist when the rule is applied. Sockets opened before then keep their old
            classification until the service restarts.
        type: str
      pid_owner:
        description: Refused. Linux removed this match in 2.6.14. Use O(rules[].cgroup) or a network namespace.
        type: raw
      sid_owner:
        description: Refused. Linux removed this match in 2.6.14. Use O(rules[].cgroup) or a network namespace.
        type: raw
      protocol:
        description: V(tcp), V(udp), V(icmp) (IPv4 only), V(ipv6-icmp) (IPv6 only), V(sctp), V(udplite) or V(all).
        type: str
      source:
        description:
          - Source addresses. Each item is an address, a CIDR (host bits must be zero), V(localhost) or a
            hostname, which is resolved on the managed host and reported in RV(resolved). Prefix with V(!) to negate.
        type: list
        elements: str
      destination:
        description:
          - Destination addresses, in the same forms as O(rules[].source).
          - V(localhost) is C(127.0.0.1) and C(::1) only. A listener bound to all addresses
            (C(0.0.0.0), C([::])) is also reached at C(127.0.0.2), at the host's own addresses and at any
            address added later. To guard such a listener use O(rules[].destination_type=local) instead.
        type: list
        elements: str
      destination_type:
        description:
          - V(local) matches packets to B(any address of this host), as the kernel's routing tables classify
            it when the packet is sent. That is all of C(127.0.0.0/8), C(::1), and every address of every
            interface (global and link-local IPv6 included), also addresses added after the task ran.
          - V(!local) matches packets to any other destination (traffic that leaves the host).
          - Rendered C(-m addrtype --dst-type LOCAL) on iptables and C(fib daddr type local) on nftables,
            for both IP families. It can be combined with O(rules[].destination).
        type: str
      source_port:
        description: Port or range V(low:high). Needs a port O(rules[].protocol). Prefix with V(!) to negate.
        type: str
      destination_port:
        description: Port or range V(low:high). Needs a port O(rules[].protocol). Prefix with V(!) to negate.
        type: str
      out_interface:
        description: Outgoing interface (at most 15 characters, trailing V(+) as wildcard). Prefix with V(!) to negate.
        type: str
      icmp_type:
        description: ICMP or ICMPv6 type name (V(echo-request)) or number V(type[/code]). Prefix with V(!) to negate.
        type: str
      ctstate:
        description: Conntrack states (V(NEW), V(ESTABLISHED), V(RELATED), V(INVALID), V(UNTRACKED)).
        type: list
        elements: str
      reject_with:
        description:
          - ICMP reply for V(REJECT). Give the neutral name (V(port-unreachable), V(admin-prohibited),
            V(tcp-reset), ...) or the iptables name of either family. It is translated for each family.
        type: str
      log_prefix:
        description: Prefix of V(LOG) lines, at most 29 characters.
        type: str
      log_level:
        description: Syslog level of V(LOG) lines, V(0)-V(7) or a name such as V(info).
        type: str
      limit:
        description: Match at most this rate, for example V(5/min).
        type: str
      limit_burst:
        description: Burst for O(rules[].limit).
        type: int
      comment:
        description: Comment kept with the rule in the kernel.
        type: str
      ip_version:
        description: Restrict this rule to one family.
        type: str
        choices: [ipv4, ipv6, both]
        default: both
notes:
  - The kernel matches the owner of B(locally generated) packets only. Forwarded traffic and incoming
    packets carry no owner.
  - Other tools' rules run before the jump when O(position=last), or after the owned chain when a packet
    returns from it. A V(DROP) or V(REJECT) here is final.
seealso:
  - module: ansible.builtin.iptables
  - name: iptables-extensions(8) owner match
    description: The kernel match this module drives.
    link: https://man7.org/linux/man-pages/man8/iptables-extensions.8.html
"""

EXAMPLES = r"""
- name: Only root may use the stunnel listener on port 992, at every local address (IPv4 and IPv6)
  paranoid.netconfine.owner_rule:
    name: stunnel-992
    rules:
      - protocol: tcp
        destination_type: local     # 127.0.0.0/8, ::1 and every address of the host, also added later
        destination_port: "992"
        uid_owner: "!root"
        jump: REJECT

- name: Only members of wheel (primary or supplementary) may use the rsync tunnel on 273
  paranoid.netconfine.owner_rule:
    name: rsync-273
    rules:
      - protocol: tcp
        destination_type: local
        destination_port: "273"
        gid_owner: "!wheel"
        suppl_groups: true
        jump: REJECT
        reject_with: tcp-reset

- name: Drop-by-default OUTPUT; the tunnel daemon may reach strudel and root may use the listener
  paranoid.netconfine.owner_rule:
    name: crueller-output
    policy: drop
    rules:
      - protocol: tcp
        destination: 192.0.2.20
        destination_port: "992"
        uid_owner: root
        jump: ACCEPT
      - protocol: tcp
        destination_type: local
        destination_port: "992"
        uid_owner: root
        jump: ACCEPT

- name: Processes run as group noinet (sg noinet -c CMD) get no network; log and allow ping only for alice
  paranoid.netconfine.owner_rule:
    name: user-egress
    rules:
      - gid_owner: noinet
        jump: REJECT
      - protocol: icmp
        icmp_type: echo-request
        uid_owner: alice
        jump: ACCEPT
      - protocol: icmp
        icmp_type: echo-request
        jump: REJECT
      - uid_owner: root
        jump: LOG
        log_prefix: "root-egress: "
        limit: 10/min

- name: Show the rules that would be applied, without root or a kernel
  paranoid.netconfine.owner_rule:
    name: stunnel-992
    state: rendered
    rules:
      - {protocol: tcp, destination_type: local, destination_port: "992", uid_owner: "!root", jump: REJECT}

- name: Remove everything the task owned
  paranoid.netconfine.owner_rule:
    name: stunnel-992
    state: absent
"""

RETURN = r"""
changed:
  description: Whether the kernel's rules differed from the declared ones (and were, outside check mode, replaced).
  returned: always
  type: bool
backend:
  description: The backend that converged the policy.
  returned: always
  type: str
  sample: iptables
chains:
  description: The chains this task owns.
  returned: always
  type: list
  elements: str
  sample: [NC-stunnel-992-4539feff]
persisted:
  description:
    - Where the task's state is kept for boot (O(persist)) and what restores it. Its files change with the
      rules, and the diff shows them.
  returned: when O(persist=true) and O(state) is not V(rendered)
  type: dict
  contains:
    dir:
      description: The directory of this task's files.
      type: str
      sample: /etc/netconfine/host
    boot:
      description: What loads them at boot.
      type: str
      sample: systemd unit netconfine-restore.service
rendered:
  description:
    - Per backend and unit, the owned state (what is wanted) as C(iptables-save) prints it, per family
      (C(iptables 4), C(iptables 6)), or as nft rules for the whole table (C(nftables ruleset)).
  returned: always
  type: dict
  sample: {"iptables 4": "*filter\n:NC-stunnel-992-4539feff -\n-A NC-stunnel-992-4539feff -d 127.0.0.1/32 ..."}
scripts:
  description:
    - The input applied (or, in check mode, that would be applied), per unit. C(iptables-restore --noflush)
      text, or the C(nft -f) batch (JSON; nft syntax when it holds a cgroup match).
  returned: always
  type: dict
diff:
  description: Owned rules before and after, per unit that changes.
  returned: when diff mode is on
  type: dict
resolved:
  description: Hostnames in O(rules[].source) / O(rules[].destination) and the addresses they resolved to.
  returned: when a hostname was given
  type: dict
  sample: {"strudel": ["192.0.2.20"]}
field:
  description: On failure, the parameter at fault (for example C(rules[2].uid_owner)).
  returned: failure
  type: str
"""

from ansible_collections.paranoid.netconfine.plugins.module_utils.netfilter_task import run_module
from ansible_collections.paranoid.netconfine.plugins.module_utils.owner_model import build_policy

RULE_OPTIONS = dict(
    jump=dict(type="str", required=True, choices=["ACCEPT", "DROP", "REJECT", "LOG", "RETURN"]),
    uid_owner=dict(type="str"),
    gid_owner=dict(type="str"),
    suppl_groups=dict(type="bool", default=False),
    socket_exists=dict(type="bool"),
    cgroup=dict(type="str"),
    pid_owner=dict(type="raw"),
    sid_owner=dict(type="raw"),
    protocol=dict(type="str"),
    source=dict(type="list", elements="str"),
    destination=dict(type="list", elements="str"),
    destination_type=dict(type="str"),
    source_port=dict(type="str"),
    destination_port=dict(type="str"),
    out_interface=dict(type="str"),
    icmp_type=dict(type="str"),
    ctstate=dict(type="list", elements="str"),
    reject_with=dict(type="str"),
    log_prefix=dict(type="str"),
    log_level=dict(type="str"),
    limit=dict(type="str"),
    limit_burst=dict(type="int"),
    comment=dict(type="str"),
    ip_version=dict(type="str", default="both", choices=["ipv4", "ipv6", "both"]),
)

ARGUMENT_SPEC = dict(
    chain=dict(type="str", default="OUTPUT"),
    table=dict(type="str", default="filter", choices=["filter", "mangle", "nat"]),
    position=dict(type="str", default="first", choices=["first", "last"]),
    policy=dict(type="str", choices=["accept", "drop"]),
    rules=dict(type="list", elements="dict", default=[], options=RULE_OPTIONS),
)


def main():
    run_module(ARGUMENT_SPEC, build_policy)


if __name__ == "__main__":
    main()
