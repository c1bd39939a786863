"""Hand-written hostile values, per field type. Every one must be refused by the module.

Each field type gets the generic injection fragments (control characters, quotes, shell and restore
syntax, look-alike Unicode) at the start, in the middle and at the end of an otherwise valid value,
plus cases specific to its grammar (overlong values, lenient number and address forms, unknown
accounts, out-of-range numbers). Values are plain data: a later module reuses the tables for its
own fields through ``scenarios.HOSTILE_FIELDS``.
"""

from __future__ import annotations

# Characters and snippets that no field may carry into restore / nft input.
GENERIC_FRAGMENTS = (
    "\n", "\r", "\x00", "\t", "\x0b", "\x0c", "\x1b", "\x7f", "\u0085", "\u2028", "\u00a0", "\u202e",
    '"', "'", ";", "$(id)", "`id`", "#", "{", "}", "\\", "*", "&", "|", "<", ">", "?", "~", "^",
    "\u00e9", "\ufeff",
)

# A valid value per field type; the generic fragments are spliced into it.
VALID_BASE = {
    "comment": "ok comment",
    "log_prefix": "rly: ",
    "user": "root",
    "group": "root",
    "interface": "eth0",
    "task_name": "task",
    "address": "10.0.0.0/8",
    "port": "80",
    "icmp_type": "8",
}

INJECTIONS = (
    '" -j ACCEPT', 'x" -j ACCEPT -m comment --comment "y', "x\n-A OUTPUT -j ACCEPT",
    "x\nCOMMIT\n*filter\n-F OUTPUT\nCOMMIT", '"; flush ruleset; "', "$(reboot)", "`reboot`", '\\"', "\\n",
    "{{ 7*7 }}", "x\r\n-A OUTPUT -j ACCEPT", "x\x00-A OUTPUT -j ACCEPT", "} ; table inet x { chain y {",
    "x' -j ACCEPT '", "x #-j ACCEPT", "x\n", "\n", "\r", "\x00",
)

_UNICODE_LOOKALIKES = ("\uff52\uff4f\uff4f\uff54", "\u0661\u0662\u0663", "\u0668\u0660", "\uff18\uff10", "r\u200boot")

