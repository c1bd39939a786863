from testinfra_netns import host  # noqa: F401  pylint: disable=unused-import  (netns-backed host fixture, see molecule/shared)
