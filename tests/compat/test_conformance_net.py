"""Issue 20's network items against a daemon with networks (in a namespace of the test's own),
driven by the real docker CLI: each test failed before its fix."""

from __future__ import annotations

import json

import pytest

from tests.compat.conftest import IMG, Docker

pytestmark = pytest.mark.vm
DAEMON_NETWORKING = True


def networks_of(dockerd: Docker, ref: str) -> dict:  # type: ignore[type-arg]
    info = json.loads(dockerd.out("inspect", ref))[0]
    return info["NetworkSettings"]["Networks"]  # type: ignore[no-any-return]


def test_created_container_shows_its_networks_and_uses_a_static_address(
    dockerd: Docker,
) -> None:
    """dockerd shows the networks a created container will join (steelcup showed {}), with
    the aliases and the static address asked for, which the container then has (it was
    ignored). A bad or taken address is refused at create."""
    dockerd.out("network", "create", "--subnet", "10.231.0.0/24", "confnet")
    try:
        cid = dockerd.out("create", "--network", "confnet", "--ip", "10.231.0.77",
                          "--network-alias", "db", IMG, "ip", "-4", "-o", "addr").strip()
        nets = networks_of(dockerd, cid)
        assert list(nets) == ["confnet"], nets
        ep = nets["confnet"]
        assert ep["IPAddress"] == "10.231.0.77" and "db" in (ep["Aliases"] or []), ep
        assert ep["IPAMConfig"] == {"IPv4Address": "10.231.0.77"}, ep
        dockerd.out("start", cid)
        assert dockerd.out("wait", cid).strip() == "0"
        assert "10.231.0.77/24" in dockerd.out("logs", cid)
        taken = dockerd.run("create", "--network", "confnet", "--ip", "10.231.0.77", IMG)
        assert taken.returncode != 0 and b"10.231.0.77" in taken.stderr, taken
        outside = dockerd.run("create", "--network", "confnet", "--ip", "10.9.9.9", IMG)
        assert outside.returncode != 0 and b"10.9.9.9" in outside.stderr, outside
        default = dockerd.run("create", "--ip", "10.231.0.9", IMG)
        assert default.returncode != 0 and b"user defined networks" in default.stderr, default
        dockerd.out("rm", cid)
        # the default network, for a container created without --network
        plain = dockerd.out("create", IMG, "true").strip()
        assert list(networks_of(dockerd, plain)) == ["bridge"]
        dockerd.out("rm", plain)
        assert dockerd.out("ps", "-aq") == ""
    finally:
        dockerd.run("network", "rm", "confnet")
