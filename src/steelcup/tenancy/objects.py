"""What each object layer tells tenancy: how much of each quota a tenant holds (the counts the
quota gate adds to), the gate around each layer's creations, and what a tenant still owns
(`tenant rm` refuses while it owns anything). Wired once by the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from steelcup.cron.scheduler import Crons
from steelcup.errors import Conflict, NotFound
from steelcup.funcs.service import Funcs
from steelcup.image.credentials import TenantCredentials
from steelcup.image.store import ImageStore
from steelcup.net.manager import DEFAULT_NETWORK, NetworkManager
from steelcup.runtime.containers import Runtime
from steelcup.services.manager import ServiceManager
from steelcup.services.objects import ObjectManager
from steelcup.tenancy.manager import Tenants
from steelcup.volume.manager import GIB, VolumeManager

log = logging.getLogger(__name__)


def wire(tenants: Tenants, runtime: Runtime, images: ImageStore,
         networks: NetworkManager | None, volumes: VolumeManager,
         crons: Crons | None = None, services: ServiceManager | None = None,
         swarm_objects: ObjectManager | None = None) -> None:
    """Register the counts of images, networks, floating IPs, volumes, crons, services and
    swarm secrets and configs (together, the `secrets` quota)
    (containers, vCPUs and memory are `runtime.admission`'s), hand each layer the gate, and
    say what a tenant owns."""
    gate = tenants.quotas
    if services is not None:
        gate.register("services", lambda t: len(services.list(t)))
        services.admit = gate.admit
    if swarm_objects is not None:
        gate.register("secrets", lambda t: len(swarm_objects.list(None, t)))
        swarm_objects.admit = gate.admit
    gate.register("images", lambda t: len(images.list(t)))
    images.images_quota = lambda t: tenants.get(t).quotas.images
    gate.register("volumes", lambda t: len(volumes.list(t)))
    gate.register("volume_gib",
                  lambda t: sum(-(-v.size_bytes // GIB) for v in volumes.list(t)))
    volumes.admit = gate.admit
    if networks is not None:
        gate.register("networks", lambda t: len(own_networks(networks, t)))
        networks.admit = gate.admit
        gate.register("fips", lambda t: len(networks.fips.list(t)))
        networks.fips.admit = gate.admit
    if crons is not None:
        store = crons.store
        gate.register("crons", lambda t: len(store.list(t)))
        crons.admit = gate.admit

    def owned(tenant: str) -> list[str]:
        return ([f"service {s.name}" for s in (services.list(tenant) if services else [])]
                + [f"{o.kind.value} {o.name}" for o in (
                    swarm_objects.list(None, tenant) if swarm_objects else [])]
                + [f"container {c.name}" for c in runtime.list(tenant)]
                + [f"image {(i.repo_tags or [i.id[:19]])[0]}" for i in images.list(tenant)]
                + [f"volume {v.name}" for v in volumes.list(tenant)]
                + ([f"network {n}" for n in own_networks(networks, tenant)]
                   + [f"floating IP {f.address}" for f in networks.fips.list(tenant)]
                   if networks is not None else [])
                + ([f"cron {spec.name}" for spec, _ in crons.list(tenant)]
                   if crons is not None else []))

    tenants.owned = owned


def wire_funcs(tenants: Tenants, funcs: Funcs) -> None:
    """A tenant's funcs are among what it owns (`tenant rm` refuses while it has any); their
    count quota is registered by `Funcs` itself."""
    owned = tenants.owned
    tenants.owned = lambda tenant: [*owned(tenant),
                                    *(f"func {f.name}" for f in funcs.list(tenant))]


def own_networks(networks: NetworkManager, tenant: str) -> list[str]:
    """The networks a tenant made (its default `bridge`, made by steelcup, is not one)."""
    return [n.name for n in networks.networks(tenant) if n.name != DEFAULT_NETWORK]


class Teardown:
    """A tenant's end: `purge` removes everything it owns (`tenant rm --force`: its crons
    and their running jobs, its containers and their VMs, snapshots, volumes, networks, its
    floating IPs, hold on images), `forget` what steelcup made for it (its default bridge, its saved
    registry logins) once it is removed.
    Nothing of another tenant's is touched: every call names the tenant."""

    def __init__(self, runtime: Runtime, images: ImageStore, networks: NetworkManager | None,
                 volumes: VolumeManager | None, credentials: TenantCredentials,
                 crons: Crons | None = None, funcs: Funcs | None = None,
                 services: ServiceManager | None = None,
                 swarm_objects: ObjectManager | None = None) -> None:
        self.funcs = funcs
        self.services = services
        self.swarm_objects = swarm_objects
        self.runtime = runtime
        self.crons = crons
        self.images = images
        self.networks = networks
        self.volumes = volumes
        self.credentials = credentials

    async def purge(self, tenant: str) -> None:
        if self.services is not None:  # first: their orchestrator would replace containers
            for service in self.services.list(tenant):
                self.services.remove(service.id)
        if self.swarm_objects is not None:  # no service of the tenant uses them now
            for obj in self.swarm_objects.list(None, tenant):
                self.swarm_objects.remove(obj.id)
        if self.crons is not None:  # first: no new job container appears meanwhile
            for spec, _ in self.crons.list(tenant):
                await self.crons.remove(spec.key, force=True)
        if self.funcs is not None:  # before its containers: no new call starts
            for func in self.funcs.list(tenant):
                self.funcs.remove(func.key)
        for record in self.runtime.list(tenant):
            try:
                await self.runtime.remove(record.id, force=True)
            except Conflict:  # being removed already (a removed service's task): wait for it
                with contextlib.suppress(NotFound):
                    await self.runtime.waiter(record.id, "removed")
            except NotFound:
                pass
        if self.volumes is not None:
            volumes = self.volumes
            for snap in volumes.snapshots.list(tenant):
                await asyncio.to_thread(volumes.snapshots.remove, snap.key)
            for vol in volumes.list(tenant):
                await asyncio.to_thread(volumes.remove, vol.key, force=True)
        if self.networks is not None:
            for rec in self.networks.fips.list(tenant):
                await self.networks.fips.release(rec.address, tenant)
            for name in own_networks(self.networks, tenant):
                await self.networks.remove(name, tenant)
        for image in self.images.list(tenant):
            await asyncio.to_thread(self.images.remove, image.id, True, tenant)

    async def forget(self, tenant: str) -> None:
        try:
            if self.networks is not None:
                await self.networks.remove_tenant(tenant)
            self.credentials.forget(tenant)
        except Exception:  # the tenant is gone already: say what is left, never fail
            log.exception("tenant %s removed, but not all it left behind", tenant)
