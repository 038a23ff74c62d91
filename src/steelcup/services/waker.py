"""Wakes a service whose replicas all sleep (docs/services.md, "Auto-suspend"): while every
replica of a service with `--auto-suspend` is suspended (`dormancy.asleep`), a listener of the
daemon's on each of its virtual IPs' addresses (a `TcpProxy` on a port the kernel picks) takes
the VIP's tcp connections and those to its published tcp ports (`NetworkManager.set_vip_wake`
DNATs them there). The first connection resumes the suspended replicas (all of them, at once;
one resume per replica for any number of connections); each held connection is relayed, once
a replica runs, to that replica's address on the network and port it was going to (read from
conntrack: `SO_ORIGINAL_DST`). A floating IP attached to the service is DNATed to the same
listener while it sleeps (net/fip.py): its connections go to the port they were made to on
the FIP's VIP's network. Once a replica runs, the service's addressing makes it a backend
again, the VIP's own DNAT takes new connections, and the listener closes, relaying the
connections it holds to their end.

The VIP's udp (any port, and its published udp ports) goes to a udp listener on its address
the same way (net/udpwake.py): the first datagram resumes the replicas, those that come
meanwhile are held (bounded), then each is relayed to a replica on the port it was sent to,
and the replies reach the client. That listener outlives the sleep: a client's flow keeps
coming to it while conntrack remembers its DNAT, so it relays until it has been quiet for
UDP_DRAIN_S, and holds again if the service falls asleep before.
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
from steelcup.net.proxy import ConnectionCap, TcpProxy
from steelcup.net.udpwake import UdpWakeRelay
from steelcup.runtime.autosuspend import (
    UDP_DRAIN_S,
    WAKE_CONNECT_TIMEOUT_S,
    WAKE_CONNECTS_AT_ONCE,
    WAKE_MAX_CONNECTIONS,
    WAKE_RELAY_GRACE_S,
)
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
        # service id -> the bound on what its listeners hold and relay at once (all its VIPs)
        self._caps: dict[str, ConnectionCap] = {}
        self._resuming: set[asyncio.Task[bool]] = set()  # each replica's resume
        self._draining: list[TcpProxy] = []  # closed to new connections, relaying held ones
        self._udp: dict[str, dict[str, UdpWakeRelay]] = {}  # service id -> VIP id -> relay
        self._wake = asyncio.Event()
        self._syncing = asyncio.Lock()
        self._loop: asyncio.Task[None] | None = None

    @classmethod
    def attach(cls, orchestrator: Orchestrator, networks: NetworkManager) -> ServiceWaker:
        """Follow `orchestrator`'s services and their replicas' containers."""
        waker = cls(orchestrator.manager, orchestrator.store, networks, orchestrator.runtime,
                    lambda: orchestrator.tasks.values(), networks.host.netns)
        orchestrator.runtime.events.listen(waker._observe)
        orchestrator.runtime.suspend_watchers.append(waker.suspend_changed)
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
        for service_id in list(self._udp):
            self._close_udp(service_id)

    async def _run(self) -> None:
        while True:
            # a udp listener of an awake service closes once quiet: look again by then
            # (asyncio.timeout, not wait_for: 3.11's wait_for may swallow a cancellation)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(UDP_DRAIN_S if self._udp else None):
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
            # One being saved for a suspend is asleep already: its address takes nothing
            # (the runtime unpublished it), and its resume waits for the save.
            saving = record is not None and self.runtime.suspending(record.id)
            out.append(dormancy.Replica(
                task.id, task.container_id, task.desired, task.state,
                running=record is not None and record.state.running and not saving,
                suspended=record is not None and (record.state.suspended or saving)))
        return out

    async def suspend_changed(self, container_id: str) -> None:
        """The runtime's suspend watcher: a replica's suspend begins (or failed). If that
        puts its service to sleep, the wake listeners bind and take the VIPs now, before the
        runtime unpublishes the replica for its save; what comes meanwhile is held."""
        await self.sync()

    async def sync(self) -> None:
        """Listen for each service that sleeps; stop for the others. One at a time (the loop's
        and a suspend watcher's)."""
        async with self._syncing:
            await self._sync()

    async def _sync(self) -> None:
        for service_id in list(self.manager.services):
            service = self.manager.services.get(service_id)
            if service is None:
                continue
            sleeping = dormancy.asleep(service.plan.template.auto_suspend_s,
                                       self.replicas(service_id))
            if sleeping and service_id not in self._waking:
                await self._listen(service)
            elif not sleeping:
                if service_id in self._listening:
                    await self._stop_listening(service_id)
                self._expire_udp(service_id)
        for service_id in [s for s in self._listening if s not in self.manager.services]:
            await self._stop_listening(service_id)
        for service_id in [s for s in self._caps if s not in self.manager.services]:
            del self._caps[service_id]  # its draining listeners keep theirs to their end
        for service_id in [s for s in self._udp if s not in self.manager.services]:
            self._close_udp(service_id)
        self._draining = [p for p in self._draining if p.relaying]

    async def _listen(self, service: ServiceRecord) -> None:
        listening = self._listening.setdefault(service.id, {})
        cap = self._caps.setdefault(service.id, ConnectionCap(WAKE_MAX_CONNECTIONS))
        idle_s = service.plan.template.auto_suspend_s + WAKE_RELAY_GRACE_S
        for vip in self._vips(service.id):
            if not vip.address or vip.id in listening:
                continue
            proxy = TcpProxy(vip.address, 0, "", 0, self.netns,
                             connect_timeout_s=WAKE_CONNECT_TIMEOUT_S, cap=cap,
                             idle_timeout_s=idle_s, connects_at_once=WAKE_CONNECTS_AT_ONCE)
            try:
                await proxy.start()
                # before anything is DNATed to it (the port is the kernel's choice)
                proxy.choose_target = functools.partial(self._relay, service.id,
                                                        (vip.address, proxy.port))
                udp = await self._udp_listener(service, vip)
                await self.networks.set_vip_wake(vip.id, proxy.port,
                                                 udp.port if udp is not None else 0)
            except (OSError, SteelcupError) as exc:
                await proxy.close()
                log.warning("service %s: cannot listen on %s to wake it on a connection: %s",
                            service.name, vip.address, exc)
                continue
            listening[vip.id] = proxy
            log.info("service %s: every replica is suspended; a connection or datagram to %s "
                     "wakes it", service.name, vip.address)

    async def _udp_listener(self, service: ServiceRecord, vip: VipRecord
                            ) -> UdpWakeRelay | None:
        """The VIP's udp listener, holding (the one still relaying from the last wake, or a
        new one); None if it cannot be bound (its udp is refused, its tcp still wakes it)."""
        relays = self._udp.setdefault(service.id, {})
        relay = relays.get(vip.id)
        if relay is not None:
            relay.hold()
            return relay
        relay = UdpWakeRelay(vip.address, self.netns,
                             functools.partial(self._wake_udp, service.id),
                             functools.partial(self._relay, service.id, proto="udp"))
        try:
            await relay.start()
        except OSError as exc:
            log.warning("service %s: cannot listen for udp on %s to wake it: %s",
                        service.name, vip.address, exc)
            return None
        relays[vip.id] = relay
        return relay

    async def _wake_udp(self, service_id: str, listener: tuple[str, int],
                        original: tuple[str, int]) -> None:
        """A first datagram: the service's resume (none for a datagram to none of its
        ports)."""
        self._target(service_id, listener, original, "udp")
        await self._awake(service_id)

    async def _stop_listening(self, service_id: str) -> None:
        for vip_id, proxy in self._listening.pop(service_id, {}).items():
            with contextlib.suppress(NotFound):
                await self.networks.set_vip_wake(vip_id, 0)
            proxy.stop_listening()
            self._draining.append(proxy)

    def _expire_udp(self, service_id: str) -> None:
        """An awake service's udp listeners close once quiet for longer than conntrack keeps
        a flow DNATed to them (a holding one that never woke: as soon as it is that old)."""
        relays = self._udp.get(service_id, {})
        for vip_id, relay in list(relays.items()):
            if relay.quiet_s() >= UDP_DRAIN_S:
                relay.close()
                del relays[vip_id]
        if not relays:
            self._udp.pop(service_id, None)

    def _close_udp(self, service_id: str) -> None:
        for relay in self._udp.pop(service_id, {}).values():
            relay.close()

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

    def _target(self, service_id: str, listener: tuple[str, int], original: tuple[str, int],
                proto: str) -> tuple[str, int]:
        """Where a held connection or datagram goes, as (network id, port) on a replica."""
        vips = self._vips(service_id)
        published = next((v for v in vips if v.ports), None)
        target = dormancy.relay_target(
            original, dormancy.wake_addresses(vips, self.networks.fips.of_service(service_id)),
            published.ports if published is not None else (),
            published.network_id if published is not None else "",
            listener, proto)
        if target is None:
            raise NotFound(f"{original[0]}:{original[1]}/{proto} is neither a virtual IP nor "
                           "a published port of the service")
        return target

    async def _awake(self, service_id: str) -> None:
        """Until a replica of the service runs: its resume, started by the first caller."""
        task = self._waking.get(service_id)
        if task is None:
            task = asyncio.create_task(self._resume(service_id),
                                       name=f"wake-service-{service_id[:12]}")
            self._waking[service_id] = task
        await asyncio.shield(task)

    async def _relay(self, service_id: str, listener: tuple[str, int],
                     original: tuple[str, int], proto: str = "tcp") -> tuple[str, int]:
        """A held connection's (or datagram flow's) target: a running replica of the service,
        resumed first (one that is for none of its VIPs, its FIP or its published ports
        wakes nothing)."""
        network_id, port = self._target(service_id, listener, original, proto)
        await self._awake(service_id)
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
            replicas = self.replicas(service_id)
            if any(r.serving and r.running for r in replicas):
                return  # awake already (a flow that reached the listener after the wake)
            pending = {asyncio.create_task(self._resume_one(cid))
                       for cid in dormancy.to_resume(replicas)}
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
