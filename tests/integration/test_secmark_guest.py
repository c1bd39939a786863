"""secmark_label / secmark_policy under an enforcing SELinux kernel (User-Mode-Linux guest, see uml_selinux).

The article's scenario (secmark_scenario: only nctest_a_t may reach the "proxy" 192.0.2.80:80, nctest_b_t is
denied with an AVC) on the iptables form: the UML kernel has no nf_tables for the IP families, so the
rules are mangle-table SECMARK/CONNSECMARK chains (the nftables form: test_secmark_qemu.py).
One guest serves the whole scenario (one test function, so that pytest-xdist cannot split it over two
guests); it is rebooted once from its own disk to prove that the labels come back at boot (issue 21).
Fails, never skips, when the guest cannot be built or booted.

Wall time on an idle 2-core machine: image build ~1-2 min once (cached), boot to SSH ~25 s, the
scenario's ansible-playbook runs ~2-3 min (two semodule transactions of ~15 s each), the reboot ~30 s.
"""

from __future__ import annotations

import time

import secmark_scenario
from nchelpers import daemon
from uml_selinux import selinux_guest


def test_enforcing_guest_scenario():
    started = time.monotonic()
    with selinux_guest() as guest, daemon(guest.ns, "python3", "-c", secmark_scenario.SERVER, ready="ready"):
        timings = secmark_scenario.run(guest, secmark_scenario.Mangle(guest), reboot=True)
    timings["total"] = round(time.monotonic() - started)
    print("secmark guest timings (s):", timings)
