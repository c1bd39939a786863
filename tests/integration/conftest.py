"""Integration fixtures: one-liners over nchelpers (real namespaces, users, sockets; always cleaned up).

    def test_x(netns_host, make_user, listener):
        alice = make_user(groups=["wheel"])
        listener(netns_host, 992)
        assert connect_as(netns_host, alice, "127.0.0.1", 992)
"""

from __future__ import annotations

import contextlib
import os

import pytest

import nchelpers


@pytest.fixture(scope="session", autouse=True)
def nct_session():
    """Root check; sweep leftovers of dead sessions before, and of this session after, the run."""
    if os.geteuid() != 0:
        pytest.fail("the integration tier needs root (network namespaces, users, netfilter)", pytrace=False)
    nchelpers.session_id()
    for what in nchelpers.sweep():
        print(f"nct: removed leftover {what}")
    yield
    for what in nchelpers.end_session():
        print(f"nct: removed leftover {what}")


@pytest.fixture
def cleanup():
    """An ExitStack closed after the test, in reverse order, even when the test fails."""
    with contextlib.ExitStack() as stack:
        yield stack


@pytest.fixture
def make_netns(cleanup):
    """make_netns() -> name of a new namespace (lo up), deleted after the test."""
    return lambda: cleanup.enter_context(nchelpers.netns())


@pytest.fixture
def netns_host(make_netns):
    """Name of a new network namespace for this test."""
    return make_netns()


@pytest.fixture
def make_group(cleanup):
    """make_group() -> name of a new local group, deleted after the test."""
    return lambda: cleanup.enter_context(nchelpers.local_group())


@pytest.fixture
def make_user(cleanup):
    """make_user(group=None, groups=()) -> name of a new local user, removed (userdel -r) after the test."""
    return lambda group=None, groups=(): cleanup.enter_context(nchelpers.local_user(group, groups))


@pytest.fixture
def listener(cleanup):
    """listener(ns, port, addresses=LOOPBACKS): accept TCP on each address (default 127.0.0.1 and ::1), port,
    inside ns until the test ends; nchelpers.ALL_ADDRESSES listens on 0.0.0.0 and [::]."""
    return lambda ns, port, addresses=nchelpers.LOOPBACKS: cleanup.enter_context(
        nchelpers.tcp_listener(ns, port, addresses))


# --------------------------------------------------------------------------- counts of the reliability suite
# Tests under reliability/ attach their counts to their reports (user property "reliability"); they are
# summed here, from the reports, so that the line is printed once at the end of the run - also under
# pytest-xdist, where only this conftest is loaded in the controller and the tests run in workers.

def pytest_runtest_logreport(report):
    if report.when == "teardown" and any(key == "reliability" for key, _value in report.user_properties):
        from reliability import tally
        for key, value in report.user_properties:
            if key == "reliability":
                tally.merge_reported(value)


def pytest_terminal_summary(terminalreporter):
    try:
        from reliability import tally
    except ImportError:
        return
    if tally.REPORTED:
        terminalreporter.write_sep("-", "reliability")
        terminalreporter.write_line(tally.summary(tally.REPORTED, tally.REPORTED_BACKENDS))
