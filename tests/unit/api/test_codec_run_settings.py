"""ReadonlyRootfs, ShmSize and Links through the codec: decoded, refused when malformed, and
shown by inspect as dockerd shows them."""

from __future__ import annotations

from typing import Any

import pytest

from steelcup.api import docker_codec as codec
from steelcup.errors import InvalidArgument
from steelcup.runtime.model import ContainerRecord, ContainerState, Status


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
