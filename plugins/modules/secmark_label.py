#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: secmark_label
short_description: Let only chosen SELinux domains use the network paths you label (packet types and SECMARK)
version_added: 0.1.0
description:
  - SELinux does not know applications, it knows domains. This module gives a network path (a proxy, a port, a
    peer) a packet type of its own that only the domains you name may C(send) and C(recv), and labels the packets
    of that path with it. An application firewall per domain, as the seed article describes.
  - The policy part (O(packet_types), O(allow_unlabeled)) becomes one CIL module per task, C(netconfine_<name>),
    installed with C(semodule -X PRIORITY -i) only when the SHA-256 of its text differs from the checksum
    C(semodule --list-modules=full --checksum) reports for it, so an unchanged module is never reinstalled (a
    reinstall rebuilds the whole policy, 10-40 s). A module that does not compile is reported with the
    compiler's message and the option behind the failing line; the policy store is left unchanged.
  - The label part (O(labels)) becomes one chain per direction, laid out like refpolicy's netfilter skeleton.
    The connection's label is restored first for RELATED and ESTABLISHED packets, then each label rule sets its
    packet type, then the label of NEW packets is saved to the connection. Replies and related packets thus carry
    the label of the packet that opened the connection.
  - On O(backend=iptables) the chains are in table C(mangle), hooked first from OUTPUT, INPUT and FORWARD, with
    C(CONNSECMARK --restore), C(SECMARK --selctx CONTEXT) and C(CONNSECMARK --save), replaced in one atomic
    C(iptables-restore --noflush) per family.
  - On O(backend=nftables) they are chains of C(table inet netconfine) jumped to from base chains at the
    priority of iptables' C(mangle) table (C(mangle_output) C(type route hook output priority -151), C(mangle_input)
    and C(mangle_forward) C(type filter ... priority -151)). Each packet type is a secmark object of the chain
    (C(secmark NC-...-output-1a2b3c4d.myhttp_client_packet_t { "system_u:object_r:myhttp_client_packet_t:s0" })),
    and the rules are C(ct state established,related meta secmark set ct secmark), C(meta secmark set "OBJECT")
    per label and C(ct state new ct secmark set meta secmark). Objects and rules change in one C(nft -f)
    transaction; an object goes only after the last rule naming it.
  - V(auto) picks V(nftables) where the kernel accepts secmark objects (asked with C(nft -c), which commits
    nothing; the kernel needs SELinux active for them) and V(iptables) otherwise.
  - Order. On O(state=present) the module is installed before any rule names its types. On O(state=absent)
    the rules go first, then the module.
  - B(The unlabeled_t hazard.) The moment any SECMARK rule exists, every packet no rule labelled is
    C(unlabeled_t), and most domains (C(sshd_t) among them) may not send or receive it. On an enforcing host
    that cuts the SSH session you are converging over. The module therefore refuses O(labels) unless
    O(allow_unlabeled) is set, or a label covers TCP port O(ssh_port) (direction V(input), destination port,
    or V(output), source port), or O(unlabeled=deny) says that this is really wanted.
  - SELinux must be enabled (C(/sys/fs/selinux/enforce) exists, permissive or enforcing). Otherwise the task
    fails saying so. O(state=rendered) works on any host without root.
  - Drift is repaired. A SECMARK rule deleted by hand, a moved jump, a module removed or replaced with
    C(semodule) are put back on the next run, and that run reports C(changed).
author:
  - paranoid.netconfine developers (@paranoid-netconfine)
extends_documentation_fragment:
  - paranoid.netconfine.netfilter
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Check mode reads the store and the kernel and predicts the real run; it changes nothing.
  diff_mode:
    support: full
    details: The module (checksum and CIL) and the owned rules before and after.
  platform:
    support: full
    platforms: posix
