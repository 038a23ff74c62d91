"""Wakes a service whose replicas all sleep (docs/services.md, "Auto-suspend"): while every
replica of a service with `--auto-suspend` is suspended (`dormancy.asleep`), a listener of the
daemon's on each of its virtual IPs' addresses (a `TcpProxy` on a port the kernel picks) takes
the VIP's tcp connections and those to its published tcp ports (`NetworkManager.set_vip_wake`
DNATs them there). The first connection resumes the suspended replicas (all of them, at once;
one resume per replica for any number of connections); each held connection is relayed, once
a replica runs, to that replica's address on the network and port it was going to (read from
conntrack: `SO_ORIGINAL_DST`). A floating IP attached to the service is DNATed to the same
listener while it sleeps (net/fip.py): its connections go to the port they were made to on
the FIP's VIP's network. Once a replica runs, the service's addressing makes it a
backend again, the VIP's own DNAT takes new connections, and the listener closes, relaying
the connections it holds to their end.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Callable, Iterable
from typing import Any

from steelcup.errors import NotFound, SteelcupError
from steelcup.net.manager import NetworkManager
from steelcup.net.model import VipRecord
from steelcup.net.proxy import TcpProxy
from steelcup.runtime.autosuspend import WAKE_CONNECT_TIMEOUT_S
from steelcup.runtime.containers import Runtime
from steelcup.runtime.model import ContainerRecord
from steelcup.services import dormancy
from steelcup.services.manager import ServiceManager
from steelcup.services.model import ServiceRecord, TaskRecord
from steelcup.services.orchestrator import Orchestrator
from steelcup.services.store import ServiceStore

log = logging.getLogger(__name__)

# The container events after which a service may have fallen asleep or woken.
_EVENTS = frozenset({"suspend", "resume", "start", "die", "destroy"})


class ServiceWaker:
    """Listens for the services that sleep and resumes their replicas on a connection."""

    def __init__(self, manager: ServiceManager, store: ServiceStore, networks: NetworkManager,
                 runtime: Runtime, tasks: Callable[[], Iterable[TaskRecord]],
                 netns: str | None) -> None:
        self.manager = manager
        self.store = store
        self.networks = networks
        self.runtime = runtime
        self.tasks = tasks
        self.netns = netns
        self._listening: dict[str, dict[str, TcpProxy]] = {}  # service id -> VIP id -> proxy
        self._waking: dict[str, asyncio.Task[None]] = {}  # service id -> its resume
        self._resuming: set[asyncio.Task[bool]] = set()  # each replica's resume
        self._draining: list[TcpProxy] = []  # closed to new connections, relaying held ones
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    @classmethod
    def attach(cls, orchestrator: Orchestrator, networks: NetworkManager) -> ServiceWaker:
        """Follow `orchestrator`'s services and their replicas' containers."""
        waker = cls(orchestrator.manager, orchestrator.store, networks, orchestrator.runtime,
                    lambda: orchestrator.tasks.values(), networks.host.netns)
        orchestrator.runtime.events.listen(waker._observe)
        orchestrator.manager.on_change(waker.wake)
        return waker

    def wake(self) -> None:
        self._wake.set()

    def _observe(self, event: dict[str, Any]) -> None:
        if event.get("Type") == "container" and event.get("Action") in _EVENTS:
            self._wake.set()

    def start(self) -> None:
        self._wake.set()  # a first look: services that slept through a daemon restart
        self._loop = asyncio.create_task(self._run(), name="service-waker")

    async def close(self) -> None:
        """Stop listening (the VIPs refuse again until the next daemon listens)."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        for task in [*self._waking.values(), *self._resuming]:
            task.cancel()
        for service_id in list(self._listening):
            with contextlib.suppress(SteelcupError, OSError):
                await self._stop_listening(service_id)
        for proxy in self._draining:
            await proxy.close()
        self._draining = []

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.sync()
            except Exception:  # a bug must not end every service's waking
                log.exception("service waker failed; trying again at the next change")

    # -- what sleeps -------------------------------------------------------------------------

    def replicas(self, service_id: str) -> list[dormancy.Replica]:
        out = []
        for task in self.tasks():
            if task.service_id != service_id:
                continue
            record = self._container(task.container_id)
            out.append(dormancy.Replica(
                task.id, task.container_id, task.desired, task.state,
                running=record is not None and record.state.running,
                suspended=record is not None and record.state.suspended))
        return out

    async def sync(self) -> None:
        """Listen for each service that sleeps; stop for the others."""
        for service_id in list(self.manager.services):
            service = self.manager.services.get(service_id)
            if service is None:
                continue
            sleeping = dormancy.asleep(service.plan.template.auto_suspend_s,
                                       self.replicas(service_id))
            if sleeping and service_id not in self._waking:
                await self._listen(service)
            elif not sleeping and service_id in self._listening:
                await self._stop_listening(service_id)
        for service_id in [s for s in self._listening if s not in self.manager.services]:
            await self._stop_listening(service_id)
        self._draining = [p for p in self._draining if p.relaying]

    async def _listen(self, service: ServiceRecord) -> None:
        listening = self._listening.setdefault(service.id, {})
        for vip in self._vips(service.id):
            if not vip.address or vip.id in listening:
                continue
            proxy = TcpProxy(vip.address, 0, "", 0, self.netns,
                             connect_timeout_s=WAKE_CONNECT_TIMEOUT_S)
            try:
                await proxy.start()
                # before anything is DNATed to it (the port is the kernel's choice)
                proxy.choose_target = functools.partial(self._relay, service.id,
                                                        (vip.address, proxy.port))
                await self.networks.set_vip_wake(vip.id, proxy.port)
            except (OSError, SteelcupError) as exc:
                await proxy.close()
                log.warning("service %s: cannot listen on %s to wake it on a connection: %s",
                            service.name, vip.address, exc)
                continue
            listening[vip.id] = proxy
            log.info("service %s: every replica is suspended; a connection to %s wakes it",
                     service.name, vip.address)

    async def _stop_listening(self, service_id: str) -> None:
        for vip_id, proxy in self._listening.pop(service_id, {}).items():
            with contextlib.suppress(NotFound):
                await self.networks.set_vip_wake(vip_id, 0)
            proxy.stop_listening()
            self._draining.append(proxy)

    def _vips(self, service_id: str) -> list[VipRecord]:
        out = []
        for vip_id in self.store.service_vips(service_id).values():
            with contextlib.suppress(NotFound):
                out.append(self.networks.get_vip(vip_id))
        return out

    def _container(self, container_id: str) -> ContainerRecord | None:
        if not container_id:
            return None
        try:
            return self.runtime.record(container_id)
        except NotFound:
            return None

    # -- a connection ------------------------------------------------------------------------

    async def _relay(self, service_id: str, listener: tuple[str, int],
                     original: tuple[str, int]) -> tuple[str, int]:
        """A held connection's target: a running replica of the service, resumed first (a
        connection that is for none of its VIPs, its FIP or its published ports wakes
        nothing)."""
        vips = self._vips(service_id)
        published = next((v for v in vips if v.ports), None)
        target = dormancy.relay_target(
            original, dormancy.wake_addresses(vips, self.networks.fips.of_service(service_id)),
            published.ports if published is not None else (),
            published.network_id if published is not None else "",
            listener)
        if target is None:
            raise NotFound(f"{original[0]}:{original[1]} is neither a virtual IP nor a "
                           "published port of the service")
        task = self._waking.get(service_id)
        if task is None:
            task = asyncio.create_task(self._resume(service_id),
                                       name=f"wake-service-{service_id[:12]}")
            self._waking[service_id] = task
        await asyncio.shield(task)
        network_id, port = target
        addresses = [e.address for r in self.replicas(service_id) if r.serving and r.running
                     for e in self.networks.container_endpoints(r.container_id)
                     if e.network_id == network_id]
        if not addresses:
            raise NotFound("no replica of the service runs on the network after its resume")
        return random.choice(addresses), port  # noqa: S311 - spreading, not a secret

    async def _resume(self, service_id: str) -> None:
        """Resume the service's suspended replicas at once; done once one runs (the others
        go on resuming)."""
        try:
            pending = {asyncio.create_task(self._resume_one(cid))
                       for cid in dormancy.to_resume(self.replicas(service_id))}
            for job in pending:  # each goes on after the first is done
                self._resuming.add(job)
                job.add_done_callback(self._resuming.discard)
            while pending:
                done, pending = await asyncio.wait(pending,
                                                   return_when=asyncio.FIRST_COMPLETED)
                if any(t.result() for t in done):
                    return
            raise NotFound("no replica of the service could be resumed")
        finally:
            self._waking.pop(service_id, None)
            self._wake.set()

    async def _resume_one(self, container_id: str) -> bool:
        try:
            await self.runtime.resume(container_id)
        except SteelcupError as exc:
            log.warning("container %s: resume on a connection failed: %s", container_id[:12],
                        exc)
            return False
        log.info("container %s: resumed by a connection to its service", container_id[:12])
        return True
