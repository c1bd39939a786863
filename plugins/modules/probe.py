#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: probe
short_description: Prove a network policy from the host itself, by really trying as a given user
version_added: 0.1.0
description:
  - Answers questions such as "as user C(plebian), can I open a TCP connection to C(localhost:992)?" or
    "can a process running as group C(noinet) send an ICMP echo to C(192.0.2.2)?" by really trying.
  - Each probe runs in a child process of its own that drops to the probe's user, group and supplementary
    groups first (C(setgroups), C(setresgid), C(setresuid)) and only then opens its socket, so that netfilter's
    owner match, SELinux and every other policy see exactly that identity.
  - A list of probes is one task; the probes run in parallel (O(concurrency)), so a matrix of 100 probes
    costs one task and about one timeout.
  - It changes nothing on the host. It always reports C(changed=false) and behaves the same in check mode.
  - Inside a network namespace (the P(paranoid.netconfine.netns#connection) connection) the probes run in that
    namespace.
  - ICMP echo uses an unprivileged ping socket where C(net.ipv4.ping_group_range) allows the probe's group,
    and otherwise runs C(ping) (iputils, with its file capability) as the probe's user.
author:
  - paranoid.netconfine developers (@paranoid-netconfine)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Probes change nothing, so check mode runs them too.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
options:
  probes:
    description: The probes to run. Results come back in the same order.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Label of the probe in the results. Defaults to C(user -> host:port/protocol).
        type: str
      user:
        description:
          - User to probe as, a name or a numeric uid. Defaults to the user the module runs as.
          - Probing as another user needs root (C(become=true)).
        type: str
      group:
        description:
          - Group the probe B(runs as) (its effective and real gid), as after C(sg GROUP -c CMD).
            Defaults to the user's primary group.
          - This is what C(--gid-owner) without C(--suppl-groups) matches.
        type: str
      supplementary_groups:
        description:
          - The supplementary groups of the probe, exactly (V([]) for none, as C(runuser -g) gives).
          - Defaults to the user's groups in the group database (what a login session has) plus O(probes[].group).
            A group listed here but not as O(probes[].group) is membership only, what C(--suppl-groups) matches.
        type: list
        elements: str
      selinux_type:
        description:
          - SELinux type (domain) the probe runs in, like C(runcon -t TYPE); the user, role and level of the module's
            context are kept. This is the domain that SELinux checks the packets against, so that a probe proves
            what a P(paranoid.netconfine.secmark_label#module) policy grants (V(mozilla_t) may send
            C(myhttp_client_packet_t), another domain may not).
          - The child switches after the identity switch, without an exec (as C(setcon) does), so the policy must
            allow the module's domain C(process dyntransition) to TYPE. A probe whose switch is refused fails (it is
            not a denial). An error when SELinux is not enabled on the host.
        type: str
      protocol:
        description:
          - V(tcp) opens a connection, V(udp) sends one datagram and waits for an answer, V(icmp) sends one echo
            request (ICMPv6 for an IPv6 address).
        type: str
        choices: [tcp, udp, icmp]
        default: tcp
      host:
        description: Address or host name to probe, resolved on the managed host. C([::1]) style brackets are not used.
        type: str
        required: true
      port:
        description: Destination port. Required for V(tcp) and V(udp), refused for V(icmp).
        type: int
      family:
        description: Address family to use when O(probes[].host) is a name with addresses of both families.
        type: str
        choices: [any, ipv4, ipv6]
        default: any
      timeout:
        description: Seconds to wait for the connection or the answer. Defaults to O(timeout).
        type: float
      receive:
        description:
          - For V(tcp), after connecting also wait for the peer to send something (a banner, an C(@RSYNCD) greeting,
            whatever a tunnel's far end says first). Without data the outcome is V(reset) or V(timeout).
          - Useful through a tunnel whose local end accepts every connection even when the far end is unreachable.
        type: bool
        default: false
      payload:
        description: Text sent in the UDP datagram or the ICMP echo.
        type: str
      expect:
        description:
          - The expected result. V(allowed) means V(connected); V(denied) any other outcome; an outcome name that
            outcome exactly. Compared in RV(probes[].as_expected) and counted in RV(mismatches).
        type: str
        choices: [allowed, denied, connected, refused, reset, unreachable, timeout, permission-denied]
  timeout:
    description: Default per-probe timeout, in seconds.
    type: float
    default: 3
  concurrency:
    description: How many probes run at the same time.
    type: int
    default: 16
  fail_on_mismatch:
    description: Fail the task when any probe's outcome differs from its O(probes[].expect). The results are returned either way.
    type: bool
    default: false
notes:
  - A probe that cannot run (an unknown user, probing as someone else without root, no way to send ICMP) fails the task
    before or after trying; a probe whose outcome is a denial does not.
  - Owner matching (C(-m owner)) only applies to locally generated packets, so the probe must run on the host whose
    policy it proves, which is what this module does.
seealso:
  - module: paranoid.netconfine.owner_rule
  - module: paranoid.netconfine.secmark_label
"""

EXAMPLES = r"""
- name: Only root may use the stunnel tunnel on 992, only wheel members the rsync tunnel on 273 (seed 000)
  paranoid.netconfine.probe:
    probes:
      - {user: root, host: 127.0.0.1, port: 992, expect: allowed}
      - {user: root, host: "::1", port: 992, expect: allowed}
      - {user: plebian, host: 127.0.0.1, port: 992, expect: refused}
      - {user: plebian, host: "::1", port: 273, expect: refused}
      - {user: admin7, host: 127.0.0.1, port: 273, receive: true, expect: allowed}
  become: true

- name: The noinet group loses the network only under sg (seed 002)
  paranoid.netconfine.probe:
    fail_on_mismatch: true
    probes:
      - {name: "alice in a normal session", user: alice, protocol: icmp, host: 192.0.2.2, expect: allowed}
      - {name: "sg noinet -c ping", user: alice, group: noinet, protocol: icmp, host: 192.0.2.2, expect: denied}
      - {name: "bob may not ping", user: bob, protocol: icmp, host: 192.0.2.2, expect: denied}
  become: true
  register: egress

- name: Only the proxy's one domain may reach it (seed 003, a paranoid.netconfine.secmark_label policy)
  paranoid.netconfine.probe:
    fail_on_mismatch: true
    probes:
      - {selinux_type: mozilla_t, host: 192.0.2.80, port: 80, expect: allowed}
      - {selinux_type: user_t, host: 192.0.2.80, port: 80, expect: denied}
  become: true

- name: Show what was denied
  ansible.builtin.debug:
    msg: "{{ egress.probes | rejectattr('allowed') | map(attribute='name') }}"
"""

RETURN = r"""
changed:
  description: Always false; probes change nothing.
  returned: always
  type: bool
  sample: false
probes:
  description: One result per probe, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The probe's label.
      type: str
      sample: "plebian -> 127.0.0.1:992/tcp"
    user:
      description: User name the probe ran as (uid in RV(probes[].uid)).
      type: str
      sample: plebian
    uid:
      description: Numeric uid the probe ran as.
      type: int
      sample: 1001
    group:
      description: Group name the probe ran as (gid in RV(probes[].gid)).
      type: str
      sample: plebian
    gid:
      description: Numeric gid the probe ran as.
      type: int
      sample: 1001
    groups:
      description: Supplementary gids of the probe.
      type: list
      elements: int
      sample: [1001]
    protocol:
      description: V(tcp), V(udp) or V(icmp).
      type: str
      sample: tcp
    host:
      description: The host as given.
      type: str
      sample: localhost
    address:
      description: The address actually tried (empty when the name did not resolve).
      type: str
      sample: 127.0.0.1
    port:
      description: Destination port (null for icmp).
      type: int
      sample: 992
    outcome:
      description:
        - V(connected), V(refused) (TCP reset, ICMP port unreachable), V(reset) (closed or reset after connecting),
          V(unreachable) (no route, host unreachable, administratively prohibited), V(timeout) (no answer),
          V(permission-denied) (the local OUTPUT path refused to send, C(EPERM)).
        - Null when the probe failed to run (RV(probes[].failed)).
      type: str
      sample: refused
    allowed:
      description: True when RV(probes[].outcome) is V(connected).
      type: bool
      sample: false
    error:
      description: The error text the kernel (or ping) gave; empty when connected.
      type: str
      sample: Connection refused
    selinux_type:
      description: O(probes[].selinux_type) as given.
      type: str
      returned: when O(probes[].selinux_type) was given
      sample: mozilla_t
    received:
      description: The first bytes the peer sent (up to 200 characters), with O(probes[].receive), for udp and icmp.
      type: str
      returned: when something was received
      sample: "@RSYNCD: 31.0"
    elapsed:
      description: Seconds the attempt took, including the fork and the identity switch.
      type: float
      sample: 0.004
    expect:
      description: O(probes[].expect) as given, or null.
      type: str
      sample: refused
    as_expected:
      description: Whether the outcome matches O(probes[].expect); null without O(probes[].expect).
      type: bool
      sample: true
    failed:
      description: True when the probe itself could not run (the error says why).
      type: bool
      sample: false
mismatches:
  description: Number of probes whose outcome differs from their O(probes[].expect).
  returned: always
  type: int
  sample: 0
outcomes:
  description: How many probes ended with each outcome.
  returned: always
  type: dict
  sample: {"connected": 3, "refused": 2, "reset": 0, "unreachable": 0, "timeout": 0, "permission-denied": 0}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.paranoid.netconfine.plugins.module_utils import reachability
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError

ARGUMENT_SPEC = dict(
    probes=dict(type="list", elements="dict", required=True, options=dict(
        name=dict(type="str"),
        user=dict(type="str"),
        group=dict(type="str"),
        supplementary_groups=dict(type="list", elements="str"),
        selinux_type=dict(type="str"),
        protocol=dict(type="str", default="tcp", choices=list(reachability.PROTOCOLS)),
        host=dict(type="str", required=True),
        port=dict(type="int"),
        family=dict(type="str", default="any", choices=list(reachability.FAMILIES)),
        timeout=dict(type="float"),
        receive=dict(type="bool", default=False),
        payload=dict(type="str"),
        expect=dict(type="str", choices=list(reachability.EXPECTATIONS)),
    )),
    timeout=dict(type="float", default=3),
    concurrency=dict(type="int", default=16),
    fail_on_mismatch=dict(type="bool", default=False),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        if module.params["concurrency"] < 1:
            raise NetconfineError("must be at least 1", "concurrency")
        probes = reachability.build_probes(module.params["probes"], module.params["timeout"])
    except NetconfineError as exc:
        module.fail_json(msg=str(exc), field=exc.field)
    results = reachability.run_probes(probes, module.params["concurrency"])
    outcomes, mismatches = reachability.summarise(results)
    result = dict(changed=False, probes=results, outcomes=outcomes, mismatches=mismatches)
    broken = [r for r in results if r["failed"]]
    if broken:
        module.fail_json(msg="%d probe(s) could not run: %s" % (
            len(broken), "; ".join("%s: %s" % (r["name"], r["error"]) for r in broken)), **result)
    if mismatches and module.params["fail_on_mismatch"]:
        module.fail_json(msg="%d probe(s) differ from what was expected: %s" % (mismatches, "; ".join(
            "%s: expected %s, got %s" % (r["name"], r["expect"], r["outcome"])
            for r in results if r["as_expected"] is False)), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
