"""identity.py: user and group names, ids and ranges -> numeric ranges; group membership."""

from __future__ import annotations

import collections
import grp
import pwd

import pytest

from ansible_collections.paranoid.netconfine.plugins.module_utils import identity
from ansible_collections.paranoid.netconfine.plugins.module_utils.errors import NetconfineError

FIELD = "rules[1].uid_owner"
MISSING = "nct_no_such_account"


@pytest.mark.parametrize("value,expected", [
    ("root", ((0, 0), False)),
    ("!root", ((0, 0), True)),
    ("! root", ((0, 0), True)),
    (0, ((0, 0), False)),
    ("0", ((0, 0), False)),
    ("1000-1999", ((1000, 1999), False)),
    ("!1000-1999", ((1000, 1999), True)),
    ("4294967294", ((4294967294, 4294967294), False)),
    ("nobody", ((pwd.getpwnam("nobody").pw_uid,) * 2, False)),
])
def test_uid(value, expected):
    assert identity.uid(value, FIELD) == expected


@pytest.mark.parametrize("value,expected", [
    ("root", ((0, 0), False)),
    ("!root", ((0, 0), True)),
    (100, ((100, 100), False)),
    ("10-20", ((10, 20), False)),
    ("nogroup", ((grp.getgrnam("nogroup").gr_gid,) * 2, False)),
])
def test_gid(value, expected):
    assert identity.gid(value, "g") == expected


@pytest.mark.parametrize("parser,value,why", [
    (identity.uid, MISSING, "unknown user"),
    (identity.uid, "!" + MISSING, "unknown user"),
    (identity.gid, MISSING, "unknown group"),
    (identity.uid, "", "must be a user name"),
    (identity.uid, "!", "must be a user name"),
    (identity.uid, True, "must be a user name"),
    (identity.uid, "bad name", "not a valid user or group name"),
    (identity.uid, "root;id", "not a valid user or group name"),
    (identity.uid, "2000-1000", "reversed"),
    (identity.uid, "4294967295", "at most"),
    (identity.gid, "1:2", "not a valid user or group name"),
])
def test_bad_ids_name_the_field(parser, value, why):
    with pytest.raises(NetconfineError) as info:
        parser(value, FIELD)
    assert info.value.field == FIELD
    assert why in str(info.value)


Pw = collections.namedtuple("Pw", "pw_name pw_uid pw_gid")
Gr = collections.namedtuple("Gr", "gr_name gr_gid gr_mem")


@pytest.fixture
def accounts(monkeypatch):
    users = [Pw("root", 0, 0), Pw("admin7", 1001, 10), Pw("plebian", 1002, 1002), Pw("helper", 1003, 1003),
             Pw("ops", 1004, 1004), Pw("ghost", 1005, 11)]
    groups = [Gr("root", 0, []), Gr("wheel", 10, []), Gr("plebian", 1002, []), Gr("helper", 1003, []),
              Gr("staff", 11, ["helper", "ops", "nobody_known"]), Gr("ops", 1004, [])]
    monkeypatch.setattr(identity.pwd, "getpwall", lambda: users)
    monkeypatch.setattr(identity.grp, "getgrall", lambda: groups)


@pytest.mark.parametrize("gids,expected", [
    ((10, 10), (1001,)),                    # primary group only
    ((11, 11), (1003, 1004, 1005)),         # supplementary members and a primary one; unknown member ignored
    ((10, 11), (1001, 1003, 1004, 1005)),   # a range
    ((0, 0), (0,)),
    ((5000, 6000), ()),
])
def test_group_members_primary_and_supplementary(accounts, gids, expected):
    assert identity.group_members(gids) == expected


def test_group_members_of_real_root_group():
    assert 0 in identity.group_members((0, 0))


def test_check_mode_lets_an_unknown_name_stand_for_an_account_an_earlier_task_creates():
    with identity.pending_accounts(True) as pending:
        assert identity.uid("!" + MISSING, FIELD) == ((identity.PENDING_ID,) * 2, True)
        assert identity.gid(MISSING, "rules[2].gid_owner") == ((identity.PENDING_ID,) * 2, False)
        assert identity.uid("root", FIELD) == ((0, 0), False)
    assert pending == [
        "%s: user %r does not exist yet; assuming an earlier task creates it (check mode: the rules show id "
        "4294967295 in its place, and the real run fails if it still does not exist)" % (FIELD, MISSING),
        "rules[2].gid_owner: group %r does not exist yet; assuming an earlier task creates it (check mode: the "
        "rules show id 4294967295 in its place, and the real run fails if it still does not exist)" % MISSING]
    # the placeholder can never be typed in, so it never equals a rule in the kernel
    with pytest.raises(NetconfineError):
        identity.uid(str(identity.PENDING_ID), FIELD)


def test_real_runs_keep_failing_hard_on_an_unknown_name():
    with identity.pending_accounts(False) as pending:
        with pytest.raises(NetconfineError, match="unknown user"):
            identity.uid(MISSING, FIELD)
    assert pending == []
    with pytest.raises(NetconfineError, match="unknown group"):   # and after a check-mode block
        identity.gid(MISSING, FIELD)
