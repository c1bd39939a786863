"""Fixtures of the reliability suite: every test runs over each registered backend, in worlds of its own.

    def test_x(world, scenario):        # world: namespace + users + group + listener, for one backend
        run_module(world.ns, scenario.module, scenario.args(world))

The counts of the whole suite are printed at the end of the run (``reliability: cases tried N, ...``).
"""

from __future__ import annotations

import random

import pytest

import nchelpers
from reliability import foreign_tools, scenarios, tally


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", scenarios.backends(), ids=str)
    if "scenario" in metafunc.fixturenames:
        metafunc.parametrize("scenario", scenarios.SCENARIOS, ids=lambda s: s.id)


def pytest_terminal_summary(terminalreporter):
    if tally.COUNTS:
        terminalreporter.write_sep("-", "reliability")
        terminalreporter.write_line(tally.summary())


@pytest.fixture
def make_world(cleanup, make_user, make_group):
    """make_world(backend, foreign=True) -> World: a new namespace with the users, group and listener the
    scenarios need, and (by default) other tools' chains already in its tables."""
    def make(backend, foreign=True):
        tally.BACKENDS_COVERED.add(backend.name)
        ns = cleanup.enter_context(nchelpers.netns())
        group = make_group()
        world = scenarios.World(ns=ns, backend=backend, user=make_user(), member=make_user(groups=[group]),
                                group=group, port=random.randint(20000, 60000))
        cleanup.enter_context(nchelpers.tcp_listener(ns, world.port))
        if foreign:
            foreign_tools.seed(ns)
        return world
    return make


@pytest.fixture
def world(make_world, backend):
    return make_world(backend)
