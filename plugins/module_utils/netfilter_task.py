# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every netfilter module's main() shares: common options, backend
choice, state handling and turning engine errors into fail_json.

Private to the paranoid.netconfine collection. A module is its docs, its
own argument spec and one call: ``run_module(spec, build_policy)``, plus
``states=`` (factories of the engine's non-netfilter states, see ``engine``)
when its policy has ``resources``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import functools
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.paranoid.netconfine.plugins.module_utils import (
    engine, fields, identity, persistence, shadowing)
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError

COMMON_ARGS = dict(
    name=dict(type="str", required=True),
    state=dict(type="str", default="present", choices=["present", "absent", "rendered"]),
    backend=dict(type="str", default="auto", choices=["auto", "iptables", "nftables"]),
    ip_version=dict(type="str", default="both", choices=["ipv4", "ipv6", "both"]),
    lock_timeout=dict(type="int", default=60),
    xtables_wait=dict(type="int", default=10),
    persist=dict(type="bool", default=True),
    persist_dir=dict(type="path", default=persistence.PERSIST_DIR),
    boot_hook=dict(type="str", default="auto", choices=list(persistence.BOOT_HOOKS)),
    boot_hook_path=dict(type="path"),
    fail_on_shadowing=dict(type="bool", default=False),
    rollback_timeout=dict(type="int", default=0),
    rollback_token=dict(type="str", no_log=False),
    allow_lockout=dict(type="bool", default=False),
    management_path=dict(type="dict"),
)


def _runner(module):
    """``run(argv, data=None) -> (rc, out, err)``. A command that dies before it has read its input makes
    writing ``data`` fail (EPIPE): that is an rc of -1 with the reason, so the engine fails the task
    and puts back what it changed, instead of AnsibleModule.run_command ending the module on the spot
    ("Error executing command.") with an earlier family or seam already applied."""
    def run(argv, data=None):
        try:
            return module.run_command(argv, data=data, binary_data=True, check_rc=False, handle_exceptions=False)
        except OSError as exc:
            return -1, "", "%s ended before it read all its input, or could not be run: %s" % (argv[0], exc)
    return run


def iptables_backend(module, run):
    # each backend's module is imported by its factory: a run loads (and the host compiles) the code of the
    # backend it converges with, and of the other one only where that holds something (engine.Standby)
    from ansible_collections.paranoid.netconfine.plugins.module_utils.iptables_backend import IptablesBackend

    bins, legacy = {}, {}
    for family, prefix in ((4, "iptables"), (6, "ip6tables")):
        for found, variant in ((bins, ""), (legacy, "-legacy")):
            save = module.get_bin_path(prefix + variant + "-save")
            restore = module.get_bin_path(prefix + variant + "-restore")
            found[family] = (save, restore) if save and restore else None
    return IptablesBackend(run, bins, wait=module.params["xtables_wait"], nft=module.get_bin_path("nft"), legacy=legacy)


def nftables_backend(module, run):
    from ansible_collections.paranoid.netconfine.plugins.module_utils.nft_backend import NftablesBackend

    return NftablesBackend(run, module.get_bin_path("nft"), unshare=module.get_bin_path("unshare"))


# name -> factory(module, run) -> backend, or None where the host cannot run it.
BACKENDS = {"iptables": iptables_backend, "nftables": nftables_backend}
AUTO_ORDER = ("nftables", "iptables")
# name -> holds(layers): whether the kernel holds anything that backend could own (engine.Standby)
HOLDS = {
    "iptables": lambda layers: any(layers.xtables_held(family) is not False for family in (4, 6)),
    "nftables": lambda layers: bool(layers.nft_table(fields.TABLE_FAMILY, fields.TABLE_NAME)),
}


def _usable(module, run, name, policy, why):
    """Backend ``name`` for this task, or None where it is not usable here (``why[name]`` then says why).

    A backend whose ``refuses(policy)`` gives a reason (this host's kernel cannot hold what the policy
    needs on it, e.g. nftables secmark objects without SELinux) counts as not usable for this task.
    """
    factory = BACKENDS.get(name)
    backend = factory(module, run) if factory else None
    if backend is None:
        return None
    if not backend.usable():
        if getattr(backend, "unusable_reason", None):
            why[name] = ": %s" % backend.unusable_reason
        return None
    refuses = getattr(backend, "refuses", None)
    refusal = refuses(policy) if refuses and policy is not None else None
    if refusal:
        why[name] = ": %s" % refusal
        return None
    return backend


def choose_backends(module, run, order=AUTO_ORDER, policy=None):
    """The backend to converge with, then the others as ``engine.Standby`` (to clean up after a switch).

    ``order``: the backends the module can render, best first (default: all of AUTO_ORDER); ``backend:
    auto`` takes the first usable one.
    """
    wanted = module.params["backend"]
    if wanted not in ("auto",) + tuple(order):
        raise NetconfineError("backend %s cannot render this module yet (use %s)" % (wanted, " or ".join(order)),
                              "backend")
    why, first = {}, None
    for name in (order if wanted == "auto" else (wanted,)):
        first = _usable(module, run, name, policy, why)
        if first is not None:
            break
    if first is None:
        if wanted == "auto":
            raise NetconfineError("no usable netfilter backend: install iptables or nftables", "backend")
        raise NetconfineError("backend %s is not available on this host%s" % (wanted, why.get(wanted, "")),
                              "backend")
    return [first] + [engine.Standby(name, functools.partial(_usable, module, run, name, policy, {}), HOLDS[name])
                      for name in order if name != first.name and name in BACKENDS]


def _parse_save(text):
    from ansible_collections.paranoid.netconfine.plugins.module_utils.iptables_backend import parse_save

    return parse_save(text)


def layers(module, run):
    """What the task reads (never writes) of the other netfilter layers, to warn about shadowing."""
    return shadowing.Layers(run, _parse_save, nft=module.get_bin_path("nft"),
                            legacy_save={4: module.get_bin_path("iptables-legacy-save"),
                                         6: module.get_bin_path("ip6tables-legacy-save")})


def _installed(backend):
    probe = getattr(backend, "installed", None)
    return probe() if probe else backend.usable()


def persist_state(module, seams):
    """The persistence state for this run (``persist: true``), or None (and a warning where it cannot)."""
    if not module.params["persist"]:
        return None
    where = persistence.namespace_name()
    if where is None:
        module.warn("persist: this network namespace has no name under %s, so nothing could restore it at "
                    "boot; the policy is applied but not persisted" % persistence.NETNS_RUN_DIR)
        return None
    hook, systemd = module.params["boot_hook"], os.path.isdir(persistence.SYSTEMD_RUNNING)
    if hook == "systemd" and not systemd:
        raise NetconfineError("systemd does not run on this host (no %s): choose if-pre-up, rc.local or none"
                              % persistence.SYSTEMD_RUNNING, "boot_hook")
    if module.params["boot_hook_path"] and hook not in persistence.HOOK_PATHS:
        raise NetconfineError("is the path of the if-pre-up or rc.local hook; boot_hook is %s" % hook,
                              "boot_hook_path")
    unit_dir = persistence.UNIT_DIR if where == "host" and systemd and hook in ("auto", "systemd") else None
    return persistence.PersistState(seams, module.params["persist_dir"], where, unit_dir, hook,
                                    module.params["boot_hook_path"])


def boot_text(persisted):
    """What result.persisted.boot says runs the restore at boot."""
    if persisted.unit_dir:
        return "systemd unit %s" % persistence.UNIT_NAME
    hook = persisted.hook_text()
    if hook:
        return "%s hook %s" % (persisted.boot_hook, next(iter(hook)))
    return ("no boot hook (boot_hook: %s%s): run %s/netconfine-boot at boot (docs/persistence.md)"
            % (persisted.boot_hook, ", no systemd running" if persisted.boot_hook == "auto" else "",
               persisted.persist_dir))


def _committed(module):
    """A list for the applied units when the run must be confirmed (rollback_timeout), else None."""
    timeout, token = module.params["rollback_timeout"], module.params["rollback_token"]
    if timeout < 0:
        raise NetconfineError("must be 0 (off) or a number of seconds; got %d" % timeout, "rollback_timeout")
    if not timeout or module.check_mode:
        return None
    if not token or not token.isalnum():
        raise NetconfineError("needs the collection's action plugin, which confirms over a fresh connection: "
                              "call the module by its full name (paranoid.netconfine.<module>)", "rollback_timeout")
    return []


def guard_lockout(module, policy):
    """The static lockout guard (``lockout``): before anything is applied, also in check mode."""
    if module.params["allow_lockout"] or module.params["state"] != "present":
        return
    given = module.params["management_path"]
    if not (given.get("addresses") if given is not None else os.environ.get("SSH_CONNECTION")):
        return      # no network path to this host to cut (local, netns, container): lockout.management's []
    from ansible_collections.paranoid.netconfine.plugins.module_utils import lockout

    lockout.check(policy, lockout.management(given, os.environ))


def render_only(policy, backend, states=()):
    """state=rendered: what would be applied on an empty host; no root, no kernel."""
    rendered, scripts = {}, {}
    policy = engine.for_backend(policy, backend.name)
    seams = [(backend, getattr(backend, "offline_units", (4, 6)))] + [(s, s.units(policy)) for s in states]
    for seam, units in seams:
        for unit in units:
            desired = seam.render(policy, unit)
            label = engine.unit_label(seam, unit)
            rendered[label] = engine.owned_text(desired)
            scripts[label] = seam.script({}, {}, desired)
    return {"changed": False, "backend": backend.name, "rendered": rendered, "scripts": scripts}


def run_module(argument_spec, build_policy, states=(), backends=AUTO_ORDER, select_form=None, **module_kwargs):
    """Build the module, model, backends; converge; exit. The whole main() of a netfilter module.

    ``states``: factories ``factory(module, run) -> state`` for the policy's resources
    (e.g. ``sysctl_state.make_state``: each factory lives beside its state, so that a module's AnsiballZ
    payload holds only the states it uses); ``backends``: the backends this module's rules can be
    rendered for, best first (``backend: auto`` picks among them); ``select_form``: where a backend has
    more than one form of the policy (``Policy.with_form``), ``select_form(module, run, policy, backend,
    offline) -> (policy, result keys)`` picks the one this host can hold (``nft_bridge.choose_form``).
    """
    spec = dict(COMMON_ARGS)
    spec.update(argument_spec)
    spec, nested = fields.split_suboptions(spec)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True, **module_kwargs)
    # invocation echoes the parameters as the task gave them (as for any option without suboptions), not
    # every entry again with its defaults filled in: at 1,000 rules that is a third of the result
    given = dict(module.params)
    try:
        fields.check_suboptions(module.params, nested)
        # check mode: a user or group an earlier task creates (and check mode did not) is a warning, not an error
        with identity.pending_accounts(module.check_mode) as pending:
            policy = build_policy(module.params)
        run = _runner(module)
        if module.params["state"] == "rendered":
            wanted = module.params["backend"]
            if wanted == "auto":
                # what auto would converge with, judged without root: the first backend installed
                wanted = next((n for n in backends if n in BACKENDS and _installed(BACKENDS[n](module, run))),
                              "iptables")
            factory = BACKENDS.get(wanted) if wanted in backends else None
            if factory is None:
                raise NetconfineError("backend %s cannot render yet" % wanted, "backend")
            backend = factory(module, run)
            form = {}
            if select_form:
                policy, form = select_form(module, run, policy, backend.name, offline=True)
            result = render_only(policy, backend, [make(module, run) for make in states])
            result.update(form)
            policy = engine.for_backend(policy, backend.name)
        else:
            chosen = choose_backends(module, run, backends, policy)
            form = {}
            if select_form:
                policy, form = select_form(module, run, policy, chosen[0].name)
            guard_lockout(module, engine.for_backend(policy, chosen[0].name))
            seams = [make(module, run) for make in states]
            persisted = persist_state(module, [chosen[0]] + [s for s in seams if getattr(s, "persistent", False)])
            committed = _committed(module)
            result = engine.converge(policy, chosen, check_mode=module.check_mode,
                                     lock_timeout=module.params["lock_timeout"],
                                     states=seams + ([persisted] if persisted else []), layers=layers(module, run),
                                     fail_on_shadowing=module.params["fail_on_shadowing"], committed=committed)
            result.update(form)
            policy = engine.for_backend(policy, chosen[0].name)
            if committed:
                # only runs with rollback_timeout need the watcher: the others never compile it on the host
                from ansible_collections.paranoid.netconfine.plugins.module_utils import rollback
                result["rollback"] = rollback.arm(committed, module.params["rollback_token"],
                                                  module.params["rollback_timeout"], module.params["lock_timeout"])
            if persisted:
                result["persisted"] = {"dir": persisted.task_dir(), "boot": boot_text(persisted)}
    except NetconfineError as exc:
        module.fail_json(msg=str(exc), field=exc.field, **exc.details)
    for warning in list(pending) + result.pop("warnings", []):
        module.warn(warning)
    result["chains"] = sorted(policy.chain_names)
    if policy.resolved:
        result["resolved"] = policy.resolved
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(invocation={"module_args": given}, **result)
