"""Service addressing: a virtual IP per service on each of its networks (docs/services.md).

What a service should have is decided by pure functions (`wanted_networks`, `is_backend`,
`endpoint_ports`); `ServiceAddressing` carries it out with the network layer's VIP API
(`NetworkManager.reserve_vip`, `set_backends`, `publish_vip`, `release_vip`): the VIP is
named after the service (its DNS name; `tasks.NAME` answers the replicas), its backends are
the addresses of the service's running, healthy tasks' containers, its published ports are
the service's `EndpointSpec.Ports`. Which VIP is whose is kept in the service store, so a
restarted daemon picks up where it was and a removed service's VIPs are released.

A floating IP attached to a service (`fip attach IP SERVICE`) goes to its first VIP on a
network that reaches the outside (`fip_vip`); each sync tells the network layer which VIP that
is now, and a removed service's FIP is detached before its VIPs go.

Driven by the orchestrator's task changes (and service changes); the orchestrator awaits
`withdraw` before it stops a task's container, so the task leaves the VIP before its server
goes away (what makes a start-first update lose no connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Iterable
from typing import Any

from steelcup.errors import InvalidArgument, NotFound, SteelcupError
from steelcup.net.manager import NetworkManager
from steelcup.net.model import PortMapping, VipRecord
from steelcup.runtime.healthcheck import HealthStatus
from steelcup.runtime.model import ContainerConfig, ContainerRecord
from steelcup.services.manager import ServiceManager
from steelcup.services.model import ServiceRecord, TaskRecord, TaskState
from steelcup.services.orchestrator import Orchestrator
from steelcup.services.store import ServiceStore

log = logging.getLogger(__name__)

NO_NETWORK_MODES = ("none", "host")
DEFAULT_MODES = ("", "default", "bridge")


def wanted_networks(template: ContainerConfig) -> tuple[str, ...]:
    """The networks (as named in the template) a service's tasks join: the primary one
    ("" when it is the tenant's default network) and the extra ones; none for the network
    modes without a network (`none`, `host`) or another container's."""
    mode = template.network_mode
    if mode in NO_NETWORK_MODES or mode.startswith("container:"):
        return ()
    primary = "" if mode in DEFAULT_MODES else mode
    names = [primary, *(name for name, _aliases in template.extra_networks)]
    return tuple(dict.fromkeys(names))


def network_aliases(service: ServiceRecord) -> dict[str, tuple[str, ...]]:
    """Network (as named in the spec) -> the service's aliases on it (its VIP's other names:
    a stack's services are known by their short names on the stack's networks)."""
    attachments = (service.task_doc.get("Networks") or service.spec_doc.get("Networks")
                   or [])
    return {str(a["Target"]): tuple(dict.fromkeys(
        str(alias) for alias in a.get("Aliases") or [] if alias != service.name))
        for a in attachments if isinstance(a, dict) and a.get("Target")}


def is_backend(task: TaskRecord, container: ContainerRecord | None) -> bool:
    """A task whose container receives the service's connections: running (and healthy,
    when it has a health check: the orchestrator keeps it starting until it passed), not
    on its way out."""
    if (container is None or not container.state.running or task.unhealthy
            or task.desired is not TaskState.RUNNING or task.state is not TaskState.RUNNING):
        return False
    health = container.state.health
    return health is None or health.status is not HealthStatus.UNHEALTHY


def endpoint_ports(spec_doc: dict[str, Any]) -> tuple[PortMapping, ...]:
    """`EndpointSpec.Ports` (checked by the codec) as the VIP's published ports."""
    ports = (spec_doc.get("EndpointSpec") or {}).get("Ports") or []
    return tuple(PortMapping(int(p["TargetPort"]), str(p.get("Protocol") or "tcp"), "",
                             int(p.get("PublishedPort") or 0)) for p in ports)


def ports_differ(wanted: Iterable[PortMapping], have: Iterable[PortMapping]) -> bool:
    """Whether the VIP must be published again: a port asked, gone or moved (a port asked
    as 0 is satisfied by whichever host port was chosen for it)."""
    def key(pm: PortMapping) -> tuple[int, str]:
        return pm.container_port, pm.proto
    have_by = {key(pm): pm.host_port for pm in have}
    wanted_list = list(wanted)
    if {key(pm) for pm in wanted_list} != set(have_by):
        return True
    return any(pm.host_port and pm.host_port != have_by[key(pm)] for pm in wanted_list)


def fip_vip(vips: Iterable[VipRecord], internal: Collection[str]) -> VipRecord | None:
    """The VIP a service's floating IP goes to: of `vips` (in the order of the service's
    networks) the first with an address on a network not in `internal`."""
    return next((v for v in vips if v.address and v.network_id not in internal), None)


class ServiceAddressing:
    """Keeps every service's VIPs in step with its spec and its tasks."""

    def __init__(self, manager: ServiceManager, store: ServiceStore,
                 networks: NetworkManager, tasks: Callable[[], Iterable[TaskRecord]],
                 container: Callable[[str], ContainerRecord | None]) -> None:
        self.manager = manager
        self.store = store
        self.networks = networks
        self.tasks = tasks
        self.container = container
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._moved = asyncio.Event()  # a sync or a container removal happened
        self._loop: asyncio.Task[None] | None = None

    @classmethod
    def attach(cls, orchestrator: Orchestrator, networks: NetworkManager) -> ServiceAddressing:
        """Follow `orchestrator`'s tasks and services (before it starts: its resume counts)."""
        addressing = cls(orchestrator.manager, orchestrator.store, networks,
                         lambda: orchestrator.tasks.values(), orchestrator.container)
        orchestrator.task_changed = lambda task: addressing.wake()
        orchestrator.runtime.events.listen(addressing._observe)
        orchestrator.before_stop = addressing.withdraw
        orchestrator.manager.on_change(addressing.wake)
        return addressing

    def wake(self) -> None:
        self._wake.set()

    def _observe(self, event: dict[str, Any]) -> None:
        if event.get("Type") == "container" and event.get("Action") == "destroy":
            self._moved.set()

    def leaving(self, network_id: str) -> bool:
        """Whether removed services still hold `network_id`: their tasks' containers, not
        removed yet, or their VIPs, not released yet."""
        gone = {t.container_id for t in self.tasks()
                if t.container_id and (t.service_id not in self.manager.services
                                       or t.desired is TaskState.REMOVE)}
        if any(e.container_id in gone for e in self.networks.endpoints(network_id)):
            return True
        return any(network_id in self.store.service_vips(sid)
                   for sid in self.store.vip_owners() if sid not in self.manager.services)

    async def settle_network(self, network_id: str, timeout_s: float = 60.0) -> None:
        """Before `network_id` is removed: wait (at most `timeout_s`) until removed services
        have left it. `docker stack rm` removes a stack's services, then at once its
        networks, which dockerd allows as the tasks go; here their VMs must stop first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.leaving(network_id) and loop.time() < deadline:
            self._moved.clear()
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), deadline - loop.time())

    def start(self) -> None:
        self._wake.set()  # a first pass: what changed while the daemon was down
        self._loop = asyncio.create_task(self._run(), name="service-addressing")

    async def close(self) -> None:
        """Stop following (the VIPs stay: they are the services', kept across restarts)."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop

    async def withdraw(self, task: TaskRecord) -> None:
        """Before `task`'s container stops: its service's VIPs stop sending it connections
        (the orchestrator has already marked it as going)."""
        await self.sync(task.service_id)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.sync()
            except Exception:  # a bug must not end every service's addressing
                log.exception("service addressing failed; trying again at the next change")

    async def sync(self, service_id: str | None = None, *, strict: bool = False) -> None:
        """Bring one service's VIPs (None: every service's, and release removed ones') in
        step. `strict`: a failure (a published port taken) is raised, else logged."""
        try:
            await self._sync(service_id, strict)
        finally:
            self._moved.set()

    async def _sync(self, service_id: str | None, strict: bool) -> None:
        async with self._lock:
            ids = ([service_id] if service_id is not None
                   else list(dict.fromkeys([*self.manager.services, *self.store.vip_owners()])))
            for sid in ids:
                try:
                    await self._sync_one(sid)
                except SteelcupError as exc:
                    if strict:
                        raise
                    log.warning("service %s: its virtual IPs: %s", sid[:12], exc)

    async def _sync_one(self, service_id: str) -> None:
        service = self.manager.services.get(service_id)
        held = self.store.service_vips(service_id)  # network id -> vip id
        if service is None:
            await self.networks.fips.follow_service(service_id, None)  # before its VIP goes
            for network_id, vip_id in held.items():
                await self._release(service_id, network_id, vip_id)
            return
        wanted = self._network_ids(service)  # network id -> aliases
        vips: dict[str, VipRecord] = {}
        for network_id, vip_id in held.items():
            vip = self._vip(vip_id)
            if (vip is None or network_id not in wanted or vip.mode != service.endpoint_mode
                    or vip.aliases != wanted[network_id]):
                await self._release(service_id, network_id, vip_id)
            else:
                vips[network_id] = vip
        for network_id, aliases in wanted.items():
            if network_id not in vips:
                vip = await self.networks.reserve_vip(network_id, service.name,
                                                      service.tenant, aliases=aliases,
                                                      mode=service.endpoint_mode)
                self.store.save_service_vip(service_id, network_id, vip.id)
                vips[network_id] = vip
        backends = self._backends(service)
        for network_id, vip in vips.items():
            chosen = sorted(backends.get(network_id, ()))
            if sorted(vip.backends) != chosen:
                vips[network_id] = await self.networks.set_backends(vip.id, chosen)
        ports = endpoint_ports(service.spec_doc) if service.endpoint_mode == "vip" else ()
        first = next((vips[n] for n in wanted if n in vips), None)
        if first is not None and ports_differ(ports, first.ports):
            first = await self.networks.publish_vip(first.id, ports)
            vips[first.network_id] = first
        addresses = tuple((n, f"{vips[n].address}/{self.networks.get(n).prefix}")
                          for n in wanted if n in vips and vips[n].address)
        published = first.ports if first is not None else ()
        if addresses != service.virtual_ips or published != service.published_ports:
            self.manager.set_virtual_ips(service_id, addresses, published)
        await self.networks.fips.follow_service(
            service_id, fip_vip((vips[n] for n in wanted if n in vips), self._internal()))

    def _internal(self) -> set[str]:
        return {n.id for n in self.networks.networks() if n.internal}

    async def vip_for_fip(self, service_id: str) -> VipRecord:
        """The VIP a floating IP attached to the service goes to (its VIPs made first, if
        the service is new); InvalidArgument if it has none a FIP can go to."""
        await self.sync(service_id)
        service = self.manager.get(service_id)
        held = self.store.service_vips(service_id)
        vips = [v for v in (self._vip(held[n]) for n in self._network_ids(service) if n in held)
                if v is not None]
        chosen = fip_vip(vips, self._internal())
        if chosen is None:
            why = ("its endpoint mode is dnsrr" if service.endpoint_mode != "vip"
                   else "it is on no network that reaches the outside (none, or only "
                   "--internal ones)")
            raise InvalidArgument(f"service {service.name} has no virtual IP a floating IP "
                                  f"can go to: {why}")
        return chosen

    def _network_ids(self, service: ServiceRecord) -> dict[str, tuple[str, ...]]:
        """The ids of the service's networks (in order) and its aliases on each."""
        aliases = network_aliases(service)
        out: dict[str, tuple[str, ...]] = {}
        for name in wanted_networks(service.plan.template):
            net = (self.networks.default_network(service.tenant) if not name
                   else self.networks.resolve(name, service.tenant))
            out.setdefault(net.id, aliases.get(name, ()))
        return out

    def _backends(self, service: ServiceRecord) -> dict[str, set[str]]:
        """Network id -> the addresses of the service's serving tasks' containers on it."""
        out: dict[str, set[str]] = {}
        for task in self.tasks():
            if task.service_id != service.id or not task.container_id:
                continue
            if not is_backend(task, self.container(task.container_id)):
                continue
            for endpoint in self.networks.container_endpoints(task.container_id):
                out.setdefault(endpoint.network_id, set()).add(endpoint.address)
        return out

    def _vip(self, vip_id: str) -> VipRecord | None:
        try:
            return self.networks.get_vip(vip_id)
        except NotFound:
            return None

    async def _release(self, service_id: str, network_id: str, vip_id: str) -> None:
        with contextlib.suppress(NotFound):
            await self.networks.release_vip(vip_id)
        self.store.delete_service_vip(service_id, network_id)
