"""The converged namespace host, checked from inside the namespace."""


def test_runs_inside_the_instance_namespace(host):
    assert host.backend.NAME == "netns"
    assert host.check_output("ip netns identify") == host.backend.name


def test_loopback_is_up(host):
    assert host.interface("lo").exists
    assert "UP" in host.check_output("ip -o link show dev lo").split("<")[1].split(">")[0].split(",")


def test_converge_created_the_bridge(host):
    assert host.interface("nctmol0").exists
    assert not host.interface("eth0").exists  # the host's interfaces are not visible here
