"""Container create refuses networks that do not exist (404, like docker) before it writes
anything; network modes keep their behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest

from steelcup.errors import InvalidArgument, NotFound
from steelcup.net.manager import NetworkManager
from steelcup.net.model import NetworkRecord
from steelcup.net.store import NetStore
from steelcup.runtime.containers import Runtime
from steelcup.runtime.model import ContainerConfig
from steelcup.runtime.resources import Resources
from steelcup.state.db import open_db
from tests.unit.runtime.support import make_runtime


def _runtime(tmp_path: Path, networks: NetworkManager | None) -> Runtime:
    return make_runtime(tmp_path, open_db(tmp_path), Resources(networks=networks))


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    store = NetStore(open_db(tmp_path))
    store.insert_network(NetworkRecord("b" * 64, "bridge", "10.213.0.0/24", "10.213.0.1",
                                       "steelcup0"))
    store.insert_network(NetworkRecord("f" * 64, "front", "10.213.5.0/24", "10.213.5.1",
                                       "sc-ffffffffffff"))
    return _runtime(tmp_path, NetworkManager(store, upstreams=[]))


def _config(network_mode: str = "", extra: tuple[str, ...] = (),
            port_bindings: str = "") -> ContainerConfig:
    return ContainerConfig(image="base:1", image_id="", cmd=("/bin/sh",),
                           network_mode=network_mode, port_bindings=port_bindings,
                           extra_networks=tuple((n, ()) for n in extra))


def _nothing_created(runtime: Runtime) -> bool:
    return (runtime.list() == [] and runtime.store.load_all() == []
            and list((runtime.root / "containers").iterdir()) == [])


def test_unknown_network_mode_is_not_found_at_create(runtime: Runtime) -> None:
    with pytest.raises(NotFound, match="network nosuchnet not found"):
        runtime.create(_config("nosuchnet"), "web")
    assert _nothing_created(runtime)


def test_unknown_endpoints_config_network_is_not_found_at_create(runtime: Runtime) -> None:
    with pytest.raises(NotFound, match="network nosuchnet not found"):
        runtime.create(_config("front", extra=("nosuchnet",)), "web")
    assert _nothing_created(runtime)


@pytest.mark.parametrize("mode", ["", "default", "bridge", "none", "front", "f" * 12])
def test_modes_and_existing_networks_are_accepted(runtime: Runtime, mode: str) -> None:
    record = runtime.create(_config(mode), "web")
    assert runtime.record("web").id == record.id


def test_named_network_without_networking_is_refused_at_create(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, None)
    with pytest.raises(InvalidArgument, match="networking is not available"):
        runtime.create(_config("front"), "web")
    assert _nothing_created(runtime)
    runtime.create(_config("none"), "quiet")


@pytest.mark.parametrize("networking", [True, False])
@pytest.mark.parametrize("mode", ["host", "container:other"])
def test_modes_a_vm_cannot_honour_are_refused_at_create(
    tmp_path: Path, runtime: Runtime, networking: bool, mode: str
) -> None:
    """Not at start: a container that can never start is left behind (and `run --rm` waits
    for ever for its removal)."""
    target = runtime if networking else _runtime(tmp_path / "off", None)
    with pytest.raises(InvalidArgument, match=f"network mode '{mode}' is not supported"):
        target.create(_config(mode), "web")
    assert _nothing_created(target)


def test_published_ports_without_a_network_are_refused_at_create(runtime: Runtime) -> None:
    with pytest.raises(InvalidArgument, match="-p cannot be used with --network none"):
        runtime.create(_config("none", port_bindings='{"80/tcp": [{"HostPort": "8080"}]}'),
                       "web")
    assert _nothing_created(runtime)
    runtime.create(_config("none", port_bindings="{}"), "quiet")
