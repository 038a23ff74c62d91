"""Funcs over HTTP (docs/funcs.md): the management routes of the API (`/funcs...`, tenant
objects scoped like every other) and the gateway's own router (`--func-listen`: `/call/NAME`,
`/calls/ID`), which authenticates each call by the func's secret or a tenant's bearer token.

How a call's end becomes an HTTP answer lives here (`call_answer`) and nowhere else.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from steelcup.api.http import (
    EmptyResponse,
    JsonResponse,
    RawResponse,
    Request,
    Response,
    Router,
    StreamResponse,
)
from steelcup.errors import InvalidArgument, NotFound
from steelcup.funcs.model import Auth, Call, CallStatus, Func, Limits, request_env
from steelcup.funcs.service import Funcs
from steelcup.tenancy.manager import Tenants

CALL_ID_HEADER = "Steelcup-Call-Id"
EXIT_CODE_HEADER = "Steelcup-Exit-Code"
STATUS_HEADER = "Steelcup-Call-Status"
ERROR_STDERR_BYTES = 4096  # of a failed call's stderr in its error answer


def scope(router: Router, funcs: Funcs) -> None:
    router.scope("/funcs/{name}", "name", "func",
                 lambda who, ref: funcs.resolve(ref, who.tenant))


def register(router: Router, funcs: Funcs) -> None:
    api = _FuncApi(funcs)
    router.add("GET", "/funcs", api.list)
    router.add("POST", "/funcs", api.create)
    router.add("GET", "/funcs/{name}", api.inspect)
    router.add("DELETE", "/funcs/{name}", api.remove)
    router.add("POST", "/funcs/{name}/update", api.update)
    router.add("POST", "/funcs/{name}/call", api.call)
    router.add("GET", "/funcs/{name}/logs", api.logs)


def gateway_router(funcs: Funcs, tenants: Tenants | None) -> Router:
    """The router of the func gateway: calls and their results, nothing else."""
    gateway = _Gateway(funcs, tenants)
    router = Router()
    router.add("POST", "/call/{name}", gateway.call)
    router.add("POST", "/call/{name}/{secret}", gateway.call)
    router.add("GET", "/calls/{id}", gateway.result)
    return router


def func_json(func: Func, funcs: Funcs, *, secret: bool) -> dict[str, Any]:
    limits = func.limits
    out: dict[str, Any] = {
        "Name": func.name, "Tenant": func.tenant, "Created": func.created,
        "Image": func.spec.get("Image", ""), "Spec": dict(func.spec), "Auth": func.auth.value,
        "Timeout": limits.timeout_s, "Concurrency": limits.concurrency,
        "MaxInput": limits.max_input_bytes, "MaxOutput": limits.max_output_bytes,
        "Queue": limits.queue, "Running": funcs.gate.running[func.key],
        "Queued": funcs.gate.queued(func.key), "PeakRunning": funcs.gate.peak[func.key],
    }
    if secret and func.auth is Auth.SECRET:
        out["Secret"] = func.secret
        out["CallPath"] = f"/call/{func.name}/{func.secret}"
    elif func.auth is Auth.TOKEN:
        out["CallPath"] = f"/call/{func.name}"
    return out


def limits_from(body: dict[str, Any], base: Limits) -> Limits:
    """The limits a create or update body sets, over `base`."""
    def number(key: str, kind: type, current: Any) -> Any:
        value = body.get(key)
        if value is None:
            return current
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidArgument(f"{key}: expected a number, got {value!r}")
        return kind(value)

    return Limits(timeout_s=number("Timeout", float, base.timeout_s),
                  concurrency=number("Concurrency", int, base.concurrency),
                  max_input_bytes=number("MaxInput", int, base.max_input_bytes),
                  max_output_bytes=number("MaxOutput", int, base.max_output_bytes),
                  queue=number("Queue", int, base.queue)).checked()


def call_headers(call: Call) -> list[tuple[str, str]]:
    headers = [(CALL_ID_HEADER, call.id), (STATUS_HEADER, call.status.value)]
    if call.exit_code is not None:
        headers.append((EXIT_CODE_HEADER, str(call.exit_code)))
    return headers


def call_answer(call: Call, *, exit_is_error: bool) -> Response:
    """A call as HTTP: its output (200) once done; 202 with its state while it is queued or
    running; a JSON error naming the call otherwise: 500 a non-zero exit (unless
    `exit_is_error` is off: then its output, the exit code in the header), 502 output over
    the cap or a container that failed, 504 a timeout."""
    headers = call_headers(call)
    if not call.status.finished:
        return JsonResponse(call.summary_json(), status=202, headers=headers)
    nonzero_exit = (call.status is CallStatus.FAILED and call.exit_code not in (0, None)
                    and not call.stdout_truncated)
    if call.status is CallStatus.DONE or (nonzero_exit and not exit_is_error):
        return RawResponse(call.stdout, headers=headers)
    status = 504 if call.status is CallStatus.TIMED_OUT else 500 if nonzero_exit else 502
    return JsonResponse({
        "message": f"func {call.func} call {call.id}: {call.error or call.status.value}",
        "CallId": call.id, "Status": call.status.value, "ExitCode": call.exit_code,
        "Stderr": call.stderr[-ERROR_STDERR_BYTES:].decode("utf-8", "replace"),
    }, status=status, headers=headers)


def call_log_json(call: Call) -> dict[str, Any]:
    return {**call.summary_json(), "Stdout": call.stdout.decode("utf-8", "replace"),
            "Stderr": call.stderr.decode("utf-8", "replace")}


def _line(call: Call) -> bytes:
    return json.dumps(call_log_json(call)).encode() + b"\n"


async def _start_call(funcs: Funcs, func: Func, req: Request, *, exit_is_error: bool
                      ) -> Response:
    env = request_env(req.headers.items(), req.query, func.spec.get("Env") or ())
    body = await req.body(func.limits.max_input_bytes)
    call = funcs.submit(func, body, env)
    if req.q_bool("async"):
        return JsonResponse({"CallId": call.id, "Status": call.status.value}, status=202,
                            headers=[*call_headers(call), ("Location", f"/calls/{call.id}")])
    return call_answer(await funcs.wait(call.id), exit_is_error=exit_is_error)


class _FuncApi:
    def __init__(self, funcs: Funcs) -> None:
        self.funcs = funcs

    async def list(self, req: Request) -> Response:
        return JsonResponse([func_json(f, self.funcs, secret=False)
                             for f in self.funcs.list(req.principal.tenant)])

    async def create(self, req: Request) -> Response:
        body = await req.json()
        spec = body.get("Spec")
        if not isinstance(spec, dict):
            raise InvalidArgument("Spec: expected the container's create body (an object)")
        auth_word = body.get("Auth") or Auth.SECRET.value
        try:
            auth = Auth(auth_word)
        except ValueError:
            raise InvalidArgument(f"Auth: {auth_word!r} is not one of secret, token") from None
        name = body.get("Name")
        if not isinstance(name, str):
            raise InvalidArgument("Name: expected the func's name")
        func = self.funcs.create(req.principal.tenant or "", name, spec, auth,
                                 limits_from(body, Limits()))
        return JsonResponse(func_json(func, self.funcs, secret=True), status=201)

    async def inspect(self, req: Request) -> Response:
        return JsonResponse(func_json(self.funcs.get(req.params["name"]), self.funcs,
                                      secret=True))

    async def remove(self, req: Request) -> Response:
        self.funcs.remove(req.params["name"])
        return EmptyResponse(204)

    async def update(self, req: Request) -> Response:
        body = await req.json()
        func = self.funcs.get(req.params["name"])
        updated = self.funcs.update(func.key, limits_from(body, func.limits),
                                    new_key=bool(body.get("NewSecret")))
        return JsonResponse(func_json(updated, self.funcs, secret=True))

    async def call(self, req: Request) -> Response:
        func = self.funcs.get(req.params["name"])
        return await _start_call(self.funcs, func, req, exit_is_error=False)

    async def logs(self, req: Request) -> Response:
        """The kept calls (`call`: the one whose id starts so); `follow`: as JSON lines, then
        each call as it finishes until the func is removed."""
        key = req.params["name"]
        wanted = req.q("call")
        if not req.q_bool("follow"):
            calls = self.funcs.calls(key)
            if wanted:
                calls = [c for c in calls if c.id.startswith(wanted)]
                if not calls:
                    raise NotFound(f"no such call of this func: {wanted}")
            return JsonResponse([call_log_json(c) for c in calls])
        self.funcs.get(key)

        async def chunks() -> AsyncIterator[bytes]:
            feed = self.funcs.follow(key)  # subscribed before the history is read
            try:
                for kept in self.funcs.calls(key):
                    if kept.status.finished and kept.id.startswith(wanted):
                        yield _line(kept)
                while (call := await feed.next()) is not None:
                    if call.id.startswith(wanted):
                        yield _line(call)
            finally:
                feed.close()

        return StreamResponse(chunks())


class _Gateway:
    def __init__(self, funcs: Funcs, tenants: Tenants | None) -> None:
        self.funcs = funcs
        self.tenants = tenants

    def _bearer_tenant(self, req: Request) -> str | None:
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or self.tenants is None:
            return None
        tenant = self.tenants.authenticate(bearer=token.strip())
        return tenant.name if tenant is not None else None

    def _func(self, req: Request, name: str) -> Func:
        secret = req.params.get("secret") or req.q("secret") or None
        return self.funcs.for_gateway(name, secret=secret, tenant=self._bearer_tenant(req))

    async def call(self, req: Request) -> Response:
        try:
            func = self._func(req, req.params["name"])
        except NotFound:
            req.refuse_body()  # nobody's upload is read before it is authenticated
            raise
        return await _start_call(self.funcs, func, req, exit_is_error=True)

    async def result(self, req: Request) -> Response:
        """A call's state, its output once done (`?wait=1`: once it is done). Asked with the
        credentials its func is called with; another's answers as a missing call."""
        call_id = req.params["id"]
        missing = NotFound(f"no such func call: {call_id}")
        try:
            call = self.funcs.call(call_id)
            func = self._func(req, call.func)
        except NotFound:
            raise missing from None
        if func.tenant != call.tenant:
            raise missing
        if req.q_bool("wait"):
            call = await self.funcs.wait(call_id)
        return call_answer(call, exit_is_error=True)
