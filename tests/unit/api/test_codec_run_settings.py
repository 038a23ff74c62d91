"""ReadonlyRootfs, ShmSize and Links through the codec: decoded, refused when malformed, and
shown by inspect as dockerd shows them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from steelcup.api import docker_codec as codec
from steelcup.errors import InvalidArgument
from steelcup.runtime.model import ContainerConfig, ContainerRecord, ContainerState, Status


def _decode(**host: Any) -> Any:
    return codec.decode_create({"Image": "busybox", "HostConfig": host})


@pytest.mark.parametrize(("entry", "pair"), [
    ("db:database", ("db", "database")),
    ("db", ("db", "db")),
    ("/db:/web/database", ("db", "database")),  # what inspect shows, sent back by clients
])
def test_link_formats(entry: str, pair: tuple[str, str]) -> None:
    assert _decode(Links=[entry]).links == (pair,)


@pytest.mark.parametrize("entry", ["", "a:b:c", ":alias", "db:", "d b:x"])
def test_bad_links_are_refused_naming_the_setting(entry: str) -> None:
    with pytest.raises(InvalidArgument, match=r"HostConfig\.Links"):
        _decode(Links=[entry])


def test_shm_size_and_read_only() -> None:
    config = _decode(ShmSize=64 << 20, ReadonlyRootfs=True)
    assert (config.shm_size_bytes, config.read_only) == (64 << 20, True)
    with pytest.raises(InvalidArgument, match="SHM size can not be less than 0"):
        _decode(ShmSize=-1)
    with pytest.raises(InvalidArgument, match="ReadonlyRootfs"):
        _decode(ReadonlyRootfs="yes")


def test_inspect_shows_them_as_dockerd() -> None:
    config = _decode(ShmSize=1 << 27, ReadonlyRootfs=True, Links=["db:database", "cache"])
    record = ContainerRecord(id="a" * 64, name="web", created="2026-01-01T00:00:00Z",
                             config=config, path="true", args=(),
                             state=ContainerState(status=Status.CREATED))
    host = codec.encode_inspect(record, "/x.log")["HostConfig"]
    assert host["ShmSize"] == 1 << 27
    assert host["ReadonlyRootfs"] is True
    assert host["Links"] == ["/db:/web/database", "/cache:/web/cache"]
    plain = codec.encode_inspect(ContainerRecord(
        id="b" * 64, name="x", created="2026-01-01T00:00:00Z", config=_decode(), path="true",
        args=(), state=ContainerState()), "/x.log")["HostConfig"]
    assert (plain["ShmSize"], plain["ReadonlyRootfs"], plain["Links"]) == (0, False, None)


def test_sysctls_docker_allows_and_those_it_refuses() -> None:
    config = _decode(Sysctls={"net.ipv4.ip_forward": "1", "kernel.shmmax": "4096",
                              "fs.mqueue.msg_max": "20"})
    assert config.sysctls == (("fs.mqueue.msg_max", "20"), ("kernel.shmmax", "4096"),
                              ("net.ipv4.ip_forward", "1"))
    for key in ("kernel.panic", "vm.swappiness", "fs.file-max"):
        with pytest.raises(InvalidArgument, match=f"sysctl '{key}' is not allowed"):
            _decode(Sysctls={key: "1"})
    for key in ("net..core", "net/core/somaxconn", "net", "net.core.a b"):
        with pytest.raises(InvalidArgument, match="bad sysctl name"):
            _decode(Sysctls={key: "1"})
    with pytest.raises(InvalidArgument, match="bad value"):
        _decode(Sysctls={"net.core.somaxconn": "1\n2"})


def test_ulimits() -> None:
    config = _decode(Ulimits=[{"Name": "nofile", "Soft": 1024, "Hard": 2048},
                              {"Name": "core", "Soft": -1, "Hard": -1},
                              {"Name": "nofile", "Soft": 10, "Hard": 20}])
    assert config.ulimits == (("nofile", 10, 20), ("core", -1, -1))
    assert config.rlimits() == ("nofile=10:20", "core=-1:-1")
    for bad, text in (({"Name": "bogus", "Soft": 1, "Hard": 1}, "invalid ulimit type"),
                      ({"Name": "nofile", "Soft": 2, "Hard": 1}, "soft limit must be less"),
                      ({"Name": "nofile", "Soft": -1, "Hard": 1}, "soft limit must be less"),
                      ({"Name": "nofile", "Soft": -2, "Hard": 1}, "bad nofile limit")):
        with pytest.raises(InvalidArgument, match=text):
            _decode(Ulimits=[bad])


def test_pids_limit() -> None:
    assert _decode(PidsLimit=100).pids_limit == 100
    assert _decode(PidsLimit=-1).pids_limit == 0
    assert _decode(PidsLimit=0).pids_limit == 0
    with pytest.raises(InvalidArgument, match="PidsLimit"):
        _decode(PidsLimit=1 << 40)


def test_inspect_shows_limits() -> None:
    config = _decode(Sysctls={"net.core.somaxconn": "1024"}, PidsLimit=7,
                     Ulimits=[{"Name": "nofile", "Soft": 1, "Hard": 2}])
    record = ContainerRecord(id="a" * 64, name="web", created="2026-01-01T00:00:00Z",
                             config=config, path="true", args=(), state=ContainerState())
    host = codec.encode_inspect(record, "/x.log")["HostConfig"]
    assert host["Sysctls"] == {"net.core.somaxconn": "1024"}
    assert host["PidsLimit"] == 7
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 1, "Hard": 2}]


def test_the_new_settings_survive_the_record_store() -> None:
    config = _decode(Sysctls={"net.core.somaxconn": "1024"}, PidsLimit=7, ReadonlyRootfs=True,
                     ShmSize=1 << 20, Links=["db:database"],
                     Ulimits=[{"Name": "nofile", "Soft": 1, "Hard": 2}])
    assert ContainerConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
