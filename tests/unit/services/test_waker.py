"""The service waker with the fake VM source and a recording network layer: it listens (and
has the VIP's connections sent to it) once every replica of an --auto-suspend service is
suspended, not before; a held connection resumes every suspended replica and is relayed to
one of them, on the port it was made to (its floating IP's too); once a replica runs it
stops listening. (The DNAT
and conntrack's original destination are the VM tier's: tests/vm/test_service_suspend.py.)"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from steelcup.errors import NotFound
from steelcup.net.fip import FipRecord
from steelcup.net.manager import NetworkManager
from steelcup.net.model import Endpoint, PortMapping, VipRecord
from steelcup.runtime.containers import Runtime
from steelcup.services.manager import ServiceManager
from steelcup.services.orchestrator import Orchestrator
from steelcup.services.waker import ServiceWaker
from steelcup.state.db import open_db
from tests.unit.runtime.fakevm import FakeVms
from tests.unit.runtime.support import make_runtime
from tests.unit.services.test_orchestrator import eventually, make, running
from tests.unit.services.test_suspended_replicas import sleepy

VIP = VipRecord("v" * 64, "n" * 64, "web", "127.0.0.1",
                ports=(PortMapping(80, "tcp", "", 18080), PortMapping(53, "udp", "", 18053)))
FIP = "203.0.113.7"


class Fips:
    """The service's floating IP, attached to its VIP once `service_id` is set."""

    def __init__(self) -> None:
        self.service_id = ""

    def of_service(self, service_id: str) -> FipRecord | None:
        if service_id != self.service_id:
            return None
        return FipRecord(FIP, service_id=service_id, vip_id=VIP.id, network_id=VIP.network_id)


