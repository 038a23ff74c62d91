"""Volume snapshots (steelcup extension, `/steelcup/snapshots...`): thin adapters to the volume
manager's `SnapshotStore`. A new volume from a snapshot is `POST /volumes/create` with the
driver option `snapshot`."""

from __future__ import annotations

import asyncio

from steelcup.api.http import EmptyResponse, JsonResponse, Request, Response, Router
from steelcup.errors import InvalidArgument
from steelcup.volume.manager import VolumeManager


def register(router: Router, volumes: VolumeManager) -> None:
    api = _SnapshotApi(volumes)
    router.add("GET", "/steelcup/snapshots", api.list)
    router.add("POST", "/steelcup/snapshots", api.create)
    router.add("GET", "/steelcup/snapshots/{name}", api.inspect)
    router.add("DELETE", "/steelcup/snapshots/{name}", api.remove)


class _SnapshotApi:
    def __init__(self, volumes: VolumeManager) -> None:
        self.volumes = volumes

    async def list(self, req: Request) -> Response:
        volume = req.q("volume") or None
        return JsonResponse([s.to_json() for s in self.volumes.snapshots.list(volume)])

    async def create(self, req: Request) -> Response:
        body = await req.json()
        volume, name = body.get("Volume"), body.get("Name") or None
        if not isinstance(volume, str) or not volume:
            raise InvalidArgument("Volume (the volume to snapshot) is required")
        if name is not None and not isinstance(name, str):
            raise InvalidArgument("Name must be a string")
        force = bool(body.get("Force", False))
        snap = await asyncio.to_thread(self.volumes.snapshots.create, volume, name, force=force)
        return JsonResponse(snap.to_json(), 201)

    async def inspect(self, req: Request) -> Response:
        return JsonResponse(self.volumes.snapshots.get(req.params["name"]).to_json())

    async def remove(self, req: Request) -> Response:
        await asyncio.to_thread(self.volumes.snapshots.remove, req.params["name"])
        return EmptyResponse(204)
