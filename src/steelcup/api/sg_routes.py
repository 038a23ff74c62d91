"""Security groups (steelcup extension, issue 15): thin adapters to the network layer's
`SecurityGroups` (docs/networking.md).

    GET    /security-groups                    the caller's groups
    POST   /security-groups                    {"Name", "Spec": {description, rules}} -> 201
    GET    /security-groups/{name}             the group, its rules and members
    POST   /security-groups/{name}             {"Spec": ...}: replace the rules, live
    DELETE /security-groups/{name}             refused (409) while in use
    GET    /containers/{id}/security-groups    the container's groups
    POST   /containers/{id}/security-groups    {"Add": [...], "Remove": [...]}, live

A container joins groups at create through the label `sh.steelcup.security-groups` ("A,B",
what `run --sg` sends). Everything is the caller's tenant's (the operator's own are tenant
""): another tenant's group is answered as a missing one, and cannot be a remote_group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from steelcup.api.http import EmptyResponse, JsonResponse, Request, Response, Router
from steelcup.api.http_types import Principal
from steelcup.errors import InvalidArgument
from steelcup.net.manager import NetworkManager
from steelcup.net.secgroups import SecurityGroup
from steelcup.net.sgmanager import SecurityGroups

PREFIX = "/security-groups/{name}"


def _tenant(who: Principal) -> str:
    return who.tenant or ""


def scope(router: Router, networks: NetworkManager) -> None:
    """Resolve the group of every `/security-groups/{name}` route in the caller's tenant."""
    groups = networks.security_groups
    router.scope(PREFIX, "name", "security group",
                 lambda who, ref: groups.get(ref, _tenant(who)).name)


def register(router: Router, networks: NetworkManager,
             tenant_of: Callable[[str], str]) -> None:
    """`tenant_of(container id)`: the tenant owning a container (an operator's request about
    a tenant's container names that tenant's groups)."""
    api = _SgApi(networks.security_groups, tenant_of)
    router.add("GET", "/security-groups", api.list)
    router.add("POST", "/security-groups", api.create)
    router.add("GET", PREFIX, api.inspect)
    router.add("POST", PREFIX, api.update)
    router.add("DELETE", PREFIX, api.remove)
    # under the /containers/{id} scope: the container is the caller's own
    router.add("GET", "/containers/{id}/security-groups", api.container_groups)
    router.add("POST", "/containers/{id}/security-groups", api.container_change)


def group_json(group: SecurityGroup, members: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"Name": group.name, "Description": group.description,
                           "Rules": [r.to_doc() for r in group.rules],
                           "CreatedAt": group.created}
    if members is not None:
        out["Members"] = members
    return out


def _names(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{key} must be a list of security group names")
    return list(value)


class _SgApi:
    def __init__(self, groups: SecurityGroups, tenant_of: Callable[[str], str]) -> None:
        self.groups = groups
        self.tenant_of = tenant_of

    async def list(self, req: Request) -> Response:
        tenant = _tenant(req.principal)
        return JsonResponse([group_json(g, self.groups.members(g.name, tenant))
                             for g in self.groups.all(tenant)])

    async def create(self, req: Request) -> Response:
        body = await req.json()
        if not isinstance(body, dict):
            raise InvalidArgument("expected a JSON object {\"Name\", \"Spec\"}")
        name = body.get("Name")
        if not isinstance(name, str) or not name:
            raise InvalidArgument("Name (the security group's name) is required")
        group = await self.groups.create(name, body.get("Spec", {}), _tenant(req.principal))
        return JsonResponse(group_json(group, []), 201)

    async def inspect(self, req: Request) -> Response:
        tenant = _tenant(req.principal)
        group = self.groups.get(req.params["name"], tenant)
        return JsonResponse(group_json(group, self.groups.members(group.name, tenant)))

    async def update(self, req: Request) -> Response:
        body = await req.json()
        if not isinstance(body, dict) or "Spec" not in body:
            raise InvalidArgument("expected a JSON object {\"Spec\": {...}}")
        tenant = _tenant(req.principal)
        group = await self.groups.update(req.params["name"], body["Spec"], tenant)
        return JsonResponse(group_json(group, self.groups.members(group.name, tenant)))

    async def remove(self, req: Request) -> Response:
        await self.groups.remove(req.params["name"], _tenant(req.principal))
        return EmptyResponse(204)

    async def container_groups(self, req: Request) -> Response:
        return JsonResponse({"SecurityGroups": self.groups.groups_of(req.params["id"])})

    async def container_change(self, req: Request) -> Response:
        body = await req.json()
        if not isinstance(body, dict):
            raise InvalidArgument("expected a JSON object {\"Add\": [...], \"Remove\": [...]}")
        cid = req.params["id"]
        now = await self.groups.change(cid, self.tenant_of(cid),
                                       _names(body, "Add"), _names(body, "Remove"))
        return JsonResponse({"SecurityGroups": now})
