"""Shorthand for the golden tables of the renderer tests (iptables and nftables)."""

import ipaddress

from ansible_collections.paranoid.netconfine.plugins.module_utils import model

C = "NC-t-0123abcd"
ACCEPT, DROP, RETURN = model.Verdict("ACCEPT"), model.Verdict("DROP"), model.Verdict("RETURN")


def n(text):
    return ipaddress.ip_network(text)


def R(family=4, target=ACCEPT, *matches, **kw):  # noqa: N802 - a table constructor
    return model.Rule(family=family, target=target, matches=tuple(matches), **kw)