notes:
  - The labels need the kernel's SECMARK and CONNSECMARK targets (V(iptables)) or nftables secmark objects and
    C(ct secmark) (V(nftables), Debian's stock kernels have both). Pinning O(backend=nftables) on a kernel that
    refuses secmark objects fails saying why, before anything is installed.
  - Domains are SELinux types of processes (C(mozilla_t)). The attribute V(domain) (every domain) is accepted in
    O(allow_unlabeled.domains). Every other name must be a type the loaded policy defines; it is checked
    before anything is installed.
  - In Debian's policy C(unconfined_t) may send and receive every packet type, so a new packet type confines
    the other, confined domains, not root's unconfined shell.
options:
  priority:
    description: Priority of the module in the policy store (C(semodule -X)), 1-999.
    type: int
    default: 400
  packet_types:
    description: New packet types, each with the domains allowed to send and receive packets of that type.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Type name, lower-case letters, digits and V(_), ending in V(_packet_t).
        type: str
        required: true
      kind:
        description: Adds the type to C(client_packet_type) or C(server_packet_type) (and always C(packet_type)).
        type: str
        choices: [client, server]
        default: client
      domains:
        description: Domains granted C(packet { send recv }) on the type.
        type: list
        elements: str
        default: []
  allow_unlabeled:
    description:
      - Renders the article's C((allow domain unlabeled_t (packet (send recv)))) for the given domains.
      - A safe start. Unmatched packets keep working, and with O(allow_unlabeled.audit) every one is logged as a
        granted AVC, so you can add the labels that are missing and then remove this.
    type: dict
    suboptions:
      domains:
        description: Domains allowed C(unlabeled_t) packets. The default V(domain) means all domains.
        type: list
        elements: str
      audit:
        description: Also render C(auditallow), so each use is logged.
        type: bool
        default: true
  unlabeled:
    description:
      - V(check) refuses O(labels) that would cut the SSH session (see the description).
      - V(deny) accepts them. Unlabeled packets are then denied to every domain that has no rule for
        C(unlabeled_t).
    type: str
    choices: [check, deny]
    default: check
  ssh_port:
    description: The management port that V(check) protects.
    type: int
    default: 22
  labels:
    description: Packets to label. Each label becomes one SECMARK rule per IP family (and address).
    type: list
    elements: dict
    default: []
    suboptions:
      direction:
        description: V(output) for locally generated packets, V(input) for packets to this host, V(forward).
        type: str
        choices: [output, input, forward]
        default: output
      packet_type:
        description:
          - The type to label with, one of O(packet_types) or an existing one (C(ssh_server_packet_t)).
          - The context is C(system_u:object_r:TYPE:s0).
        type: str
      context:
        description: A full context C(user:role:type:level) instead of O(labels[].packet_type).
        type: str
      protocol:
        description: V(tcp), V(udp), V(sctp), V(icmp), V(ipv6-icmp), V(udplite) or V(all).
        type: str
      source:
        description: Source addresses or CIDRs, as in M(paranoid.netconfine.owner_rule). C(!) negates.
        type: list
        elements: str
      destination:
        description: Destination addresses or CIDRs, as in M(paranoid.netconfine.owner_rule). C(!) negates.
        type: list
        elements: str
      source_port:
        description: Port or range C(low:high), needs O(labels[].protocol).
        type: str
      destination_port:
        description: Port or range C(low:high), needs O(labels[].protocol).
        type: str
      ip_version:
        description: Restrict this label to one IP family.
        type: str
        choices: [ipv4, ipv6, both]
        default: both
seealso:
  - module: paranoid.netconfine.owner_rule
  - name: semodule(8)
    description: How SELinux policy modules are installed, listed with their checksums and removed.
    link: https://man7.org/linux/man-pages/man8/semodule.8.html
  - name: SECMARK and CONNSECMARK targets
    description: The iptables-extensions(8) targets the mangle chains of the iptables form use.
    link: https://man7.org/linux/man-pages/man8/iptables-extensions.8.html
"""

EXAMPLES = r"""
# The article's scenario: only Firefox (mozilla_t) may reach the company proxy (192.0.2.80:80).
# Other HTTP clients have http_client_packet_t but not the new myhttp_client_packet_t.
- name: Only mozilla_t may talk to the proxy
  paranoid.netconfine.secmark_label:
    name: proxy
    packet_types:
      - name: myhttp_client_packet_t
        kind: client
        domains: [mozilla_t]
    # start permissive about everything not yet labelled, and audit it
    allow_unlabeled:
      domains: [domain]
      audit: true
    labels:
      - direction: output
        protocol: tcp
        destination: [192.0.2.80]
        destination_port: "80"
        packet_type: myhttp_client_packet_t

# Label SSH instead of allowing unlabeled_t (then every other unlabelled packet is denied).
- name: SSH keeps working without allow_unlabeled
  paranoid.netconfine.secmark_label:
    name: ssh
    backend: nftables
    labels:
      - direction: input
        protocol: tcp
        destination_port: "22"
        packet_type: ssh_server_packet_t

# See what would be installed, on any machine, without root
- name: Render only
  paranoid.netconfine.secmark_label:
    name: proxy
    state: rendered
    backend: iptables
    packet_types:
      - name: myhttp_client_packet_t
        domains: [mozilla_t]
    allow_unlabeled: {}
  register: proxy_policy
"""

RETURN = r"""
changed:
  description: Whether the module or any rule was (or in check mode would be) changed.
  returned: always
  type: bool
backend:
  description: The netfilter backend used.
  returned: always
  type: str
  sample: nftables
chains:
  description: Names of the owned chains (in table C(mangle) on iptables, in C(table inet netconfine) on nftables).
  returned: always
  type: list
  elements: str
  sample: ["NC-proxy-output-1a2b3c4d"]
rendered:
  description:
    - What the task owns once applied, per unit. C(selinux policy) holds the module's checksum and CIL,
      C(iptables 4) and C(iptables 6) the owned mangle chains, C(nftables ruleset) the secmark objects, base
      chains and chains in C(table inet netconfine).
  returned: always
  type: dict
scripts:
  description: The C(semodule) command line and the C(iptables-restore --noflush) or C(nft -j -f) input applied (or that would be).
  returned: always
  type: dict
  sample: {"selinux policy": "semodule -X 400 -i netconfine_proxy.cil\n"}
diff:
  description: Module and rules before and after, per unit that changes.
  returned: when diff mode is on
  type: dict
resolved:
  description: Hostnames in O(labels[].source) / O(labels[].destination) and the addresses they resolved to.
  returned: when a hostname was given
  type: dict
field:
  description: On failure, the parameter at fault (for example C(packet_types[0].domains[0])).
  returned: failure
  type: str
"""

from ansible_collections.paranoid.netconfine.plugins.module_utils import selinux_store
from ansible_collections.paranoid.netconfine.plugins.module_utils.netfilter_task import run_module
from ansible_collections.paranoid.netconfine.plugins.module_utils.secmark_model import build_policy

LABEL_OPTIONS = dict(
    direction=dict(type="str", default="output", choices=["output", "input", "forward"]),
    packet_type=dict(type="str"),
    context=dict(type="str"),
    protocol=dict(type="str"),
    source=dict(type="list", elements="str"),
    destination=dict(type="list", elements="str"),
    source_port=dict(type="str"),
    destination_port=dict(type="str"),
    ip_version=dict(type="str", default="both", choices=["ipv4", "ipv6", "both"]),
)

ARGUMENT_SPEC = dict(
    priority=dict(type="int", default=400),
    packet_types=dict(type="list", elements="dict", default=[], options=dict(
        name=dict(type="str", required=True),
        kind=dict(type="str", default="client", choices=["client", "server"]),
        domains=dict(type="list", elements="str", default=[]),
    )),
    allow_unlabeled=dict(type="dict", options=dict(
        domains=dict(type="list", elements="str"),
        audit=dict(type="bool", default=True),
    )),
    unlabeled=dict(type="str", default="check", choices=["check", "deny"]),
    ssh_port=dict(type="int", default=22),
    labels=dict(type="list", elements="dict", default=[], options=LABEL_OPTIONS),
)


def main():
    run_module(ARGUMENT_SPEC, build_policy, states=(selinux_store.make_state,), backends=("nftables", "iptables"))


if __name__ == "__main__":
    main()
