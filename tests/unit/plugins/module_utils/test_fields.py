"""fields.py: every strict parser, as tables of good input -> canonical value and bad input -> error naming the field."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils import fields
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError

FIELD = "rules[3].thing"


def net(text):
    return ipaddress.ip_network(text)


def refused(parser, *args, field=FIELD):
    """Call parser(*args, field) expecting NetconfineError naming ``field``; return the message."""
    with pytest.raises(NetconfineError) as info:
        parser(*args, field)
    exc = info.value
    assert exc.field == field
    assert str(exc).startswith(field + ": ")
    return str(exc)


# ---------------------------------------------------------------- free text

@pytest.mark.parametrize("value", [
    "", "hello world", "root-egress: ", "a_b.c,d:e/f@g+h=i%j(k)[l]-m", "x" * 128,
])
def test_text_accepts_printable_unquotable_text(value):
    assert fields.text(value, FIELD) == value


@pytest.mark.parametrize("value,why", [
    ('say "hi"', "'\"'"),
    ("it's", "\"'\""),
    ("a\nb", "'\\n'"),
    ("a\rb", "'\\r'"),
    ("a\tb", "'\\t'"),
    ("bell\x07", "'\\x07'"),
    ("esc\x1b[0m", "'\\x1b'"),
    ("back\\slash", "'\\\\'"),
    ("# comment", "'#'"),
    ("a;b", "';'"),
    ("$(id)", "'$'"),
    ("`id`", "'`'"),
    ("caf\u00e9", "'\u00e9'"),
    ("x" * 129, "129 characters"),
    ("trailing newline\n", "'\\n'"),
])
def test_text_refuses_what_could_break_out_of_restore_syntax(value, why):
    assert why in refused(fields.text, value)


def test_text_refuses_non_strings():
    assert "must be a string" in refused(fields.text, 5)


# ---------------------------------------------------------------- task and chain names

@pytest.mark.parametrize("value", ["a", "stunnel-992", "rsync_273.tunnel", "9lives", "x" * 64])
def test_task_name_good(value):
    assert fields.task_name(value) == value


@pytest.mark.parametrize("value", ["", "-x", ".x", "a b", "a/b", 'a"b', "a:b", "x" * 65, "a\n", None, 5])
def test_task_name_bad(value):
    with pytest.raises(NetconfineError) as info:
        fields.task_name(value)
    assert info.value.field == "name"


def test_chain_name_is_known_and_stable():
    assert fields.chain_name("stunnel-992") == "NC-stunnel-992-4539feff"


@pytest.mark.parametrize("name", ["a", "stunnel-992", "x" * 64, "a.b", "a-b", "a_b", "Z" * 30 + "." + "q" * 30])
def test_chain_name_shape(name):
    chain = fields.chain_name(name)
    assert chain.startswith("NC-")
    assert len(chain) <= 28
    assert all(c.isalnum() or c == "-" for c in chain)
    assert chain == fields.chain_name(name)


def test_chain_names_of_distinct_tasks_differ_even_when_slugs_agree():
    names = ["a.b", "a-b", "a_b", "x" * 40 + "1", "x" * 40 + "2"]
    assert len({fields.chain_name(n) for n in names}) == len(names)
    assert fields.chain_name("a", "v6") != fields.chain_name("a")


# ---------------------------------------------------------------- interfaces

@pytest.mark.parametrize("value,expected", [
    ("eth0", ("eth0", False)), ("veth+", ("veth+", False)), ("!lo", ("lo", True)), ("! lo", ("lo", True)),
    ("br-0123456789ab", ("br-0123456789ab", False)), ("vlan.10@eth0", ("vlan.10@eth0", False)),
])
def test_interface_good(value, expected):
    assert fields.interface(value, FIELD) == expected


@pytest.mark.parametrize("value", ["", "a" * 16, "a" * 15 + "+", "eth 0", "eth0;", "eth+0", 'e"', "e/0", "eth0\n"])
def test_interface_bad(value):
    refused(fields.interface, value)


# ---------------------------------------------------------------- addresses

@pytest.mark.parametrize("value,expected", [
    ("192.0.2.1", "192.0.2.1/32"),
    ("192.0.2.0/24", "192.0.2.0/24"),
    ("198.51.100.128/25", "198.51.100.128/25"),
    ("0.0.0.0/0", "0.0.0.0/0"),
    ("fd00::1", "fd00::1/128"),
    ("FD00:0:0::1", "fd00::1/128"),
    ("fd00::/8", "fd00::/8"),
    ("fd12:3456::/32", "fd12:3456::/32"),
    ("::1", "::1/128"),
])
def test_address_good(value, expected):
    assert fields.address(value, FIELD) == net(expected)


@pytest.mark.parametrize("value", [
    "192.0.2.1/24",        # host bits set
    "fd00::1/64",          # host bits set
    "1.2.3",               # short form
    "127.1",               # short form
    "523454/24",           # a number is not an address
    "2130706433",          # neither is this one
    "0177.0.0.1",          # octal
    "0x7f.1",              # hex
    "256.1.1.1",
    "1.2.3.4.5",
    "192.0.2.1/33",
    "fd00::/129",
    "192.0.2.0/024",       # leading zero in prefix length
    "192.0.2.0/",
    "192.0.2.0/+8",
    "192.0.2.0/-8",
    " 192.0.2.1",
    "192.0.2.1 ",
    "",
    "::ffff:1.2.3",
])
def test_address_bad(value):
    refused(fields.address, value)


def test_address_refuses_non_strings():
    refused(fields.address, 3232235777)


@pytest.mark.parametrize("values,expected,negate", [
    (None, None, False),
    ("192.0.2.1", ["192.0.2.1/32"], False),
    (["192.0.2.1", "fd00::1"], ["192.0.2.1/32", "fd00::1/128"], False),
    (["localhost"], ["127.0.0.1/32", "::1/128"], False),
    (["192.0.2.1", "192.0.2.1"], ["192.0.2.1/32"], False),
    (["!192.0.2.0/24"], ["192.0.2.0/24"], True),
    (["! 192.0.2.0/24"], ["192.0.2.0/24"], True),
    (["!localhost"], ["127.0.0.1/32", "::1/128"], True),
    (["!192.0.2.1", "!fd00::1"], ["192.0.2.1/32", "fd00::1/128"], True),
])
def test_addresses_good(values, expected, negate):
    nets, neg, resolved = fields.addresses(values, FIELD)
    assert nets == (None if expected is None else [net(e) for e in expected])
    assert neg is negate
    assert resolved == {}


@pytest.mark.parametrize("values,field,why", [
    (["192.0.2.1/24"], FIELD, "not a valid address"),
    (["192.0.2.1", "1.2.3"], FIELD + "[1]", "not a valid address"),
    (["523454/24"], FIELD, "not a valid address"),
    (["0x7f.1"], FIELD, ""),                  # glibc's inet_aton would read it as 127.0.0.1
    (["0x7f000001"], FIELD, ""),              # ditto
    (["0177.1"], FIELD, ""),                  # ditto (octal, short)
    (["127.0.0.1", "!192.0.2.1"], FIELD, "cannot mix"),
    (["!192.0.2.1", "!192.0.2.2"], FIELD, "one address per IP version"),
    (["!0.0.0.0/0"], FIELD, "matches no address"),
    (["!::/0"], FIELD, "matches no address"),
    (["not_a_host!"], FIELD, "neither a valid address"),
    ([5], FIELD, "must be a string"),
])
def test_addresses_bad(values, field, why):
    with pytest.raises(NetconfineError) as info:
        fields.addresses(values, FIELD)
    assert info.value.field == field
    assert why in str(info.value)


def test_addresses_lenient_numeric_forms_are_refused_without_asking_the_resolver(monkeypatch):
    def resolver(*_args, **_kwargs):
        raise AssertionError("a numeric form must not reach getaddrinfo")
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    for value in ("0x7f.1", "0x7f000001", "0x7f.0x0.0x0.0x1"):
        with pytest.raises(NetconfineError) as info:
            fields.addresses([value], FIELD)
        assert info.value.field == FIELD


def test_addresses_resolve_hostnames_and_report_them(monkeypatch):
    def resolver(host, *_args, **_kwargs):
        assert host == "strudel.example"
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fd00::20", 0, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.20", 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.20", 0))]
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    nets, negate, resolved = fields.addresses(["strudel.example"], FIELD)
    assert nets == [net("192.0.2.20/32"), net("fd00::20/128")]
    assert negate is False
    assert resolved == {"strudel.example": ["192.0.2.20", "fd00::20"]}


def test_addresses_unresolvable_hostname_names_the_field(monkeypatch):
    def resolver(*_args, **_kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with pytest.raises(NetconfineError) as info:
        fields.addresses(["strudel.invalid"], FIELD)
    assert info.value.field == FIELD
    assert "does not resolve" in str(info.value)


# ---------------------------------------------------------------- ports

@pytest.mark.parametrize("value,expected", [
    (992, ((992, 992), False)),
    ("992", ((992, 992), False)),
    ("0", ((0, 0), False)),
    ("65535", ((65535, 65535), False)),
    ("1000:2000", ((1000, 2000), False)),
    ("1000-2000", ((1000, 2000), False)),
    ("5:5", ((5, 5), False)),
    ("!22", ((22, 22), True)),
    ("! 22", ((22, 22), True)),
    ("!1024:65535", ((1024, 65535), True)),
    ("0:65535", ((0, 65535), False)),
])
def test_port_range_good(value, expected):
    assert fields.port_range(value, FIELD) == expected


@pytest.mark.parametrize("value,why", [
    ("70000", "between 0 and 65535"),
    (70000, "between 0 and 65535"),
    ("65536", "between 0 and 65535"),
    ("1:70000", "between 0 and 65535"),
    ("2000:1000", "reversed"),
    ("2000-1000", "reversed"),
    ("abc", "must be a port"),
    ("", "must be a port"),
    ("22,23", "must be a port"),
    ("-1", "must be a port"),
    ("1:", "must be a port"),
    (":5", "must be a port"),
    ("123456", "must be a port"),
    (True, "must be a port"),
    (None, "must be a port"),
    ("!0:65535", "no port"),     # negated full range matches nothing; iptables-nft does not even keep it
])
def test_port_range_bad(value, why):
    assert why in refused(fields.port_range, value)


# ---------------------------------------------------------------- ids

@pytest.mark.parametrize("value,expected", [
    ("0", (0, 0)), ("1000", (1000, 1000)), ("1000-1999", (1000, 1999)), ("4294967294", (4294967294, 4294967294)),
    ("root", None), ("wheel", None), ("1000:1999", None),
])
def test_id_range(value, expected):
    assert fields.id_range(value, FIELD) == expected


@pytest.mark.parametrize("value,why", [("4294967295", "at most"), ("2000-1000", "reversed")])
def test_id_range_bad(value, why):
    assert why in refused(fields.id_range, value)


@pytest.mark.parametrize("value", ["root", "www-data", "_apt", "nct_ab12_cd34", "machine$"])
def test_account_name_good(value):
    assert fields.account_name(value, FIELD) == value


@pytest.mark.parametrize("value", ["", "1abc", "a b", "a:b", "a" * 33, "-x", "a\nb"])
def test_account_name_bad(value):
    refused(fields.account_name, value)


# ---------------------------------------------------------------- limit, log level

@pytest.mark.parametrize("value,expected", [
    ("5/min", (5, "min")),
    ("10/minute", (10, "min")),
    ("3/s", (3, "sec")),
    ("10/second", (10, "sec")),
    ("2/hour", (2, "hour")),
    ("7/d", (7, "day")),
    ("90/min", (90, "min")),
    # the kernel keeps a period, and iptables-save prints it in the largest exact unit: same here
    ("60/min", (1, "sec")),
    ("120/hour", (2, "min")),
    ("24/day", (1, "hour")),
    ("3600/hour", (1, "sec")),
    ("3000/sec", (3333, "sec")),   # period 10000/3000 = 3 (integer) -> printed as 3333/sec
    ("10000/sec", (10000, "sec")),
])
def test_limit_good(value, expected):
    assert fields.limit(value, FIELD) == expected


@pytest.mark.parametrize("value", ["0/min", "5", "5/fortnight", "5/MIN", "/min", "five/min", "1234567/s",
                                   "10001/sec", None, 5])
def test_limit_bad(value):
    refused(fields.limit, value)


@pytest.mark.parametrize("rate", list(range(1, 200)) + [997, 1440, 5000, 9999])
@pytest.mark.parametrize("unit", ["second", "minute", "hour", "day"])
def test_limit_canonical_form_is_a_fixed_point(rate, unit):
    """Parsing what we render gives the same value again (what iptables-save prints parses to itself)."""
    try:
        count, canon = fields.limit("%d/%s" % (rate, unit), FIELD)
    except NetconfineError:
        assert unit == "second" and rate > 10000
        return
    assert fields.limit("%d/%s" % (count, canon), FIELD) == (count, canon)


@pytest.mark.parametrize("value,expected", [
    (None, 4), ("info", 6), ("warning", 4), ("warn", 4), ("err", 3), ("emerg", 0), ("debug", 7),
    (7, 7), ("7", 7), ("0", 0),
])
def test_log_level_good(value, expected):
    assert fields.log_level(value, FIELD) == expected


@pytest.mark.parametrize("value", ["8", 8, "loud", "INFO", "-1", ""])
def test_log_level_bad(value):
    refused(fields.log_level, value)


# ---------------------------------------------------------------- icmp

@pytest.mark.parametrize("value,family,expected", [
    ("echo-request", 4, ("8", False)),
    ("ping", 4, ("8", False)),
    ("echo-reply", 4, ("0", False)),
    ("port-unreachable", 4, ("3/3", False)),
    ("destination-unreachable", 4, ("3", False)),
    ("any", 4, ("any", False)),
    ("!echo-request", 4, ("8", True)),
    ("8", 4, ("8", False)),
    ("3/3", 4, ("3/3", False)),
    ("254/255", 4, ("254/255", False)),
    ("255", 6, ("255", False)),
    ("08", 4, ("8", False)),          # leading zeros: iptables reads 08 as octal and refuses it
    ("3/03", 4, ("3/3", False)),
    ("echo-request", 6, ("128", False)),
    ("ping", 6, ("128", False)),
    ("neighbour-solicitation", 6, ("135", False)),
    ("neighbor-solicitation", 6, ("135", False)),
    ("port-unreachable", 6, ("1/4", False)),
    ("!echo-reply", 6, ("129", True)),
    ("128", 6, ("128", False)),
])
def test_icmp_type_good(value, family, expected):
    assert fields.icmp_type(value, family, FIELD) == expected


@pytest.mark.parametrize("value,family", [
    ("any", 6), ("bogus", 4), ("256", 4), ("255", 4), ("8\n", 4), ("3/256", 4), ("-1", 4), ("3/", 4), ("neighbour-solicitation", 4),
    ("echo request", 4), ("", 4), ("1000", 6),
])
def test_icmp_type_bad(value, family):
    with pytest.raises(NetconfineError) as info:
        fields.icmp_type(value, family, FIELD)
    assert info.value.field == FIELD
    assert ("ICMPv6" if family == 6 else "ICMP") in str(info.value)


# ---------------------------------------------------------------- reject, ctstate, protocol

@pytest.mark.parametrize("value,expected", [
    (None, "port-unreachable"),
    ("port-unreachable", "port-unreachable"),
    ("icmp-port-unreachable", "port-unreachable"),
    ("icmp6-port-unreachable", "port-unreachable"),
    ("icmp-admin-prohibited", "admin-prohibited"),
    ("icmp6-adm-prohibited", "admin-prohibited"),
    ("icmp6-no-route", "net-unreachable"),
    ("tcp-reset", "tcp-reset"),
    ("tcp-rst", "tcp-reset"),
    ("host-prohibited", "host-prohibited"),
])
def test_reject_reason_good(value, expected):
    assert fields.reject_reason(value, FIELD) == expected


@pytest.mark.parametrize("value", ["icmp-bogus", "REJECT", "", "TCP-RESET"])
def test_reject_reason_bad(value):
    refused(fields.reject_reason, value)


@pytest.mark.parametrize("value,expected", [
    (None, None),
    (["established", "related"], ("RELATED", "ESTABLISHED")),
    ("NEW,ESTABLISHED", ("NEW", "ESTABLISHED")),
    (["DNAT", "INVALID", "NEW", "NEW"], ("INVALID", "NEW", "DNAT")),
    ([" untracked "], ("UNTRACKED",)),
])
def test_ctstates_good(value, expected):
    assert fields.ctstates(value, FIELD) == expected


@pytest.mark.parametrize("value", [["NEWISH"], [], "", ["NEW", "BOGUS"]])
def test_ctstates_bad(value):
    refused(fields.ctstates, value)


@pytest.mark.parametrize("value,expected", [
    (None, None), ("tcp", "tcp"), ("TCP", "tcp"), ("6", "tcp"), (17, "udp"), ("icmp", "icmp"),
    ("icmpv6", "ipv6-icmp"), ("58", "ipv6-icmp"), ("ipv6-icmp", "ipv6-icmp"), ("sctp", "sctp"),
    ("all", None), ("any", None),
])
def test_protocol_good(value, expected):
    assert fields.protocol(value, FIELD) == expected


@pytest.mark.parametrize("value", ["gre", "tcp ", "", "999"])
def test_protocol_bad(value):
    refused(fields.protocol, value)


# ---------------------------------------------------------------- negation

@pytest.mark.parametrize("value,expected", [
    ("!x", ("x", True)), ("! x", ("x", True)), ("x", ("x", False)), (5, (5, False)), ("", ("", False)),
])
def test_negation(value, expected):
    assert fields.negation(value) == expected


# ---------------------------------------------------------------- suboptions, checked in one pass

SUB_SPEC = {
    "name": dict(type="str", required=True),
    "rules": dict(type="list", elements="dict", default=[], options=dict(
        jump=dict(type="str", required=True, choices=["ACCEPT", "DROP"]),
        port=dict(type="str"),
        limit_burst=dict(type="int"),
        source=dict(type="list", elements="str"),
        suppl_groups=dict(type="bool", default=False),
        inbound=dict(type="list", elements="dict", options=dict(protocol=dict(type="str", required=True))),
    )),
    "service": dict(type="dict", options=dict(user=dict(type="str", required=True),
                                              environment=dict(type="dict", default={}))),
}


def _checked(**params):
    top, nested = fields.split_suboptions(SUB_SPEC)
    assert all("options" not in option for option in top.values())
    assert sorted(nested) == ["rules", "service"]
    return fields.check_suboptions(dict(params), nested)


def test_suboptions_converted_as_ansible_converts_them():
    out = _checked(rules=[{"jump": "ACCEPT", "port": 80, "limit_burst": "7", "source": "192.0.2.1,192.0.2.2",
                           "suppl_groups": "yes", "inbound": [{"protocol": "udp"}]}],
                   service={"user": "nobody"})
    assert out["rules"] == [{"jump": "ACCEPT", "port": "80", "limit_burst": 7, "source": ["192.0.2.1", "192.0.2.2"],
                             "suppl_groups": True, "inbound": [{"protocol": "udp"}]}]
    assert out["service"] == {"user": "nobody", "environment": {}}


def test_suboptions_not_given_stay_absent_and_defaults_are_filled():
    assert _checked(rules=[{"jump": "DROP"}, {"jump": "ACCEPT", "port": None}])["rules"] == [
        {"jump": "DROP", "suppl_groups": False}, {"jump": "ACCEPT", "suppl_groups": False}]


@pytest.mark.parametrize("rules,field,words", [
    ([{"jump": "ALLOW"}], "rules[0].jump", "must be one of ACCEPT, DROP, got 'ALLOW'"),
    ([{"jump": "DROP"}, {"port": "22"}], "rules[1].jump", "is required"),
    ([{"jump": "DROP", "prot": "tcp"}], "rules[0]", "unsupported option prot"),
    ([{"jump": "DROP", "limit_burst": "many"}], "rules[0].limit_burst", "cannot be converted to int"),
    ([{"jump": "DROP", "suppl_groups": "perhaps"}], "rules[0].suppl_groups", "cannot be converted to bool"),
    ([{"jump": "DROP", "inbound": [{}]}], "rules[0].inbound[0].protocol", "is required"),
    ([{"jump": "DROP", "inbound": {"protocol": "tcp"}}], "rules[0].inbound", "cannot be converted to list"),
    (["DROP"], "rules[0]", "must be a dict"),
    ("DROP", "rules", "must be a list of dicts"),
])
def test_a_bad_suboption_is_refused_naming_its_field(rules, field, words):
    params = {"rules": rules}
    with pytest.raises(NetconfineError) as err:
        _checked(**params)
    assert err.value.field == field and words in str(err.value), str(err.value)


def test_nothing_is_changed_when_an_entry_is_refused():
    params = {"rules": [{"jump": "DROP", "port": 22}], "service": {"group": "x"}}
    top, nested = fields.split_suboptions(SUB_SPEC)
    with pytest.raises(NetconfineError):
        fields.check_suboptions(params, nested)
    assert params == {"rules": [{"jump": "DROP", "port": 22}], "service": {"group": "x"}}
