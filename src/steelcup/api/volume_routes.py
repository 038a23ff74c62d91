"""Docker Engine API routes for volumes: thin adapters from Docker's JSON shapes to
`VolumeManager` (the only place their CamelCase keys live).

Volumes are per tenant (docs/tenancy.md): `/volumes/{name}` reaches the handler already
resolved to the key of a volume the caller may see (`Router.scope`, set up by `scope`); lists
and prune are the caller's. A tenant sees its volumes' plain names, the operator keys
(`TENANT/NAME` for a tenant's volume), which is also how it names one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from steelcup.api.filters import labels_match, parse_filters, str_map
from steelcup.api.http import EmptyResponse, JsonResponse, Request, Response, Router
from steelcup.api.http_types import Principal
from steelcup.volume.manager import Volume, VolumeManager

VOLUME_FILTERS = frozenset({"name", "label", "dangling", "driver"})
PREFIX = "/volumes/{name"  # the scoped routes: /volumes/{name:path}


def scope(router: Router, volumes: VolumeManager) -> None:
    """Resolve the volume of every `/volumes/{name}` route for the caller (before `register`)."""
    router.scope(PREFIX, "name", "volume", lambda who, ref: volumes.resolve(ref, who.tenant))


def register(router: Router, volumes: VolumeManager) -> None:
    api = _VolumeApi(volumes)
    router.add("GET", "/volumes", api.volume_list)
    router.add("POST", "/volumes/create", api.volume_create)
    router.add("POST", "/volumes/prune", api.volume_prune)
    # a path: the operator names a tenant's volume TENANT/NAME, as the docker CLI sends it
    router.add("GET", "/volumes/{name:path}", api.volume_inspect)
    router.add("DELETE", "/volumes/{name:path}", api.volume_remove)


def volume_json(vol: Volume, who: Principal) -> dict[str, Any]:
    return {
        "Name": vol.key if who.is_operator else vol.name,
        "Driver": vol.driver,
        "Mountpoint": str(vol.mountpoint),
        "CreatedAt": vol.created,
        "Labels": vol.labels or None,
        "Scope": "local",
        "Options": vol.options or None,
    }


class _VolumeApi:
    def __init__(self, volumes: VolumeManager) -> None:
        self.volumes = volumes

    async def volume_list(self, req: Request) -> Response:
        f = parse_filters(req.q("filters"), VOLUME_FILTERS)
        who = req.principal
        out = []
        for vol in await asyncio.to_thread(self.volumes.list, who.tenant):
            shown = vol.key if who.is_operator else vol.name
            if "name" in f and not any(n in shown for n in f["name"]):
                continue
            if "label" in f and not labels_match(vol.labels, f["label"]):
                continue
            if "dangling" in f and (f["dangling"][0] in ("1", "true")) == bool(
                    self.volumes.in_use(vol.key)):
                continue
            out.append(volume_json(vol, who))
        return JsonResponse({"Volumes": out, "Warnings": []})

    async def volume_create(self, req: Request) -> Response:
        body = await req.json(allow_empty=True)
        name = body.get("Name") or None
        vol = await asyncio.to_thread(
            self.volumes.create,
            str(name) if name else None,
            tenant=req.principal.tenant or "",
            labels=str_map(body.get("Labels"), "Labels"),
            options=str_map(body.get("DriverOpts"), "DriverOpts"),
            driver=str(body.get("Driver") or "local"),
            anonymous=not name,  # as dockerd: an unnamed volume is anonymous, so prune takes it
        )
        return JsonResponse(volume_json(vol, req.principal), status=201)

    async def volume_inspect(self, req: Request) -> Response:
        return JsonResponse(volume_json(self.volumes.get(req.params["name"]), req.principal))

    async def volume_remove(self, req: Request) -> Response:
        await asyncio.to_thread(self.volumes.remove, req.params["name"],
                                force=req.q_bool("force"))
        return EmptyResponse()

    async def volume_prune(self, req: Request) -> Response:
        f = parse_filters(req.q("filters"), frozenset({"label", "all"}))
        all_volumes = bool(f.get("all")) and f["all"][0] in ("1", "true")
        who = req.principal
        removed, reclaimed = await asyncio.to_thread(
            lambda: self.volumes.prune(who.tenant, all_volumes=all_volumes))
        return JsonResponse({
            "VolumesDeleted": [v.key if who.is_operator else v.name for v in removed],
            "SpaceReclaimed": reclaimed})