class Networks:
    """What the waker asks of the network layer, recorded."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self.wake_ports: list[int] = []
        self.udp_wake_ports: list[int] = []
        self.fips = Fips()

    def get_vip(self, vip_id: str) -> VipRecord:
        if vip_id != VIP.id:
            raise NotFound(vip_id)
        return VIP

    async def set_vip_wake(self, vip_id: str, port: int, udp_port: int = 0) -> None:
        self.wake_ports.append(port)
        self.udp_wake_ports.append(udp_port)

    def container_endpoints(self, container_id: str) -> list[Endpoint]:
        slot = next(t.slot for t in self.orchestrator.tasks.values()
                    if t.container_id == container_id)
        return [Endpoint(VIP.network_id, container_id, "", f"10.0.0.{slot}", "")]


@dataclass
class World:
    """A runtime on fake VMs, the orchestrator, the recording network layer and the waker."""

    runtime: Runtime
    manager: ServiceManager
    orch: Orchestrator
    networks: Networks
    waker: ServiceWaker


@asynccontextmanager
async def _world(tmp_path: Path) -> AsyncIterator[World]:
    vms = FakeVms()
    db = open_db(tmp_path)
    runtime = make_runtime(tmp_path, db, vms=vms.source())
    runtime.restorer = vms.restore
    manager, orch = make(db, runtime)
    networks = Networks(orch)
    waker = ServiceWaker(manager, orch.store, cast(NetworkManager, networks), runtime,
                         lambda: orch.tasks.values(), None)
    try:
        yield World(runtime, manager, orch, networks, waker)
    finally:
        await waker.close()
        await orch.close()
        await runtime.shutdown()


def test_a_sleeping_service_is_listened_for_and_woken(tmp_path: Path) -> None:
    async def main() -> None:
        async with _world(tmp_path) as world:
            runtime, manager, orch = world.runtime, world.manager, world.orch
            networks, waker = world.networks, world.waker
            runtime.events.listen(waker._observe)
            waker.start()
            svc = sleepy(manager, 2)
            orch.store.save_service_vip(svc.id, VIP.network_id, VIP.id)
            tasks = await running(orch, 2)
            await runtime.suspend(tasks[0].container_id)
            await asyncio.sleep(0.2)
            assert networks.wake_ports == []  # one replica still serves the VIP
            await runtime.suspend(tasks[1].container_id)
            await eventually(lambda: bool(networks.wake_ports))
            [port] = networks.wake_ports
            assert port > 0
            listener = ("127.0.0.1", port)
            relay: Any = waker._relay
            # a connection made to the listener itself wakes nothing
            with pytest.raises(NotFound):
                await relay(svc.id, listener, listener)
            # nor one to a FIP that is not the service's
            with pytest.raises(NotFound):
                await relay(svc.id, listener, (FIP, 80))
            # its udp listener too: a datagram sent to it straight (not DNATed) wakes nothing
            [udp_port] = networks.udp_wake_ports
            udp = waker._udp[svc.id][VIP.id]
            assert udp_port == udp.port > 0
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.sendto(b"straight", ("127.0.0.1", udp_port))
                await eventually(lambda: udp.dropped == 1)
            assert udp.holding
            assert all(runtime.record(t.container_id).state.suspended for t in tasks)
            # one to the published port: every replica resumes; relayed to the target port
            address, target_port = await relay(svc.id, listener, ("192.0.2.1", 18080))
            assert target_port == 80 and address in ("10.0.0.1", "10.0.0.2")
            await eventually(lambda: all(runtime.record(t.container_id).state.running
                                         for t in tasks))
            await eventually(lambda: networks.wake_ports[-1:] == [0])  # listening no more
            assert {t.id for t in orch.list(None)} == {t.id for t in tasks}

            # asleep again, with a FIP attached: a connection to it wakes the service and
            # goes to the port it was made to, on the FIP's VIP's network
            networks.fips.service_id = svc.id
            for task in tasks:
                await runtime.suspend(task.container_id)
            await eventually(lambda: networks.wake_ports[-1] > 0)
            listener = ("127.0.0.1", networks.wake_ports[-1])
            address, target_port = await relay(svc.id, listener, (FIP, 8080))
            assert target_port == 8080 and address in ("10.0.0.1", "10.0.0.2")
            await eventually(lambda: all(runtime.record(t.container_id).state.running
                                         for t in tasks))
            # awake, a udp flow to its published port goes to the port's target: no resume
            assert networks.udp_wake_ports[2] == udp_port  # the same listener, held again
            udp_listener = ("127.0.0.1", udp_port)
            assert (await relay(svc.id, udp_listener, ("192.0.2.1", 18053), "udp"))[1] == 53
            with pytest.raises(NotFound):  # a tcp port is no udp port
                await relay(svc.id, udp_listener, ("192.0.2.1", 18080), "udp")

    asyncio.run(asyncio.wait_for(main(), 30))


def test_the_last_replica_s_suspend_has_the_service_listened_for_before_its_save(
        tmp_path: Path) -> None:
    """The waker is a suspend watcher: as the last serving replica's suspend begins (its
    address is still published), the service is asleep and its wake listener takes the VIP,
    so nothing that comes during the save finds the VIP without a taker."""

    async def main() -> None:
        async with _world(tmp_path) as world:
            runtime, manager, orch = world.runtime, world.manager, world.orch
            seen: list[tuple[bool, list[int]]] = []

            async def after_the_waker(container_id: str) -> None:
                seen.append((runtime.suspending(container_id), list(world.networks.wake_ports)))

            runtime.suspend_watchers += [world.waker.suspend_changed, after_the_waker]
            svc = sleepy(manager, 2)
            orch.store.save_service_vip(svc.id, VIP.network_id, VIP.id)
            tasks = await running(orch, 2)
            await runtime.suspend(tasks[0].container_id)
            assert seen == [(True, [])]  # one replica still serves the VIP
            await runtime.suspend(tasks[1].container_id)
            saving, ports = seen[-1]
            assert saving and ports and ports[-1] > 0
            # during that save the replica counted as asleep, not as a running backend
            assert not runtime.suspending(tasks[1].container_id)

    asyncio.run(asyncio.wait_for(main(), 30))
