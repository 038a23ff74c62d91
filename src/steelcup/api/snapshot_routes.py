"""Volume snapshots (steelcup extension, `/steelcup/snapshots...`): thin adapters to the volume
manager's `SnapshotStore`. A new volume from a snapshot is `POST /volumes/create` with the
driver option `snapshot`.

Snapshots are per tenant like volumes: `/steelcup/snapshots/{name}` reaches the handler
resolved to a snapshot the caller may see (`scope`), a snapshot is made only of one of the
caller's volumes, and lists are the caller's (the operator's: every tenant's, by key)."""

from __future__ import annotations

import asyncio

from steelcup.api.http import EmptyResponse, JsonResponse, Request, Response, Router
from steelcup.errors import InvalidArgument, NotFound
from steelcup.volume import namespace
from steelcup.volume.manager import VolumeManager

PREFIX = "/steelcup/snapshots/{name"  # the scoped routes: /steelcup/snapshots/{name:path}


def scope(router: Router, volumes: VolumeManager) -> None:
    """Resolve the snapshot of every `/steelcup/snapshots/{name}` route for the caller."""
    router.scope(PREFIX, "name", "snapshot",
                 lambda who, ref: volumes.snapshots.resolve(ref, who.tenant))


def register(router: Router, volumes: VolumeManager) -> None:
    api = _SnapshotApi(volumes)
    router.add("GET", "/steelcup/snapshots", api.list)
    router.add("POST", "/steelcup/snapshots", api.create)
    router.add("GET", "/steelcup/snapshots/{name:path}", api.inspect)
    router.add("DELETE", "/steelcup/snapshots/{name:path}", api.remove)


class _SnapshotApi:
    def __init__(self, volumes: VolumeManager) -> None:
        self.volumes = volumes

    async def list(self, req: Request) -> Response:
        who = req.principal
        tenant, volume = who.tenant, None
        if req.q("volume"):
            try:
                tenant, volume = namespace.split(self.volumes.resolve(req.q("volume"),
                                                                      who.tenant))
            except NotFound:  # no such volume (for the caller): none of its snapshots
                return JsonResponse([])
        snaps = self.volumes.snapshots.list(tenant, volume)
        return JsonResponse([s.to_json(keys=who.is_operator) for s in snaps])

    async def create(self, req: Request) -> Response:
        body = await req.json()
        volume, name = body.get("Volume"), body.get("Name") or None
        if not isinstance(volume, str) or not volume:
            raise InvalidArgument("Volume (the volume to snapshot) is required")
        if name is not None and not isinstance(name, str):
            raise InvalidArgument("Name must be a string")
        force = bool(body.get("Force", False))
        key = self.volumes.resolve(volume, req.principal.tenant)  # one of the caller's own
        snap = await asyncio.to_thread(self.volumes.snapshots.create, key, name, force=force)
        return JsonResponse(snap.to_json(keys=req.principal.is_operator), 201)

    async def inspect(self, req: Request) -> Response:
        snap = self.volumes.snapshots.get(req.params["name"])
        return JsonResponse(snap.to_json(keys=req.principal.is_operator))

    async def remove(self, req: Request) -> Response:
        await asyncio.to_thread(self.volumes.snapshots.remove, req.params["name"])
        return EmptyResponse(204)
