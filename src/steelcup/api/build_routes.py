"""`POST /build` as docker's classic builder answers it (the docker CLI with DOCKER_BUILDKIT=0
or without buildx, docker-py's `images.build`), and `POST /build/prune`.

The body is the build context (a tar, plain or compressed), spooled with a size bound and
unpacked by `build.context`, unless `remote` names a URL to fetch it from (`build.remote`);
query parameters are decoded here into a `BuildRequest`. A bad Dockerfile or parameter is an
HTTP error (nothing has streamed yet, as dockerd); what fails once steps run is an in-stream
`errorDetail`, whose `code` is a failing RUN's exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from steelcup.api.bodies import spool_body
from steelcup.api.http import Request
from steelcup.api.http_types import JsonResponse, Response, StreamResponse
from steelcup.api.router import Router
from steelcup.build import context as context_module
from steelcup.build import remote as remote_module
from steelcup.build.builder import Builder, BuildFailed, BuildRequest, Create
from steelcup.errors import InvalidArgument, SteelcupError
from steelcup.image import registry
from steelcup.image.credentials import TenantCredentials
from steelcup.image.reference import parse_reference
from steelcup.runtime.containers import Runtime
from steelcup.untrusted_json import decode_json

# the compressed or plain context as uploaded (what unpacks is bounded by the context code)
CONTEXT_UPLOAD_MAX_BYTES = 2 * context_module.CONTEXT_MAX_BYTES


def register(router: Router, runtime: Runtime, root: Path, create: Create | None = None) -> None:
    """Add the routes; `create` makes a step's container (the API's admission: the tenant's
    sizes and quotas apply to its build steps as to its containers)."""
    api = _BuildApi(runtime, root, create)
    router.add("POST", "/build", api.build)
    router.add("POST", "/build/prune", api.prune)


def build_request(req: Request) -> BuildRequest:
    """The query of `POST /build`, checked."""
    if req.q("remote"):
        remote_module.remote_url(req.q("remote"))  # refused before anything is fetched
    tags = [t for t in req.q_all("t") if t]
    for tag in tags:
        parse_reference(tag)  # InvalidArgument in docker's words
    network = req.q("networkmode")
    if network in ("default", "bridge"):
        network = ""
    if network == "host":
        raise InvalidArgument("network mode host is not supported: a build step runs in a VM")
    return BuildRequest(
        tags=tuple(tags),
        build_args=_str_map(req.q("buildargs"), "buildargs"),
        labels=_str_map(req.q("labels"), "labels"),
        target=req.q("target"),
        nocache=req.q_bool("nocache"),
        pull=req.q_bool("pull"),
        quiet=req.q_bool("q"),
        platform=req.q("platform"),
        network_mode=network,
        extra_hosts=tuple(_hosts(req.q_all("extrahosts"))),
        tenant=req.principal.tenant,
    )


def _str_map(text: str, what: str) -> dict[str, str]:
    """A JSON object of strings (a null value: not given, as the docker CLI sends an unset
    `--build-arg NAME`)."""
    if not text:
        return {}
    value = decode_json(text, what)
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a JSON object")
    out = {}
    for key, item in value.items():
        if item is None:
            continue
        if not isinstance(item, str):
            raise InvalidArgument(f"{what}: the value of {key!r} must be a string")
        out[str(key)] = item
    return out


def _hosts(values: list[str]) -> list[tuple[str, str]]:
    out = []
    for value in values:
        for entry in value.split(","):
            entry = entry.strip()
            if not entry:
                continue
            sep = "=" if "=" in entry else ":"
            host, found, address = entry.partition(sep)
            if not found or not host or not address:
                raise InvalidArgument(f"invalid extra host {entry!r}: HOST:IP expected")
            out.append((host, address))
    return out


def _line(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode() + b"\r\n"


def error_message(exc: BaseException) -> dict[str, Any]:
    """docker's in-stream error; a failing RUN's exit code rides along as `code`."""
    text = str(exc) if isinstance(exc, SteelcupError) else f"internal error: {exc}"
    detail: dict[str, Any] = {"message": text}
    if isinstance(exc, BuildFailed) and exc.code:
        detail["code"] = exc.code
    return {"errorDetail": detail, "error": text}


class _BuildApi:
    def __init__(self, runtime: Runtime, root: Path, create: Create | None) -> None:
        self.rt = runtime
        self.create = create
        self.spool_dir = root / "tmp" / "build"
        # contexts and spools of builds a previous daemon was running when it stopped
        shutil.rmtree(self.spool_dir, ignore_errors=True)
        self.credentials = TenantCredentials(root)

    async def _pull(self, ref_text: str, tenant: str | None) -> None:
        ref = parse_reference(ref_text)
        creds = self.credentials.of(tenant).get(ref.domain)
        await asyncio.to_thread(registry.pull, ref, self.rt.images, None, credentials=creds,
                                options=registry.RegistryOptions(), tenant=tenant)

    async def _context(self, req: Request, tenant: str | None) -> context_module.Context:
        """The context from `remote` (the body is then ignored, as dockerd) or the body."""
        if remote := req.q("remote"):
            url = remote_module.remote_url(remote)
            return await asyncio.to_thread(remote_module.fetch_context, url, self.spool_dir,
                                           req.q("dockerfile"), tenant is None)
        spool = await spool_body(req, self.spool_dir, CONTEXT_UPLOAD_MAX_BYTES)
        try:
            return await asyncio.to_thread(context_module.unpack, spool, self.spool_dir,
                                           req.q("dockerfile"))
        finally:
            spool.close()

    async def build(self, req: Request) -> Response:
        breq = build_request(req)
        ctx = await self._context(req, breq.tenant)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(64)

        async def send(msg: dict[str, Any]) -> None:
            await queue.put(_line(msg))

        async def pull(ref: str) -> None:
            await self._pull(ref, breq.tenant)

        builder = Builder(self.rt, self.spool_dir, send, pull, self.create)
        try:
            builder.prepare(ctx, breq)  # a bad Dockerfile: an HTTP error, nothing streamed
        except BaseException:
            ctx.close()
            raise

        async def run() -> None:
            try:
                await builder.build(ctx, breq)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - headers are sent: report in-band
                await queue.put(_line(error_message(exc)))
            finally:
                await asyncio.to_thread(ctx.close)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(None)

        task = asyncio.create_task(run())

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while True:
                    getter = asyncio.ensure_future(queue.get())
                    done, _ = await asyncio.wait({getter, task},
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if getter in done:
                        item = getter.result()
                        if item is None:
                            break
                        yield item
                    else:
                        getter.cancel()
                        while not queue.empty():
                            item = queue.get_nowait()
                            if item is not None:
                                yield item
                        break
                await task
            finally:
                if not task.done():  # the client went away: stop, the build cleans up
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

        return StreamResponse(chunks())

    async def prune(self, req: Request) -> Response:
        result = await asyncio.to_thread(self.rt.images.prune_build_cache, req.principal.tenant)
        return JsonResponse({"CachesDeleted": [d.removeprefix("Deleted: ")
                                               for d in result.deleted],
                             "SpaceReclaimed": result.reclaimed_bytes})
