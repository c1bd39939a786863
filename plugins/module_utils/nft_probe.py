# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ask the kernel what nf_tables can hold, committing nothing (``nft -c``).

Private to the paranoid.netconfine collection. Its own module, and a small one: the iptables backend
asks it (does this kernel have nf_tables for the IP families, or must iptables-legacy be used?) on every
run where iptables-save shows no table, and must not load the nftables backend's code for that.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# the throwaway table a probe adds; ``nft -c`` sends the batch for the kernel to check and commits nothing
PROBE_TABLE = "netconfine_probe"


def kernel_refuses(run, nft, script):
    """None when the kernel takes the nft ``script`` (``nft -c -f -``: the kernel checks the batch and
    commits nothing; a throwaway table named PROBE_TABLE asks what it can hold), else nft's reason.

    ``run(argv, data=text) -> (rc, stdout, stderr)``."""
    rc, out, err = run([nft, "-c", "-f", "-"], data=script)
    return None if rc == 0 else " ".join((err or out).split()) or "rc=%d" % rc
