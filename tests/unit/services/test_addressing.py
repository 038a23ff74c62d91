"""Service addressing: which networks a service's VIPs are on, which tasks are its backends,
which ports it publishes (pure), and `ServiceAddressing` keeping a network layer's VIPs in
step with services and tasks (reserve, backends, publish, release), against an in-memory
stand-in of NetworkManager's VIP API."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import pytest

from steelcup.errors import InvalidArgument, NotFound
from steelcup.net.manager import NetworkManager
from steelcup.net.model import Endpoint, PortMapping, VipRecord
from steelcup.runtime.events import EventBus
from steelcup.runtime.healthcheck import HealthState, HealthStatus
from steelcup.runtime.model import ContainerConfig, ContainerRecord, ContainerState, Status
from steelcup.services.addressing import (
    ServiceAddressing,
    endpoint_ports,
    fip_vip,
    is_backend,
    ports_differ,
    wanted_networks,
)
from steelcup.services.manager import ServiceManager
from steelcup.services.model import Mode, RestartPolicy, ServicePlan, TaskRecord, TaskState
from steelcup.services.store import ServiceStore
from steelcup.state.db import open_db


def test_a_service_is_on_its_networks_or_the_default_one() -> None:
    assert wanted_networks(ContainerConfig(image="x", image_id="")) == ("",)
    assert wanted_networks(ContainerConfig(image="x", image_id="", network_mode="bridge")) == ("",)
    assert wanted_networks(ContainerConfig(
        image="x", image_id="", network_mode="app", extra_networks=(("db", ()), ("app", ())))) == (
        "app", "db")
    assert wanted_networks(ContainerConfig(image="x", image_id="", network_mode="none")) == ()
    assert wanted_networks(ContainerConfig(image="x", image_id="",
                                           network_mode="container:abc")) == ()


def task(state: TaskState = TaskState.RUNNING, desired: TaskState = TaskState.RUNNING,
         unhealthy: bool = False, container_id: str = "c1", tid: str = "t1") -> TaskRecord:
    return TaskRecord(id=tid, service_id="s", tenant="", slot=1, node_id="n", generation=1,
                      task_doc={}, created_at="", state=state, desired=desired,
                      unhealthy=unhealthy, container_id=container_id)


def container(running: bool = True, health: HealthStatus | None = None,
              cid: str = "c1") -> ContainerRecord:
    state = ContainerState(status=Status.RUNNING if running else Status.EXITED,
                           health=HealthState(status=health) if health else None)
    return ContainerRecord(id=cid, name=cid, created="",
                           config=ContainerConfig(image="x", image_id=""), path="x", args=(),
                           state=state)


def test_only_running_healthy_tasks_staying_are_backends() -> None:
    assert is_backend(task(), container())
    assert is_backend(task(), container(health=HealthStatus.HEALTHY))
    assert not is_backend(task(), container(health=HealthStatus.UNHEALTHY))
    assert not is_backend(task(), container(running=False))
    assert not is_backend(task(), None)
    assert not is_backend(task(state=TaskState.STARTING), container())
    assert not is_backend(task(desired=TaskState.SHUTDOWN), container())
    assert not is_backend(task(unhealthy=True), container())


def test_published_ports_come_from_the_endpoint_spec() -> None:
    spec = {"EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishedPort": 18080},
                                       {"TargetPort": 53, "Protocol": "udp"}]}}
    ports = endpoint_ports(spec)
    assert ports == (PortMapping(80, "tcp", "", 18080), PortMapping(53, "udp", "", 0))
    chosen = (PortMapping(80, "tcp", "", 18080), PortMapping(53, "udp", "", 40000))
    assert not ports_differ(ports, chosen)  # 0 = whichever port was chosen
    assert ports_differ(ports, chosen[:1])
    assert ports_differ((PortMapping(80, "tcp", "", 18081),), chosen[:1])
    assert endpoint_ports({}) == ()


@dataclass(frozen=True)
class Net:
    id: str
    name: str
    prefix: int = 24
    internal: bool = False


class FakeFips:
    """The network layer's `FloatingIps.follow_service`, recorded: (service, VIP id or None)."""

    def __init__(self) -> None:
        self.followed: list[tuple[str, str | None]] = []

    async def follow_service(self, service_id: str, vip: VipRecord | None) -> None:
        self.followed.append((service_id, vip.id if vip else None))


