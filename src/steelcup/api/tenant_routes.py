"""The operator's tenant administration (steelcup extension, `/steelcup/tenants...`): thin
adapters from JSON to `Tenants`, for the operator only. And `/steelcup/quotas`: a tenant's own
quotas, what it uses of each and its container-seconds, which any caller may read of itself."""

from __future__ import annotations

import datetime
from typing import Any

from steelcup.api.filters import time_param
from steelcup.api.http import (
    EmptyResponse,
    Identify,
    JsonResponse,
    Principal,
    Request,
    Response,
    Router,
)
from steelcup.errors import Forbidden, InvalidArgument, Unsupported
from steelcup.tenancy.manager import Tenants
from steelcup.tenancy.model import Tenant
from steelcup.tenancy.objects import Teardown
from steelcup.tenancy.store import TenantKey
from steelcup.tenancy.usage import UsageLine


def register(router: Router, tenants: Tenants, teardown: Teardown | None = None) -> None:
    api = _TenantApi(tenants, teardown)
    for method, path, handler in (
        ("GET", "/steelcup/tenants", api.list),
        ("POST", "/steelcup/tenants", api.create),
        ("GET", "/steelcup/tenants/{name}", api.inspect),
        ("POST", "/steelcup/tenants/{name}/update", api.update),
        ("DELETE", "/steelcup/tenants/{name}", api.remove),
        ("GET", "/steelcup/tenants/{name}/keys", api.keys),
        ("POST", "/steelcup/tenants/{name}/keys", api.key_create),
        ("DELETE", "/steelcup/tenants/{name}/keys/{key}", api.key_remove),
        ("GET", "/steelcup/tenants/{name}/usage", api.usage),
    ):
        router.add(method, path, handler, operator=True)
    # Names no object in its path: a tenant reads its own; the operator names one (?tenant=).
    router.add("GET", "/steelcup/quotas", api.quotas)


def identify_with(tenants: Tenants) -> Identify:
    """The tenant listener's authentication: a live key's certificate or token names its
    tenant; anything else is refused."""
    def identify(cert_der: bytes | None, bearer: str | None) -> Principal | None:
        tenant = tenants.authenticate(cert_der=cert_der, bearer=bearer)
        return Principal(tenant.name) if tenant is not None else None
    return identify


def tenant_json(t: Tenant) -> dict[str, Any]:
    return {"Name": t.name, "Id": t.id, "Created": t.created, "SizeDefault": t.size_default,
            "Quotas": t.quotas.to_json(), "IdSlot": t.id_slot}


def key_json(k: TenantKey) -> dict[str, Any]:
    return {"KeyId": k.key_id, "Tenant": k.tenant, "Created": k.created,
            "NotAfter": k.not_after, "CertSha256": k.cert_sha256}


def usage_json(name: str, since_ns: int, until_ns: int, lines: list[UsageLine]
               ) -> dict[str, Any]:
    def when(ns: int) -> str:  # RFC 3339; "" = unbounded
        return datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ") if ns else ""

    return {"Tenant": name, "Since": when(since_ns), "Until": when(until_ns),
            "Lines": [line.to_json() for line in lines],
            "TotalSeconds": sum(line.seconds for line in lines)}


def quotas_json(tenant: Tenant, used: dict[str, int], usage: dict[str, Any] | None
                ) -> dict[str, Any]:
    """Every quota with its limit and use (None: nothing counts that kind on this daemon)."""
    return {"Tenant": tenant.name, "SizeDefault": tenant.size_default,
            "Quotas": [{"Name": name, "Limit": limit, "Used": used.get(name)}
                       for name, limit in tenant.quotas.to_json().items()],
            "Usage": usage}


def _words(body: dict[str, Any]) -> list[str]:
    words = body.get("Quotas") or []
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise InvalidArgument("Quotas must be a list of KEY=VALUE strings")
    return words


def _string(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidArgument(f"{key} must be a string")
    return value


class _TenantApi:
    def __init__(self, tenants: Tenants, teardown: Teardown | None) -> None:
        self.tenants = tenants
        self.teardown = teardown

    async def list(self, req: Request) -> Response:
        return JsonResponse([tenant_json(t) for t in self.tenants.list()])

    async def create(self, req: Request) -> Response:
        body = await req.json(allow_empty=True)
        name = _string(body, "Name") or ""
        tenant = self.tenants.create(name, _words(body),
                                     _string(body, "SizeDefault") or "s4")
        return JsonResponse(tenant_json(tenant), 201)

    async def inspect(self, req: Request) -> Response:
        return JsonResponse(tenant_json(self.tenants.get(req.params["name"])))

    async def update(self, req: Request) -> Response:
        body = await req.json(allow_empty=True)
        tenant = self.tenants.update(req.params["name"], _words(body),
                                     _string(body, "SizeDefault"))
        return JsonResponse(tenant_json(tenant))

    async def remove(self, req: Request) -> Response:
        """Refused while the tenant owns objects; `force`: they are removed first."""
        name = req.params["name"]
        self.tenants.get(name)
        if req.q_bool("force") and self.teardown is not None:
            await self.teardown.purge(name)
        self.tenants.remove(name)
        if self.teardown is not None:
            await self.teardown.forget(name)
        return EmptyResponse(204)

    async def keys(self, req: Request) -> Response:
        return JsonResponse([key_json(k) for k in self.tenants.keys(req.params["name"])])

    async def key_create(self, req: Request) -> Response:
        body = await req.json(allow_empty=True)
        days = body.get("Days", 365)
        if not isinstance(days, int) or isinstance(days, bool):
            raise InvalidArgument("Days must be a number")
        issued = self.tenants.issue_key(req.params["name"], days)
        return JsonResponse({**key_json(issued.key), "Ca": issued.ca_pem.decode(),
                                  "Cert": issued.credential.cert_pem.decode(),
                                  "Key": issued.credential.key_pem.decode(),
                                  "Token": issued.token}, 201)

    async def key_remove(self, req: Request) -> Response:
        self.tenants.remove_key(req.params["name"], req.params["key"])
        return EmptyResponse(204)

    async def quotas(self, req: Request) -> Response:
        """The caller's own tenant; the operator (who has no quotas) names one with `tenant`.
        `since`/`until` bound the container-seconds as for `/steelcup/tenants/{name}/usage`."""
        named = req.q("tenant")
        me = req.principal.tenant
        if me is None and not named:
            raise InvalidArgument("the operator's own objects have no quotas: name a tenant "
                                  "with ?tenant=NAME")
        if me is not None and named and named != me:
            raise Forbidden("only the operator may read another tenant's quotas")
        name = me or named or ""
        tenant = self.tenants.get(name)
        used = {q: u.used for q, u in self.tenants.quotas.usage(name).items()}
        since_ns, until_ns = time_param(req.q("since")), time_param(req.q("until"))
        try:
            lines = self.tenants.usage_report(name, since_ns, until_ns)
        except Unsupported:
            usage = None
        else:
            usage = usage_json(name, since_ns, until_ns, lines)
        return JsonResponse(quotas_json(tenant, used, usage))

    async def usage(self, req: Request) -> Response:
        """Container-seconds per size class (`since`/`until`: docker's time values)."""
        name = req.params["name"]
        since_ns, until_ns = time_param(req.q("since")), time_param(req.q("until"))
        lines = self.tenants.usage_report(name, since_ns, until_ns)
        return JsonResponse(usage_json(name, since_ns, until_ns, lines))
