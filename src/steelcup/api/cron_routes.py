"""Cron jobs (steelcup extension, `/crons...`, docs/cron.md): decode the request, call the
scheduler (steelcup.cron.scheduler), encode its answer.

Crons are tenant objects: every `/crons/{name}` route reaches its handler with the name
resolved to a cron the caller owns (`scope`; another tenant's answers `no such cron: NAME`,
as a missing one), lists are the caller's (the operator's: every tenant's), and a tenant's
cron runs its containers as that tenant's, under its quotas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from steelcup.api.http import EmptyResponse, JsonResponse, Request, Response, Router
from steelcup.cron.jobs import job_config
from steelcup.cron.model import CronSpec, CronState, iso
from steelcup.cron.schedule import Concurrency
from steelcup.cron.scheduler import Crons
from steelcup.errors import InvalidArgument

PREFIX = "/crons/{name}"


def scope(router: Router, crons: Crons) -> None:
    """Resolve the cron of every `/crons/{name}...` route for the caller."""
    router.scope(PREFIX, "name", "cron", lambda who, ref: crons.store.resolve(ref, who.tenant))


def register(router: Router, crons: Crons) -> None:
    api = _CronApi(crons)
    router.add("POST", "/crons", api.create)
    router.add("GET", "/crons", api.list)
    router.add("GET", "/crons/{name}", api.inspect)
    router.add("DELETE", "/crons/{name}", api.remove)
    router.add("POST", "/crons/{name}/run", api.run)
    router.add("POST", "/crons/{name}/suspend", api.suspend)
    router.add("POST", "/crons/{name}/resume", api.resume)
    router.add("GET", "/crons/{name}/history", api.history)


_KINDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
          dict: "an object"}


def _field(body: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidArgument(f"{key} must be {_KINDS[kind]}")
    return value


def decode_create(body: Any, tenant: str, now: datetime) -> tuple[CronSpec, bool]:
    """POST /crons body -> the cron (its container checked as a create would check it) and
    whether it starts suspended."""
    if not isinstance(body, dict):
        raise InvalidArgument("request body must be a JSON object")
    name = _field(body, "Name", str, "")
    schedule = _field(body, "Schedule", str, "")
    if not name or not schedule:
        raise InvalidArgument("Name and Schedule are required")
    container = _field(body, "Container", dict, None)
    if container is None:
        raise InvalidArgument("Container (the POST /containers/create body of the job) is "
                              "required")
    job_config(container)
    limit = _field(body, "HistoryLimit", dict, {})
    deadline = _field(body, "StartingDeadlineSeconds", float, None)
    spec = CronSpec(
        name=name, schedule=schedule, container=container, created=now, tenant=tenant,
        timezone=_field(body, "Timezone", str, ""),
        concurrency=Concurrency.parse(_field(body, "Concurrency", str, "allow")),
        starting_deadline_s=deadline,
        keep_succeeded=_field(limit, "Succeeded", int, 5),
        keep_failed=_field(limit, "Failed", int, 5))
    return spec, bool(_field(body, "Suspended", bool, False))


class _CronApi:
    def __init__(self, crons: Crons) -> None:
        self.crons = crons

    def _encode(self, spec: CronSpec, state: CronState) -> dict[str, Any]:
        runs = self.crons.store.runs(spec.key, 1)
        return {**spec.to_json(), "Suspended": state.suspended,
                "NextRun": iso(self.crons.next_run(spec, state)),
                "Active": [{"Id": r.id, "ContainerId": r.container_id}
                           for r in self.crons.active(spec.key)],
                "LastRun": runs[-1].to_json() if runs else None}

    async def create(self, req: Request) -> Response:
        spec, suspended = decode_create(await req.json(), req.principal.tenant or "",
                                        self.crons.clock())
        self.crons.create(spec, suspended)
        return JsonResponse(self._encode(*self.crons.get(spec.key)), 201)

    async def list(self, req: Request) -> Response:
        return JsonResponse([self._encode(spec, state)
                             for spec, state in self.crons.list(req.principal.tenant)])

    async def inspect(self, req: Request) -> Response:
        return JsonResponse(self._encode(*self.crons.get(req.params["name"])))

    async def remove(self, req: Request) -> Response:
        await self.crons.remove(req.params["name"], force=req.q_bool("force"))
        return EmptyResponse(204)

    async def run(self, req: Request) -> Response:
        return JsonResponse(self.crons.run_now(req.params["name"]).to_json(), 201)

    async def suspend(self, req: Request) -> Response:
        self.crons.suspend(req.params["name"])
        return EmptyResponse(204)

    async def resume(self, req: Request) -> Response:
        self.crons.resume(req.params["name"])
        return EmptyResponse(204)

    async def history(self, req: Request) -> Response:
        tail = req.q_int("tail")
        if tail is not None and tail < 0:
            raise InvalidArgument("tail must not be negative")
        return JsonResponse([r.to_json() for r in self.crons.history(req.params["name"], tail)])
