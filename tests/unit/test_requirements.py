"""requirements.txt and bindep.txt say what the collection really needs (issue 25).

Controller-side plugins (everything under plugins/ but modules, module_utils and doc_fragments) may
import packages beyond ansible-core: each must be in requirements.txt, which ansible-builder installs
into an execution environment. Modules and module_utils run on managed hosts with the standard
library only. Every package in requirements.txt must be imported by some plugin.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET_SIDE = ("modules", "module_utils", "doc_fragments")
# import name -> distribution name on PyPI, where they differ
DISTRIBUTIONS = {"yaml": "pyyaml"}


def top_level_imports(path):
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def third_party(names):
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("ansible", "ansible_collections")}


def plugin_files(target_side):
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        side = path.relative_to(ROOT / "plugins").parts[0] in TARGET_SIDE
        if side == target_side:
            yield path


def declared():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return {re.split(r"[<>=!~; \[]", line.strip(), maxsplit=1)[0].lower()
            for line in lines if line.strip() and not line.lstrip().startswith("#")}


def test_every_import_of_a_controller_side_plugin_is_declared_and_nothing_else():
    imported = set()
    for path in plugin_files(target_side=False):
        imported |= {DISTRIBUTIONS.get(n, n).lower() for n in third_party(top_level_imports(path))}
    assert imported == declared(), "requirements.txt must list exactly what controller-side plugins import"


@pytest.mark.parametrize("path", list(plugin_files(target_side=True)), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_module_utils_use_the_standard_library_only(path):
    assert third_party(top_level_imports(path)) == set(), path


def test_the_execution_environment_file_points_at_both_declarations():
    text = (ROOT / "meta" / "execution-environment.yml").read_text()
    assert re.search(r"^\s+python: requirements\.txt$", text, re.M), text
    assert re.search(r"^\s+system: bindep\.txt$", text, re.M), text
