"""Fixtures of the reliability suite: every test runs over each registered backend, in worlds of its own.

    def test_x(world, scenario):        # world: namespace + users + group + listener, for one backend
        run_module(world.ns, scenario.module, scenario.args(world))

The counts of the whole suite are printed at the end of the run (``reliability: cases tried N, ...``): each
test attaches what it counted to its report, and tests/integration/conftest.py sums the reports (so the
line also appears under pytest-xdist).
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


@pytest.fixture(autouse=True)
def reliability_counts(request):
    """Attach what the test counted to its report; tests/integration/conftest.py sums and prints the counts."""
    before = tally.snapshot()
    yield
    request.node.user_properties.append(("reliability", tally.since(before)))


@pytest.fixture
def make_world(cleanup, make_user, make_group):
    """make_world(backend, foreign=True, light=False) -> World: a new namespace with the users, group and
    listener the scenarios' behaviour checks need, and (by default) other tools' chains already in its
    tables. ``light`` worlds (for tests that never check behaviour) use existing accounts and no listener."""
    def make(backend, foreign=True, light=False):
        tally.BACKENDS_COVERED.add(backend.name)
        ns = cleanup.enter_context(nchelpers.netns())
        port = random.randint(20000, 60000)
        if light:
            world = scenarios.World(ns=ns, backend=backend, user="nobody", member="nobody", group="nogroup",
                                    port=port)
        else:
            group = make_group()
            world = scenarios.World(ns=ns, backend=backend, user=make_user(), member=make_user(groups=[group]),
                                    group=group, port=port)
            cleanup.enter_context(nchelpers.tcp_listener(ns, world.port))
        if foreign:
            foreign_tools.seed(ns)
        return world
    return make


@pytest.fixture
def world(make_world, backend):
    return make_world(backend)
