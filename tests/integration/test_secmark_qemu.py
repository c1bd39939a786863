"""secmark_label / secmark_policy's nftables form under an enforcing SELinux kernel: Debian's stock kernel in
an emulated QEMU guest (see qemu_selinux), since the UML kernel of test_secmark_guest.py has no nf_tables.

The article's scenario (secmark_scenario: only nctest_a_t may reach the "proxy" 192.0.2.80:80, nctest_b_t is
denied with an AVC for myhttp_client_packet_t) with ``secmark_policy_backend: nftables``: secmark objects
in ``table inet netconfine``, ``meta secmark set``, ``ct secmark set meta secmark`` / ``meta secmark set ct
secmark``, read back from the kernel with ``nft -j list table inet netconfine``. One guest serves the whole
scenario (one test function, so that pytest-xdist cannot split it over two guests). Fails, never skips,
when the guest cannot be built or started.

Wall time on a 2-core machine under software emulation (TCG), measured with other runs beside it: image build
and saved VM 4.5-10 min once (cached), start from the saved VM 10-13 s, the scenario's eight ansible-playbook
runs 3.5-4 min (installing and removing the module 48-72 s each: semodule rebuilds the policy), 4-5 min in all.
"""

from __future__ import annotations

import time

import secmark_scenario
from nchelpers import daemon
from qemu_selinux import qemu_guest


def test_enforcing_qemu_guest_nftables_scenario():
    started = time.monotonic()
    with qemu_guest() as guest, daemon(guest.ns, "python3", "-c", secmark_scenario.SERVER, ready="ready"):
        assert guest.ssh("uname -r").stdout.strip().endswith("-amd64")      # Debian's stock kernel
        timings = secmark_scenario.run(guest, secmark_scenario.NftTable(guest))
    timings["total"] = round(time.monotonic() - started)
    print("secmark QEMU guest timings (s):", timings)
