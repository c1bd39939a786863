"""An enforcing-SELinux Debian guest with Debian's stock kernel, emulated by QEMU, reachable over SSH.

    with qemu_guest() as guest:             # build (cached) + start; everything removed on exit
        guest.ssh("nft -j list ruleset")
        guest.hosts                         # inventory host vars for nchelpers.ansible_playbook

The counterpart of uml_selinux.selinux_guest() for what the UML kernel lacks (nf_tables for the IP families:
the nftables form of secmark_label). Building and starting are scripts/qemu-guest's: the image
(qemu_guest/build.sh: debootstrap with linux-image-amd64, selinux-policy-default, sshd, nftables, files
labelled, the test domains of selinux_guest/nctest.cil) and a saved booted VM are cached under
.build/qemu-guest/<hash of their inputs>/; each start runs a copy of the saved VM (QEMU -loadvm), so the
image never changes and SSH answers within seconds even under software emulation. The guest lives in a
network namespace of ours on a tap, as the UML guest does: 192.0.2.2 is the guest, 192.0.2.1 and
192.0.2.80 the host side, so its labelled packets really leave through an interface, and Ansible reaches
it with ssh through ``ip netns exec NS nc`` (nothing of the host's own network changes).
"""

from __future__ import annotations

import contextlib

from uml_selinux import ROOT, Guest, booted

QEMU_GUEST = ROOT / "scripts" / "qemu-guest"


def qemu_guest() -> contextlib.AbstractContextManager[Guest]:
    """The QEMU guest, started (enforcing, a safety net of 15 min); the inventory host is ``qemuhost``."""
    return booted(QEMU_GUEST, "qemuhost")
