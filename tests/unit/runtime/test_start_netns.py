"""A container in an engine's netns (HostConfig.SteelcupNetns), with the fake VM source: its
VM gets the netns interface's NIC on a tap on no bridge, the tap is plugged into the netns
only once the VM has it, and unplugged when the run ends; a loopback-only netns gives no NIC.
The `ip`/`tc` effects (steelcup.net.netnsplug) are recorded, not run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from steelcup.guest.protocol import Tag
from steelcup.net import netnsplug
from steelcup.net.links import Host
from steelcup.net.manager import Attachment, NetworkManager
from steelcup.net.netnsnic import NetnsInterface, NetnsWiring, tap_name
from steelcup.pool.source import TapPlace
from steelcup.runtime.model import ContainerConfig
from steelcup.runtime.resources import Resources
from steelcup.state.db import open_db
from steelcup.vm.qemu_args import NicSpec
from tests.unit.runtime.fakevm import FakeVms
from tests.unit.runtime.support import make_runtime

pytestmark = pytest.mark.usefixtures("plain_dirs")  # conftest: roots are plain dirs

NETNS = "/run/netns/netns-test"
ETH0 = NetnsInterface("eth0", "0a:58:0a:58:00:05", 1450, "10.88.0.5", 16, "10.88.0.1")


class NoNetworks:
    """The network layer of a container on none of the daemon's networks; `publish` is
    recorded with (NICs the guest was given, processes started) at that moment."""

    host = Host()

    def __init__(self, calls: list[tuple[str, object, int]], fake: FakeVms) -> None:
        self.calls, self.fake = calls, fake

    async def publish(self, _container_id: str, *, strict: bool = False) -> None:
        assert strict, "a start's ports are published strictly (a taken port fails it)"
        nics = sum(len(m.nics) for m in self.fake.machines)
        self.calls.append(("publish", (nics, self.fake.started.qsize()),
                           len(self.fake.machines)))

    async def attach(self, *_a: Any, **_k: Any) -> Attachment:
        return Attachment((), ())

    async def detach(self, _container_id: str) -> None:
        pass

    async def release(self, _container_id: str) -> None:
        pass

    def container_endpoints(self, _container_id: str) -> list[Any]:
        return []

    def drop_held_ports(self, _container_id: str) -> None:
        pass


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, iface: NetnsInterface | None,
         ) -> tuple[FakeVms, list[tuple[str, object, int]]]:
    """Start and end one run; the netnsplug calls as (what, argument, VMs made by then)."""
    calls: list[tuple[str, object, int]] = []
    fake = FakeVms()
    monkeypatch.setattr(netnsplug, "read_interface", lambda netns: (
        calls.append(("read", netns, len(fake.machines))), iface)[1])
    monkeypatch.setattr(netnsplug, "plug", lambda host, wiring: calls.append(
        ("plug", wiring, len(fake.machines))))
    monkeypatch.setattr(netnsplug, "unplug", lambda wiring: calls.append(
        ("unplug", wiring, len(fake.machines))))

    async def main() -> None:
        resources = Resources(networks=cast(NetworkManager, NoNetworks(calls, fake)))
        runtime = make_runtime(tmp_path, open_db(tmp_path), resources, fake.source())
        try:
            record = runtime.create(ContainerConfig(image="base:1", image_id="",
                                                    cmd=("serve",), netns_path=NETNS), "web")
            await runtime.start(record.id)
            process = await fake.next_process()
            process.exit(0)
            for _ in range(250):  # the run's release follows the exit
                if not runtime.record(record.id).state.running and (
                        iface is None or any(what == "unplug" for what, _a, _n in calls)):
                    break
                await asyncio.sleep(0.02)
        finally:
            await runtime.shutdown()

    asyncio.run(asyncio.wait_for(main(), 20))
    return fake, calls


def test_the_vm_takes_the_netns_interfaces_place(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    fake, calls = _run(tmp_path, monkeypatch, ETH0)
    (machine,) = fake.machines
    tap = machine.request.nics[0].tap
    assert machine.request.nics == (NicSpec(tap, ETH0.mac),) and tap.startswith("scn")
    assert machine.request.tap_places == (TapPlace("", 1450),)  # on no bridge
    (nic,) = [dict(fields) for fields in machine.nics]  # type: ignore[call-overload]
    assert (nic[Tag.MAC], nic[Tag.ADDRESS], nic[Tag.PREFIX], nic[Tag.GATEWAY], nic[Tag.MTU]) == (
        ETH0.mac, "10.88.0.5", 16, "10.88.0.1", 1450)
    wiring = NetnsWiring(NETNS, tap, ETH0)
    # read before the VM, plugged once the VM has its tap, unplugged at the run's end; the
    # ports published once the guest has its NIC, before the process starts
    assert calls == [("read", NETNS, 0), ("plug", wiring, 1), ("publish", (1, 0), 1),
                     ("unplug", wiring, 1)]


def test_a_loopback_only_netns_gives_no_nic(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    fake, calls = _run(tmp_path, monkeypatch, None)
    (machine,) = fake.machines
    assert machine.request.nics == () and machine.request.tap_places == ()
    assert calls == [("read", NETNS, 0), ("publish", (0, 0), 1)]


def test_tap_names_are_the_containers() -> None:
    assert tap_name("a" * 64) == tap_name("a" * 64) != tap_name("b" * 64)
