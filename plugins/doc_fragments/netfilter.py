# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Options shared by every netfilter module of paranoid.netconfine.
    DOCUMENTATION = r"""
options:
  name:
    description:
      - Name of the task's policy. It names the owned chains (C(NC-<name>-<hash>), at most 28 characters)
        and tags their jumps with C(netconfine:<name>).
      - Two tasks with different names never share a chain. Renaming a task therefore creates new chains;
        remove the old name with O(state=absent).
      - 1-64 characters of letters, digits, V(_), V(.), V(-).
    type: str
    required: true
  state:
    description:
      - V(present) converges the kernel to the declared rules.
      - V(absent) removes every chain and jump the task owns.
      - V(rendered) only returns what would be applied on an empty host. It needs no root and no kernel.
    type: str
    choices: [present, absent, rendered]
    default: present
  backend:
    description:
      - Netfilter backend. V(iptables) drives C(iptables-restore) (nf_tables or legacy variant).
      - V(nftables) drives C(nft) with a table of its own, C(inet netconfine), changed in one transaction for
        both IP families. Its semantics differ from iptables in places (an accept does not override another
        table's drop; supplementary-group membership is resolved when the task runs), see C(docs/backends.md).
      - V(auto) picks the best usable one (nftables where C(nft) works, else iptables) and returns its name in
        RV(backend). After a switch, what another backend owned for this task is removed in the same run.
    type: str
    choices: [auto, iptables, nftables]
    default: auto
  ip_version:
    description: IP families the policy applies to. The default covers IPv4 and IPv6.
    type: str
    choices: [ipv4, ipv6, both]
    default: both
  lock_timeout:
    description:
      - Seconds to wait for another netconfine run on the same host (network namespace) to finish.
        The task fails when the wait runs out.
    type: int
    default: 60
  xtables_wait:
    description: Seconds C(iptables-restore --wait) waits for the xtables lock held by other tools.
    type: int
    default: 10
  persist:
    description:
      - Keep what the task applies on disk so that it comes back at boot. The files hold exactly the text
        O(state=rendered) shows (C(iptables-restore) input per family, the C(nft) batch of our table, sysctl
        lines), one per unit, under O(persist_dir)C(/host/) (or C(/netns/NAME/) when the task runs in a named
        network namespace), written atomically; O(state=absent) removes them in the same run.
      - Where systemd runs, the unit C(netconfine-restore.service) (before C(network-pre.target), after
        C(nftables.service)) loads them at boot into netconfine's own chains and table only, with
        C(iptables-restore --noflush) and C(nft -f); it never flushes the ruleset or touches another tool's
        files. Without systemd, O(boot_hook) installs a hook that runs C(PERSIST_DIR/netconfine-boot) (the restore, then
        the namespaces of M(paranoid.netconfine.netns_service)), or run it early at boot yourself (see
        C(docs/persistence.md)).
      - A named namespace does not exist at boot; whoever recreates it runs C(netconfine-restore NAME).
    type: bool
    default: true
  persist_dir:
    description: Directory of the persisted state and of the C(netconfine-restore) script.
    type: path
    default: /etc/netconfine
  boot_hook:
    description:
      - What runs the restore at boot, with O(persist).
      - V(auto) - the systemd unit C(netconfine-restore.service) where systemd runs; elsewhere nothing (the
        result's C(persisted.boot) says so).
      - V(systemd) - that unit; an error where systemd does not run.
      - V(if-pre-up) - a script of the collection, C(/etc/network/if-pre-up.d/netconfine), running
        C(PERSIST_DIR/netconfine-boot), that ifupdown runs
        when it brings up the loopback, before any other interface is up. For hosts without systemd.
      - V(rc.local) - one line of the collection running C(PERSIST_DIR/netconfine-boot) in C(/etc/rc.local) (created, executable, when missing). It
        runs late in boot, after the network is up; prefer V(if-pre-up) where ifupdown brings the network up.
      - V(none) - no hook; a hook of the collection found at the default paths is removed.
      - A hook is removed by O(state=absent) of the last task that persists under O(persist_dir). The systemd unit
        is not installed with V(if-pre-up), V(rc.local) or V(none).
    type: str
    choices: [auto, systemd, if-pre-up, rc.local, none]
    default: auto
  boot_hook_path:
    description:
      - Path of the O(boot_hook=if-pre-up) script or of the O(boot_hook=rc.local) file (for example
        C(/etc/rc.d/rc.local)). Default C(/etc/network/if-pre-up.d/netconfine), C(/etc/rc.local).
    type: path
  fail_on_shadowing:
    description:
      - Every netfilter layer at a hook sees a packet, and an accept in one never overrides a drop in another.
        So when the task accepts something, each run reads (never writes) the layers beside the one it writes
        and reports in C(warnings), naming the table and variant, those that can drop or reject at the same hooks.
        These are legacy xtables tables (C(iptables-legacy)) beside iptables-nft and the reverse, legacy tables
        beside the nftables backend, and other nftables tables (firewalld's, Docker's, iptables-nft's) with a
        C(drop) policy or a drop or reject rule at the same hook.
      - V(true) turns those warnings into a failure before anything is applied (also in check mode).
    type: bool
    default: false
  rollback_timeout:
    description:
      - Seconds the host waits for the controller to reach it again after a change; V(0) turns this off.
      - When the run changed something, the target leaves a detached watcher that holds what was applied. The
        collection's action plugin then closes the connection (a persistent SSH master too, so pipelining or
        C(ControlPersist) cannot fake it), opens a fresh one and confirms. Without that confirmation within
        O(rollback_timeout) seconds the host puts back exactly what it held before the run (rules, persisted
        files, sysctls) by itself, and the task fails with "rolled back, the controller could not reconnect".
      - Check mode and runs that change nothing arm nothing.
    type: int
    default: 0
  rollback_token:
    description: Set by the collection's action plugin for O(rollback_timeout); not for playbooks.
    type: str
  allow_lockout:
    description:
      - Before anything is applied (also in check mode), the task refuses a policy that would cut the controller
        off, naming the field. It looks at the SSH connection the controller uses (this host's address and port as
        the controller connects to them, refined by C(SSH_CONNECTION) on the host) and refuses a DROP or REJECT
        rule that surely matches that connection, a new one or sshd's answers, with nothing before it that may let
        them through, and a DROP C(policy) of C(INPUT) or C(OUTPUT) that an established connection reaches because
        the task's chain does not accept established/related traffic first.
      - It is conservative. A match it cannot decide from the connection (an owner, a cgroup, an interface, a
        limit) never refuses, nor does a rule in a chain hooked after foreign rules (C(position=last)). It does
        nothing where the connection has no network path (C(local), C(paranoid.netconfine.netns)), and it is no
        replacement for O(rollback_timeout).
      - V(true) applies such a policy anyway. Combine it with O(rollback_timeout).
    type: bool
    default: false
  management_path:
    description:
      - Set by the collection's action plugin for the lockout guard (O(allow_lockout)); not for playbooks.
      - The controller's view of the connection, C(addresses) (this host, resolved on the controller), C(port),
        C(sources) (the controller's own address towards each). Empty addresses mean there is no network path.
    type: dict
"""