SPECIFIC = {
    "comment": INJECTIONS + (
        "a" * 129, "a" * 256, "a" * 4096, "a" * 100000, "a" * 128 + "\n", "caf\u00e9", "\u00e9", "\u2603",
        "line1\u2029line2", "tab\there", "emoji \U0001f525", "100% \"quoted\"", "semi;colon", "back`tick",
    ),
    "log_prefix": INJECTIONS + (
        "x" * 30, "x" * 64, "x" * 1000, "x" * 29 + "\n", "rly \u00e9", "rly\t", "pre\"fix", "pre'fix",
        "pre;fix", "pre$fix", "pre#fix", "pre{fix", "pre\\fix", "\u2603",
    ),
    "user": INJECTIONS + _UNICODE_LOOKALIKES + (
        "nct_no_such_user", "root2", "Root", "nobody_nct", "-1", "-0", "4294967295", "4294967296",
        "99999999999", "1-4294967295", "10-5", "0x0", "1e3", "1.0", "+1", " root", "root ", "", "!", "! ",
        "!!root", "root,daemon", "root:root", "root/x", "../root", "a" * 33, "a" * 32, "-root", "uid=0", "0 0",
        "$(id -u)", "0-", "-5-10", "1--2",
    ),
    "group": INJECTIONS + _UNICODE_LOOKALIKES + (
        "nct_no_such_group", "root2", "Wheel", "nogroup_nct", "-1", "-0", "4294967295", "4294967296",
        "99999999999", "1-4294967295", "10-5", "0x0", "1e3", "1.0", "+1", " root", "root ", "", "!", "! ",
        "!!root", "root,daemon", "root:root", "root/x", "../root", "a" * 33, "a" * 32, "-root", "gid=0", "0 0",
        "$(id -g)", "0-", "-5-10", "1--2",
    ),
    "interface": INJECTIONS + (
        "a" * 16, "a" * 15 + "+", "a" * 64, "eth0++", "+", "", " ", "eth 0", "eth0/1", "eth0:1", "lo;", "*",
        "eth*", "!", "! ", "!!eth0", "../eth0", "\u00e9th0", "\uff45\uff54\uff48\uff10", "eth0\u200b", "eth0 ",
        " eth0", "+eth0", "eth+0", "eth0,eth1", "eth0|eth1",
    ),
    "task_name": INJECTIONS + (
        "", "-x", ".x", "_x", "a" * 65, "a" * 1000, "a b", "a/b", "a:b", "a+b", "a@b", "a%b", "a=b", "a,b",
        "a!b", "!a", " a", "a ", "\u00e9t\u00e9", "t\u00e2che", "\uff54\uff41\uff53\uff4b", "task\u200b",
        "a(b)", "a[b]", "..", ".",
    ),
    "address": INJECTIONS + _UNICODE_LOOKALIKES + (
        "1.2.3", "523454/24", "0x7f.1", "0x7f000001", "017.0.0.1", "127.1", "127.0.0.1/33", "10.0.0.1/8",
        "10.0.0.0/08", "10.0.0.0/-1", "10.0.0.0/", "/8", "10.0.0.0/8/8", "256.0.0.1", "1.2.3.4.5", "::1/129",
        "2001:db8::1/32", "2001:db8:::1", "2001:db8::g", "fe80::1%eth0", "fe80::1%25eth0", "[::1]",
        "1.2.3.4:80", "1.2.3.4 ", " 1.2.3.4", "1.2.3.4\t", "nct-no-such-host.invalid", "-1.2.3.4", "1.2.3.-4",
        "1..2.3", "10.0.0.0/255.0.0.0", "10.0.0.0/0.0.0.255", "1.2.3.4/1e1", "\u0661.\u0662.\u0663.\u0664",
        "1.2.3.\uff14", "0", "4294967295", "::ffff:1.2.3.4/96", "!!1.2.3.4", "!", "! ", "", "1.2.3.4/+8",
        "1.2.3.4/ 8", "192.168.1.1/24", "2001:db8::/129", "2001:0db8:0000:0000:0000:0000:0000:0001:1",
    ),
    "port": INJECTIONS + _UNICODE_LOOKALIKES + (
        "-1", "65536", "99999", "100000", 70000, -5, 65536, 2 ** 32 + 80, "1-", ":80", "80:", "80:70", "80,81",
        "80 81", " 80", "80 ", "0x50", "1e2", "80.0", "http", "ssh", "", "!", "! ", "!!80", "80-90-100",
        "65535:65536", "4294967376", "+80", "$PORT", "80:-1", "-80", "1:2:3", "80;81",
    ),
    "icmp_type": INJECTIONS + _UNICODE_LOOKALIKES + (
        "256", "-1", "8/256", "8/-1", "8/", "/0", "8//0", "8/0/0", "echo request", "Echo-Request", "ECHO-REQUEST",
        "echo-request;", "ping6", "0x08", "1e1", "", "!", "! ", "!!8", "any/0", "8/0 ", " 8", "neighbour-solicitation",
        "router-renumbering", "echo-request,echo-reply", "8,0", "1000", "8.0", "+8",
    ),
}


def cases(field_type: str) -> list:
    """Every hand-written hostile value for ``field_type``, without duplicates, in a stable order."""
    base = VALID_BASE[field_type]
    out = []
    for fragment in GENERIC_FRAGMENTS:
        out += [fragment + base, base[:len(base) // 2] + fragment + base[len(base) // 2:], base + fragment]
    out += list(SPECIFIC[field_type])
    seen, unique = set(), []
    for value in out:
        key = (type(value).__name__, value)
        if key not in seen:
            seen.add(key)
            unique.append(value)
    return unique


FIELD_TYPES = tuple(VALID_BASE)
