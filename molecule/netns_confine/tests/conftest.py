# the netns-backed host fixture (see molecule/shared/testinfra_netns.py)
from testinfra_netns import host  # noqa: F401 pylint: disable=unused-import