class FakeNetworks:
    """NetworkManager's VIP API in memory (addresses 10.0.0.100 on)."""

    def __init__(self) -> None:
        self.nets = {"n-default": Net("n-default", "bridge"), "n-app": Net("n-app", "app")}
        self.vips: dict[str, VipRecord] = {}
        self.endpoints: dict[str, list[Endpoint]] = {}
        self.calls: list[str] = []
        self.fips = FakeFips()

    def networks(self) -> list[Net]:
        return list(self.nets.values())

    def default_network(self, tenant: str) -> Net:
        return self.nets["n-default"]

    def resolve(self, ref: str, tenant: str | None) -> Net:
        for net in self.nets.values():
            if ref in (net.id, net.name):
                return net
        raise NotFound(f"network {ref} not found")

    def get(self, ref: str) -> Net:
        return self.nets[ref]

    def get_vip(self, vip_id: str, tenant: str | None = None) -> VipRecord:
        if vip_id not in self.vips:
            raise NotFound(f"virtual IP {vip_id} not found")
        return self.vips[vip_id]

    def container_endpoints(self, container_id: str) -> list[Endpoint]:
        return self.endpoints.get(container_id, [])

    async def reserve_vip(self, network: str, name: str, tenant: str = "", *,
                          aliases: tuple[str, ...] = (), mode: str = "vip") -> VipRecord:
        vip = VipRecord(f"v{len(self.calls)}", network, name,
                        "" if mode == "dnsrr" else f"10.0.0.{100 + len(self.vips)}", tenant,
                        aliases=aliases, mode=mode)
        self.vips[vip.id] = vip
        self.calls.append(f"reserve {network} {name} {mode}" + "".join(
            f" +{a}" for a in aliases))
        return vip

    async def set_backends(self, vip_id: str, backends: list[str]) -> VipRecord:
        self.vips[vip_id] = replace(self.vips[vip_id], backends=tuple(backends))
        self.calls.append(f"backends {self.vips[vip_id].network_id} {','.join(backends)}")
        return self.vips[vip_id]

    async def publish_vip(self, vip_id: str, ports: list[PortMapping]) -> VipRecord:
        chosen = tuple(replace(p, host_port=p.host_port or 40000) for p in ports)
        self.vips[vip_id] = replace(self.vips[vip_id], ports=chosen)
        self.calls.append(f"publish {[p.host_port for p in chosen]}")
        return self.vips[vip_id]

    async def release_vip(self, vip_id: str) -> None:
        self.calls.append(f"release {self.vips.pop(vip_id).network_id}")


def test_vips_follow_the_service_and_its_tasks(tmp_path: Path) -> None:
    async def main() -> None:
        store = ServiceStore(open_db(tmp_path))
        manager = ServiceManager(store, EventBus())
        nets = FakeNetworks()
        tasks: list[TaskRecord] = []
        containers: dict[str, ContainerRecord] = {}
        addressing = ServiceAddressing(manager, store, cast(NetworkManager, nets),
                                       lambda: tasks, containers.get)
        template = ContainerConfig(image="x", image_id="", network_mode="app",
                                   extra_networks=(("bridge", ()),))
        plan = ServicePlan(mode=Mode.REPLICATED, replicas=2, template=template,
                           restart=RestartPolicy())
        spec: dict[str, Any] = {"Name": "web", "EndpointSpec": {"Ports": [
            {"TargetPort": 80, "PublishedPort": 0}]}}
        svc = manager.create("", "web", spec_doc=spec, task_doc={}, plan=plan)
        await addressing.sync()
        assert nets.calls == ["reserve n-app web vip", "reserve n-default web vip",
                              "publish [40000]"]
        record = manager.get(svc.id)
        assert record.virtual_ips == (("n-app", "10.0.0.100/24"), ("n-default", "10.0.0.101/24"))
        assert record.published_ports == (PortMapping(80, "tcp", "", 40000),)
        # Two tasks run, one on its way out: backends on each network, once.
        for n, state in ((1, TaskState.RUNNING), (2, TaskState.RUNNING)):
            cid = f"c{n}"
            tasks.append(replace(task(state=state, container_id=cid, tid=f"t{n}"),
                                 service_id=svc.id))
            containers[cid] = container(cid=cid)
            nets.endpoints[cid] = [Endpoint("n-app", cid, cid, f"10.0.0.{n}", "m"),
                                   Endpoint("n-default", cid, cid, f"10.0.1.{n}", "m")]
        nets.calls.clear()
        await addressing.sync()
        assert nets.calls == ["backends n-app 10.0.0.1,10.0.0.2",
                              "backends n-default 10.0.1.1,10.0.1.2"]
        nets.calls.clear()
        tasks[0] = replace(tasks[0], desired=TaskState.SHUTDOWN)
        await addressing.withdraw(tasks[0])
        assert nets.calls == ["backends n-app 10.0.0.2", "backends n-default 10.0.1.2"]
        nets.calls.clear()
        await addressing.sync()
        assert nets.calls == []  # nothing changed: nothing done
        manager.remove(svc.id)
        await addressing.sync()
        assert sorted(nets.calls) == ["release n-app", "release n-default"]
        assert nets.vips == {} and store.vip_owners() == []

    asyncio.run(main())


