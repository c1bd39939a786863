"""Every module's suboptions, as its argument spec declares them, match its DOCUMENTATION.

ansible-test's validate-modules compares the options AnsibleModule sees with the documentation. The
netfilter modules take the ``options`` of their list and dict parameters out of what AnsibleModule sees
and check them themselves in one pass (``fields.split_suboptions`` / ``fields.check_suboptions``), so
this test makes the same comparison for those: names, type, elements, required, default and choices,
at every level.
"""

from __future__ import annotations

import importlib

import pytest
import yaml

from ansible_collections.paranoid.netconfine.plugins.module_utils import fields
from ansible_collections.paranoid.netconfine.plugins.module_utils.netfilter_task import COMMON_ARGS

MODULES = ("owner_rule", "uml_bridge_filter", "secmark_label", "netns_service")


def _spec_of(name):
    module = importlib.import_module("ansible_collections.paranoid.netconfine.plugins.modules.%s" % name)
    spec = dict(COMMON_ARGS)
    spec.update(module.ARGUMENT_SPEC)
    return spec, yaml.safe_load(module.DOCUMENTATION)


def _differences(spec, docs, where):
    """What differs between an options spec and the documented (sub)options, as readable lines."""
    out = []
    for name in sorted(set(spec) | set(docs)):
        here = "%s%s" % (where, name)
        if name not in docs:
            out.append("%s: in the argument spec, not documented" % here)
            continue
        if name not in spec:
            out.append("%s: documented, not in the argument spec" % here)
            continue
        option, doc = spec[name], docs[name]
        for key, default in (("type", "str"), ("elements", None), ("required", False), ("default", None),
                             ("choices", None)):
            have, said = option.get(key, default), doc.get(key, default)
            if key == "default" and have in ([], {}) and said is None:
                continue        # an empty list / dict default needs no words
            if have != said:
                out.append("%s: %s is %r in the argument spec, %r in the documentation" % (here, key, have, said))
        if option.get("options") or doc.get("suboptions"):
            out += _differences(option.get("options") or {}, doc.get("suboptions") or {}, here + ".")
    return out


@pytest.mark.parametrize("name", MODULES)
def test_suboptions_match_the_documentation(name):
    spec, docs = _spec_of(name)
    # the doc fragment's options (COMMON_ARGS) are compared by ansible-test; here: every option with suboptions
    nested = fields.split_suboptions(spec)[1]
    assert nested, "%s has no suboptions: nothing compared" % name
    documented = docs["options"]     # the options with suboptions are the module's own, not the fragment's
    problems = _differences(nested, dict((k, documented[k]) for k in nested if k in documented), "")
    assert not problems, "\n".join(problems)


def test_a_difference_is_found():
    """The comparison itself can fail: a choice missing from the documentation is reported."""
    spec = {"rules": {"type": "list", "elements": "dict", "options": {"jump": {"choices": ["A", "B"]}}}}
    docs = {"rules": {"type": "list", "elements": "dict", "suboptions": {"jump": {"choices": ["A"]}}}}
    assert _differences(spec, docs, "") == ["rules.jump: choices is ['A', 'B'] in the argument spec, ['A'] in "
                                            "the documentation"]
