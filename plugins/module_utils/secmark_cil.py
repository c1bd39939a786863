# -*- coding: utf-8 -*-
# Copyright: paranoid.netconfine contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render a ``secmark_label`` task's SELinux policy as one CIL module.

Private to the paranoid.netconfine collection. Pure functions, no I/O. Every
name that reaches the CIL text has passed ``selinux_name`` (``[a-z][a-z0-9_]*``),
so no ``(``, ``)``, ``;``, quote, whitespace or newline can ever close a
statement or start a new one: CIL injection is impossible by construction,
not by escaping.

The statements are those of the seed article (and of refpolicy's
``corenet_*`` interfaces): a packet type is a ``type`` with ``roletype
object_r``, in the attributes ``packet_type`` and ``client_packet_type`` or
``server_packet_type``; each granted domain gets ``allow D T (packet (send
recv))``. ``allow_unlabeled`` renders ``(allow D unlabeled_t (packet (send
recv)))`` and, with ``audit``, the same as ``auditallow`` so that every packet
still relying on it is logged (``type=AVC ... granted``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError

_SELINUX_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,126}\Z")
MODULE_PREFIX = "netconfine_"
KIND_ATTRIBUTE = {"client": "client_packet_type", "server": "server_packet_type"}
# The attribute of every process domain in refpolicy: what the article's allow_unlabeled grants.
ALL_DOMAINS = "domain"
PERMISSIONS = ("send", "recv")


def selinux_name(value, field, suffix=None):
    """A type, attribute or module name: lower-case letters, digits and ``_``, starting with a letter.

    ``suffix`` (``_packet_t``) is required at the end when given. Raises NetconfineError naming ``field``.
    """
    if not isinstance(value, str) or not _SELINUX_NAME_RE.match(value):
        raise NetconfineError(
            "must be an SELinux name of lower-case letters, digits and '_' starting with a letter "
            "(at most 127 characters), got %r" % (value,), field)
    if suffix and (not value.endswith(suffix) or value == suffix):
        raise NetconfineError("must end in %s (a packet type), got %r" % (suffix, value), field)
    return value


def module_name(task):
    """The store's module name for a task: ``netconfine_`` + the task name with ``.``/``-`` as ``_``."""
    return MODULE_PREFIX + re.sub(r"[^a-z0-9_]", "_", task.lower())


def render_cil(packet_types, allow_unlabeled=None, task=""):
    """The module's CIL as ``[(line, field), ...]``.

    ``packet_types``: ``[(name, kind, (domain, ...), field), ...]`` with validated names,
    ``kind`` ``client`` or ``server``; ``allow_unlabeled``: ``((domain, ...), audit, field)``
    or None. ``field`` is the option each line comes from (``packet_types[0].domains[1]``),
    kept so a compiler error can name it. Deterministic: same input, same text, same checksum.
    """
    lines = [(";; netconfine module for task %s: managed by paranoid.netconfine, do not edit" % task, "name")]
    required = []

    def require(name, field):
        if name not in [r for r, _f in required] and name not in [p[0] for p in packet_types]:
            required.append((name, field))
            lines.append(("(typeattributeset cil_gen_require %s)" % name, field))

    for index, (name, kind, domains, field) in enumerate(packet_types):
        lines.append((";; packet type %s" % name, field))
        lines.append(("(type %s)" % name, field))
        lines.append(("(roletype object_r %s)" % name, field))
        lines.append(("(typeattributeset %s (%s))" % (KIND_ATTRIBUTE[kind], name), field + ".kind"))
        lines.append(("(typeattributeset packet_type (%s))" % name, field))
        for d_index, domain in enumerate(domains):
            d_field = "%s.domains[%d]" % (field, d_index)
            require(domain, d_field)
            lines.append(("(allow %s %s (packet (%s)))" % (domain, name, " ".join(PERMISSIONS)), d_field))
    if allow_unlabeled is not None:
        domains, audit, field = allow_unlabeled
        lines.append((";; unlabeled_t: what no label matched (every packet once any SECMARK rule exists)", field))
        require("unlabeled_t", field)
        for d_index, domain in enumerate(domains):
            d_field = "%s.domains[%d]" % (field, d_index)
            require(domain, d_field)
            lines.append(("(allow %s unlabeled_t (packet (%s)))" % (domain, " ".join(PERMISSIONS)), d_field))
            if audit:
                lines.append(("(auditallow %s unlabeled_t (packet (%s)))" % (domain, " ".join(PERMISSIONS)),
                              field + ".audit"))
    return lines


def cil_text(lines):
    """The module file's text (what ``semodule -i`` installs and checksums)."""
    return "".join(line + "\n" for line, _field in lines)


def line_fields(lines):
    """((1-based line number, field), ...) for mapping compiler messages back to options."""
    return tuple((number, field) for number, (_line, field) in enumerate(lines, 1))