def test_dnsrr_has_names_but_no_address(tmp_path: Path) -> None:
    async def main() -> None:
        store = ServiceStore(open_db(tmp_path))
        manager = ServiceManager(store, EventBus())
        nets = FakeNetworks()
        addressing = ServiceAddressing(manager, store, cast(NetworkManager, nets),
                                       lambda: [], lambda cid: None)
        plan = ServicePlan(mode=Mode.REPLICATED, replicas=1,
                           template=ContainerConfig(image="x", image_id=""),
                           restart=RestartPolicy())
        svc = manager.create("", "db", spec_doc={"Name": "db"}, task_doc={}, plan=plan,
                             endpoint_mode="dnsrr")
        await addressing.sync()
        assert nets.calls == ["reserve n-default db dnsrr"]
        assert manager.get(svc.id).virtual_ips == ()

    asyncio.run(main())


def test_a_stack_service_is_known_by_its_alias_on_its_network(tmp_path: Path) -> None:
    async def main() -> None:
        store = ServiceStore(open_db(tmp_path))
        manager = ServiceManager(store, EventBus())
        nets = FakeNetworks()
        addressing = ServiceAddressing(manager, store, cast(NetworkManager, nets),
                                       lambda: [], lambda cid: None)
        plan = ServicePlan(mode=Mode.REPLICATED, replicas=1, restart=RestartPolicy(),
                           template=ContainerConfig(image="x", image_id="",
                                                    network_mode="n-app"))
        task_doc = {"Networks": [{"Target": "n-app", "Aliases": ["app", "st_app"]}]}
        svc = manager.create("", "st_app", spec_doc={"Name": "st_app"}, task_doc=task_doc,
                             plan=plan)
        await addressing.sync()
        assert nets.calls == ["reserve n-app st_app vip +app"]
        nets.calls.clear()
        manager.update(svc.id, svc.version, spec_doc=svc.spec_doc, plan=plan,
                       task_doc={"Networks": [{"Target": "n-app", "Aliases": ["api"]}]},
                       force_changed=False)
        await addressing.sync()  # other names: a VIP with them (the address may change)
        assert nets.calls == ["release n-app", "reserve n-app st_app vip +api"]

    asyncio.run(main())


def test_a_fip_goes_to_the_first_vip_with_an_address_on_an_outside_network() -> None:
    internal = VipRecord("v1", "n-back", "web", "10.0.9.5")
    dnsrr = VipRecord("v2", "n-app", "web", "", mode="dnsrr")
    outside = VipRecord("v3", "n-default", "web", "10.0.0.7")
    assert fip_vip([internal, dnsrr, outside], {"n-back"}) == outside
    assert fip_vip([internal], {"n-back"}) is None
    assert fip_vip([internal, outside], set()) == internal  # the service's first network


def test_a_services_fip_follows_its_vip_and_goes_with_the_service(tmp_path: Path) -> None:
    async def main() -> None:
        store = ServiceStore(open_db(tmp_path))
        manager = ServiceManager(store, EventBus())
        nets = FakeNetworks()
        nets.nets["n-app"] = Net("n-app", "app", internal=True)
        addressing = ServiceAddressing(manager, store, cast(NetworkManager, nets),
                                       lambda: [], lambda cid: None)
        plan = ServicePlan(mode=Mode.REPLICATED, replicas=1, restart=RestartPolicy(),
                           template=ContainerConfig(image="x", image_id="", network_mode="app",
                                                    extra_networks=(("bridge", ()),)))
        svc = manager.create("", "web", spec_doc={"Name": "web"}, task_doc={}, plan=plan)
        chosen = await addressing.vip_for_fip(svc.id)
        # its first network is --internal: the FIP goes to its VIP on the default one
        assert (chosen.network_id, nets.fips.followed[-1]) == ("n-default", (svc.id, chosen.id))
        task_doc = {"Networks": [{"Target": "bridge", "Aliases": ["front"]}]}
        manager.update(svc.id, svc.version, spec_doc=svc.spec_doc, plan=plan,
                       task_doc=task_doc, force_changed=False)
        await addressing.sync()  # other aliases: a new VIP, the FIP is told which
        moved = nets.fips.followed[-1][1]
        assert moved is not None and moved != chosen.id
        assert nets.vips[moved].network_id == "n-default"
        manager.remove(svc.id)
        nets.calls.clear()
        await addressing.sync()
        assert nets.fips.followed[-1] == (svc.id, None)  # detached, before the VIPs went
        assert sorted(nets.calls) == ["release n-app", "release n-default"]

        db = manager.create("", "db", spec_doc={"Name": "db"}, task_doc={}, plan=replace(
            plan, template=ContainerConfig(image="x", image_id="")), endpoint_mode="dnsrr")
        with pytest.raises(InvalidArgument, match="endpoint mode is dnsrr"):
            await addressing.vip_for_fip(db.id)

    asyncio.run(main())
