"""Docker Engine API routes of swarm secrets and configs: `/secrets` and `/configs` (create,
inspect, list, update of labels, remove). Every `/{kind}s/{id}` route resolves its object
for the caller's tenant first (another tenant's is answered as a missing one)."""

from __future__ import annotations

from steelcup.api import object_codec as codec
from steelcup.api.filters import parse_filters
from steelcup.api.http import EmptyResponse, JsonResponse, Request, Response, Router
from steelcup.api.http_types import Principal
from steelcup.errors import InvalidArgument
from steelcup.runtime.swarmfiles import SwarmFile
from steelcup.services.manager import ServiceManager
from steelcup.services.model import Kind
from steelcup.services.objects import ObjectManager


def register(router: Router, objects: ObjectManager, services: ServiceManager) -> None:
    for kind in Kind:
        api = _ObjectApi(objects, services, kind)
        path = f"/{kind.value}s"
        router.scope(f"{path}/{{id}}", "id", kind.value, api.scope)
        router.add("GET", path, api.list)
        router.add("POST", f"{path}/create", api.create)
        router.add("GET", f"{path}/{{id}}", api.inspect)
        router.add("POST", f"{path}/{{id}}/update", api.update)
        router.add("DELETE", f"{path}/{{id}}", api.remove)


def resolve_files(objects: ObjectManager, files: tuple[SwarmFile, ...], tenant: str
                  ) -> tuple[SwarmFile, ...]:
    """A service's references checked against `tenant`'s objects (by id, as the docker CLI
    sends them, or by name): another tenant's is not found; each file gets the object's
    full id and name."""
    out = []
    for f in files:
        obj = objects.get(objects.resolve(Kind(f.kind), f.object_id or f.object_name, tenant))
        out.append(SwarmFile(f.kind, obj.id, obj.name, f.target, f.uid, f.gid, f.mode))
    return tuple(out)


class _ObjectApi:
    def __init__(self, objects: ObjectManager, services: ServiceManager, kind: Kind) -> None:
        self.objects = objects
        self.services = services
        self.kind = kind

    def scope(self, who: Principal, ref: str) -> str:
        self.services.require(who.tenant)
        return self.objects.resolve(self.kind, ref, who.tenant)

    async def list(self, req: Request) -> Response:
        self.services.require(req.principal.tenant)
        filters = parse_filters(req.q("filters"), codec.FILTERS)
        return JsonResponse([codec.encode(o, self._data(o.id))
                             for o in self.objects.list(self.kind, req.principal.tenant)
                             if codec.matches(o, filters)])

    async def create(self, req: Request) -> Response:
        self.services.require(req.principal.tenant)
        spec = codec.decode_spec(self.kind, await req.json())
        if spec.data is None:
            raise InvalidArgument(f"{self.kind.value} data must be larger than 0 and less "
                                  f"than {self.kind.max_bytes // 1024} KB")
        record = self.objects.create(self.kind, req.principal.tenant or "", spec.name,
                                     spec.data, spec.labels)
        return JsonResponse({"ID": record.id}, status=201)

    async def inspect(self, req: Request) -> Response:
        obj = self.objects.get(req.params["id"])
        return JsonResponse(codec.encode(obj, self._data(obj.id)))

    async def update(self, req: Request) -> Response:
        version = req.q_int("version")
        if version is None:
            raise InvalidArgument(f"{self.kind.value} update needs ?version= (the "
                                  "Version.Index it was read at)")
        spec = codec.decode_spec(self.kind, await req.json())
        self.objects.update_labels(req.params["id"], version, name=spec.name,
                                   labels=spec.labels, data=spec.data)
        return EmptyResponse(200)

    async def remove(self, req: Request) -> Response:
        self.objects.remove(req.params["id"])
        return EmptyResponse(204)

    def _data(self, object_id: str) -> bytes | None:
        return self.objects.data(object_id) if self.kind is Kind.CONFIG else None
