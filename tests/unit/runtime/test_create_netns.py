"""HostConfig.SteelcupNetns (steelcup-runtime's netns path): the container's network is the
engine's namespace only, it is kept over a restart and shown by inspect, and a tenant, a pod
member or a container that also wants the daemon's networks or ports is refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from steelcup.api import docker_codec as codec
from steelcup.errors import Forbidden, InvalidArgument
from steelcup.runtime.model import ContainerConfig
from steelcup.state.db import open_db
from tests.unit.runtime.support import make_runtime

NETNS = "/run/netns/netns-1234"


def _config(root: Path, **kw: object) -> ContainerConfig:
    return replace(ContainerConfig(image="", image_id="", entrypoint=("/bin/true",),
                                   rootfs_dir=str(root), netns_path=NETNS), **kw)


def test_the_netns_replaces_the_daemons_networks_and_is_kept(tmp_path: Path) -> None:
    (tmp_path / "rootfs").mkdir()
    db = open_db(tmp_path)
    runtime = make_runtime(tmp_path, db)
    record = runtime.create(_config(tmp_path / "rootfs"), "oci1")
    assert record.config.netns_path == NETNS and record.config.network_mode == "none"
    restarted = make_runtime(tmp_path, db)
    restarted.recover()
    shown = codec.encode_inspect(restarted.record("oci1"), "/x.log")["HostConfig"]
    assert shown["SteelcupNetns"] == NETNS


@pytest.mark.parametrize(("kw", "error", "text"), [
    ({"tenant": "acme"}, Forbidden, "operator only"),
    ({"port_bindings": '{"80/tcp": [{"HostPort": "8080"}]}'}, InvalidArgument,
     "publish ports and join networks with the engine"),
    ({"network_mode": "mynet"}, InvalidArgument, "has that network only"),
    ({"pod_of": "sandbox"}, InvalidArgument, "give the network namespace to the sandbox"),
])
def test_refused_combinations(tmp_path: Path, kw: dict[str, object], error: type[Exception],
                              text: str) -> None:
    (tmp_path / "rootfs").mkdir()
    runtime = make_runtime(tmp_path, open_db(tmp_path))
    with pytest.raises(error, match=text):
        runtime.create(_config(tmp_path / "rootfs", **kw), "refused")
    assert runtime.list() == []


def test_the_codec_wants_an_absolute_path() -> None:
    config = codec.decode_create({"Image": "x", "HostConfig": {"SteelcupNetns": NETNS}})
    assert config.netns_path == NETNS
    with pytest.raises(InvalidArgument, match="absolute"):
        codec.decode_create({"Image": "x", "HostConfig": {"SteelcupNetns": "netns-1"}})
