"""Network names: `network create` refuses control characters, '/', mode names, huge names,
before anything is allocated."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from steelcup.errors import InvalidArgument
from steelcup.net.manager import NETWORK_NAME_MAX, NetworkManager, check_network_name
from steelcup.net.store import NetStore
from steelcup.state.db import open_db


@pytest.mark.parametrize("name", ["web", "my_project_default", "a b", "ünï.net",
                                  "x" * NETWORK_NAME_MAX])
def test_valid_names(name: str) -> None:
    assert check_network_name(name) == name


@pytest.mark.parametrize("name", [
    "", "evil\x00net", "line\nbreak", "esc\x1b[2J", "del\x7f", "c1\x85", "a/b",
    "none", "host", "default", "container:web", "x" * (NETWORK_NAME_MAX + 1),
])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid network name"):
        check_network_name(name)


def test_create_refuses_a_nul_in_the_name_before_touching_state(tmp_path: Path) -> None:
    store = NetStore(open_db(tmp_path))
    manager = NetworkManager(store, upstreams=[])
    with pytest.raises(InvalidArgument, match="control characters"):
        asyncio.run(manager.create("evil\x00net"))
    assert store.networks() == []
