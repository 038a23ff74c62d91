"""Floating IPs (steelcup extension, issue 15; hyper.sh's `/fips` shape, docker's error
conventions): thin adapters to the network layer's `FloatingIps` (docs/networking.md).

    GET    /fips                                the caller's FIPs (filters: dangling=true|false)
    POST   /fips/allocate?count=N               N new FIPs of the pool -> 201 [...]
    GET    /fips/{ip}                           one FIP
    DELETE /fips/{ip}                           release it (detached first) -> 204
    POST   /fips/{ip}/attach?container=REF      1:1 NAT to the caller's container
    POST   /fips/{ip}/attach?service=REF        inbound to the caller's service's VIP
    POST   /fips/{ip}/detach                    detach it (it stays allocated)
    POST   /fips/{ip}/name?name=NAME            name it ("" clears the name)

A create can attach one through the label `sh.steelcup.fip` (what `run --fip IP` sends).
Everything is the caller's tenant's (the operator's own are tenant ""): another tenant's FIP is
answered as a missing one (404), so is another tenant's container or service. Events of Type "fip"
(allocate, release, attach, detach, rename) go to the FIP's tenant.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from steelcup.api.filters import parse_filters
from steelcup.api.http import EmptyResponse, JsonResponse, Request, Response, Router
from steelcup.api.http_types import Principal
from steelcup.errors import InvalidArgument, Unsupported
from steelcup.net.fip import FipRecord
from steelcup.net.fipmanager import FloatingIps
from steelcup.net.model import VipRecord
from steelcup.runtime.events import EventBus

PREFIX = "/fips/{ip}"
FILTERS = frozenset({"dangling"})

# (container reference, the caller's tenant) -> the container's full id; NotFound for another
# tenant's exactly as for a missing one
ContainerResolver = Callable[[str, str | None], str]
# (service reference, the caller's tenant) -> (the service's id, the VIP a FIP goes to);
# NotFound for another tenant's exactly as for a missing one
ServiceResolver = Callable[[str, str | None], Awaitable[tuple[str, VipRecord]]]


def _tenant(who: Principal) -> str:
    return who.tenant or ""


def fip_json(rec: FipRecord) -> dict[str, Any]:
    return {"Address": rec.address, "Name": rec.name, "Container": rec.container_id,
            "Service": rec.service_id, "Network": rec.network_id, "CreatedAt": rec.created}


def register(router: Router, fips: FloatingIps, resolve_container: ContainerResolver,
             events: EventBus, resolve_service: ServiceResolver | None = None) -> None:
    """`resolve_service`: None on a daemon without services' virtual IPs."""
    def notify(action: str, rec: FipRecord) -> None:
        events.publish("fip", action, rec.address,
                       {"name": rec.name, "container": rec.container_id,
                        "service": rec.service_id}, tenant=rec.tenant)

    fips.notify = notify
    api = _FipApi(fips, resolve_container, resolve_service)
    router.scope(PREFIX, "ip", "floating IP",
                 lambda who, ref: fips.get(ref, _tenant(who)).address)
    router.add("GET", "/fips", api.list)
    router.add("POST", "/fips/allocate", api.allocate)
    router.add("GET", PREFIX, api.inspect)
    router.add("DELETE", PREFIX, api.release)
    router.add("POST", PREFIX + "/attach", api.attach)
    router.add("POST", PREFIX + "/detach", api.detach)
    router.add("POST", PREFIX + "/name", api.name)


def _dangling(values: list[str]) -> bool | None:
    if not values:
        return None
    if len(values) > 1 or values[0] not in ("true", "false", "1", "0"):
        raise InvalidArgument(f"invalid filter 'dangling={values[-1]}' (true or false)")
    return values[0] in ("true", "1")


class _FipApi:
    def __init__(self, fips: FloatingIps, resolve_container: ContainerResolver,
                 resolve_service: ServiceResolver | None) -> None:
        self.fips = fips
        self.resolve_container = resolve_container
        self.resolve_service = resolve_service

    async def list(self, req: Request) -> Response:
        dangling = _dangling(parse_filters(req.q("filters"), FILTERS).get("dangling", []))
        await self.fips.settled()
        records = self.fips.list(_tenant(req.principal))
        if dangling is not None:
            records = [r for r in records if r.attached != dangling]
        return JsonResponse([fip_json(r) for r in records])

    async def allocate(self, req: Request) -> Response:
        text = req.q("count", "1")
        try:
            count = int(text)
        except ValueError:
            raise InvalidArgument(f"count must be a number, not {text!r}") from None
        records = await self.fips.allocate(_tenant(req.principal), count)
        return JsonResponse([fip_json(r) for r in records], 201)

    async def inspect(self, req: Request) -> Response:
        await self.fips.settled()
        return JsonResponse(fip_json(self.fips.get(req.params["ip"], _tenant(req.principal))))

    async def release(self, req: Request) -> Response:
        await self.fips.release(req.params["ip"], _tenant(req.principal))
        return EmptyResponse(204)

    async def attach(self, req: Request) -> Response:
        ref, service = req.q("container"), req.q("service")
        if bool(ref) == bool(service):
            raise InvalidArgument("container or service (what to attach the floating IP to) "
                                  "is required, one of them")
        tenant = _tenant(req.principal)
        self.fips.get(req.params["ip"], tenant)  # a FIP of another tenant's: 404 first
        if service:
            if self.resolve_service is None:
                raise Unsupported("services have no virtual IPs on this daemon (networking "
                                  "is off): a floating IP cannot go to one")
            sid, vip = await self.resolve_service(service, req.principal.tenant)
            rec = await self.fips.attach_service(req.params["ip"], sid, vip, tenant)
            return JsonResponse(fip_json(rec))
        cid = self.resolve_container(ref, req.principal.tenant)
        return JsonResponse(fip_json(await self.fips.attach(req.params["ip"], cid, tenant)))

    async def detach(self, req: Request) -> Response:
        rec = await self.fips.detach(req.params["ip"], _tenant(req.principal))
        return JsonResponse(fip_json(rec))

    async def name(self, req: Request) -> Response:
        rec = self.fips.rename(req.params["ip"], req.q("name"), _tenant(req.principal))
        return JsonResponse(fip_json(rec))
