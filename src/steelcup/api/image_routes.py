"""Docker Engine API routes for images, registries and archives: list, pull, push, save,
load, import, history, prune and login. Thin adapters: decode the request, run the image code
in a thread, stream docker's JSON-lines progress format back.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from steelcup.api import image_codec
from steelcup.api.bodies import QueueWriter, spool_body
from steelcup.api.filters import parse_filters
from steelcup.api.http import JsonResponse, Request, Response, Router, StreamResponse
from steelcup.errors import InvalidArgument, SteelcupError
from steelcup.image import registry
from steelcup.image.auth import (
    Credentials,
    credentials_from_json,
    decode_registry_auth,
    normalize_server_address,
)
from steelcup.image.config import ImageConfig
from steelcup.image.credentials import TenantCredentials
from steelcup.image.reference import Reference, parse_reference
from steelcup.image.store import ImageStore
from steelcup.runtime.events import EventBus
from steelcup.runtime.fs_commit import apply_changes
from steelcup.runtime.logs import parse_time_ns

Handler = Callable[[Request], Awaitable[Response]]
_QUEUE_MAX = 16  # chunks buffered between a worker thread and the HTTP stream
_BAR_WIDTH = 50


def register(
    router: Router,
    images: ImageStore,
    events: EventBus,
    root: Path,
    *,
    options: registry.RegistryOptions | None = None,
) -> None:
    """Add the routes."""
    api = _ImageApi(images, events, root, options or registry.RegistryOptions())
    router.add("GET", "/images/json", api.list_images)
    router.add("POST", "/images/load", api.load)
    router.add("POST", "/images/create", api.create)
    router.add("POST", "/images/prune", api.prune)
    router.add("GET", "/images/get", api.save_many)
    router.add("GET", "/images/{name:path}/get", api.save_one)
    router.add("GET", "/images/{name:path}/history", api.history)
    router.add("POST", "/images/{name:path}/push", api.push)
    router.add("POST", "/auth", api.login)
    router.add("DELETE", "/auth", api.logout)  # steelcup extension: docker logout is client-side


class _ImageApi:
    def __init__(
        self,
        images: ImageStore,
        events: EventBus,
        root: Path,
        options: registry.RegistryOptions,
    ) -> None:
        self.images = images
        self.events = events
        self.credentials = TenantCredentials(root)
        self.spool_dir = root / "tmp"
        self.options = options

    def _publisher(self, req: Request) -> Callable[[str, str], None]:
        """An image-event publisher callable from worker threads (the bus is loop-bound); the
        events are the caller's tenant's."""
        loop = asyncio.get_running_loop()
        tenant = req.principal.tenant or ""

        def publish(action: str, name: str) -> None:
            loop.call_soon_threadsafe(self.events.publish, "image", action, name, {"name": name},
                                      tenant)

        return publish

    def _creds(self, req: Request, ref: Reference) -> Credentials | None:
        """The request's own registry credentials, else the ones its tenant logged in with."""
        given = decode_registry_auth(req.headers.get("x-registry-auth", ""))
        if given is not None and not given.anonymous:
            return given
        return self.credentials.of(req.principal.tenant).get(ref.domain)

    # -- list ------------------------------------------------------------------------------
    async def list_images(self, req: Request) -> Response:
        filters = image_codec.decode_image_filters(req.q("filters"))
        tenant = req.principal.tenant
        images = await asyncio.to_thread(
            functools.partial(self.images.list, tenant, intermediates=req.q_bool("all")))
        chosen = await asyncio.to_thread(image_codec.select_images, images, filters,
                                         lambda ref: self.images.get(ref, tenant))
        return JsonResponse([image_codec.encode_summary(i, tags) for i, tags in chosen])

    # -- load and import -------------------------------------------------------------------
    async def load(self, req: Request) -> Response:
        """docker load: JSON lines streamed as dockerd streams them; a bad archive is an error
        message in the stream (clients raise their load error from it), not an HTTP status."""
        spool = await spool_body(req, self.spool_dir)
        publish = self._publisher(req)
        tenant = req.principal.tenant

        def run(emit: _Emit, cancel: threading.Event) -> None:
            try:
                loaded = self.images.load(spool, tenant=tenant)
            finally:
                spool.close()
            for entry in loaded:
                for name in entry.tags:
                    emit(_Stream(f"Loaded image: {name}\n"))
                    publish("load", name)
                if not entry.tags:
                    emit(_Stream(f"Loaded image ID: {entry.image.id}\n"))
                    publish("load", entry.image.id)

        return _progress_stream(run)

    async def _import(self, req: Request) -> Response:
        """docker import: a rootfs tar in the body, `changes` applied to its config."""
        if req.q("fromSrc") != "-":
            raise InvalidArgument("fromSrc must be '-' (the image tarball in the request body)")
        repo, tag = req.q("repo"), req.q("tag")
        ref = (f"{repo}:{tag}" if tag else repo) if repo else None
        config = apply_changes(ImageConfig(), req.q_all("changes"))
        spool = await spool_body(req, self.spool_dir)
        try:
            image = await asyncio.to_thread(self.images.import_rootfs, spool, ref, config,
                                            tenant=req.principal.tenant)
        finally:
            spool.close()
        self.events.publish("image", "import", image.id, {"name": ref or ""},
                            req.principal.tenant or "")
        return JsonResponse({"status": image.id})

    # -- pull ------------------------------------------------------------------------------
    async def create(self, req: Request) -> Response:
        from_image = req.q("fromImage")
        if not from_image:
            return await self._import(req)
        tag = req.q("tag")
        text = from_image
        if tag:
            text += ("@" if tag.startswith("sha256:") else ":") + tag
        ref = parse_reference(text)
        creds = self._creds(req, ref)
        publish = self._publisher(req)
        opts = self.options
        if req.q("platform"):
            opts = registry.RegistryOptions(**{**vars(self.options), "platform": req.q("platform")})

        tenant = req.principal.tenant

        def run(emit: _Emit, cancel: threading.Event) -> None:
            # always from the registry, with the caller's credentials, even when every blob is
            # here: holding another tenant's image locally grants nothing (docs/tenancy.md)
            registry.pull(ref, self.images, emit, credentials=creds, options=opts, cancel=cancel,
                          tenant=tenant)
            publish("pull", ref.familiar())

        return _progress_stream(run)

    # -- push ------------------------------------------------------------------------------
    async def push(self, req: Request) -> Response:
        name = req.params["name"]
        tenant = req.principal.tenant
        tag = req.q("tag")
        base = parse_reference(name, default_tag=False)
        if base.digest is not None:
            raise InvalidArgument(f"cannot push a digest reference: {name}")
        if tag:
            refs = [base.with_tag(tag)]
        elif base.tag is not None:
            refs = [base]
        else:
            images = await asyncio.to_thread(self.images.list, tenant)
            prefix = base.familiar_name + ":"
            tags = sorted({t for i in images for t in i.repo_tags if t.startswith(prefix)})
            if not tags:
                raise InvalidArgument(f"An image does not exist locally with the tag: {name}")
            refs = [parse_reference(t) for t in tags]
        creds = self._creds(req, refs[0])
        publish = self._publisher(req)

        def run(emit: _Emit, cancel: threading.Event) -> None:
            for ref in refs:
                digest = registry.push(
                    ref, self.images, emit, credentials=creds, options=self.options, cancel=cancel,
                    tenant=tenant,
                )
                image = self.images.get(ref.familiar(), tenant)
                size = next(
                    (len(m.raw) for m in self.images.manifests(image.id) if m.digest == digest), 0
                )
                emit(_Aux({"Tag": ref.tag or "", "Digest": digest, "Size": size}))
                publish("push", ref.familiar())

        return _progress_stream(run)

    # -- save ------------------------------------------------------------------------------
    async def save_one(self, req: Request) -> Response:
        return await self._save([req.params["name"]], req.principal.tenant)

    async def save_many(self, req: Request) -> Response:
        names = req.q_all("names")
        if not names:
            raise InvalidArgument("no images given: use ?names=IMAGE")
        return await self._save(names, req.principal.tenant)

    async def _save(self, names: list[str], tenant: str | None) -> Response:
        for name in names:  # fail with a proper status before the stream starts
            await asyncio.to_thread(self.images.get, name, tenant)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(_QUEUE_MAX)
        cancel = threading.Event()
        writer = QueueWriter(loop, queue, cancel)

        def run() -> None:
            try:
                with io.BufferedWriter(writer, 1 << 20) as buffered:
                    self.images.save(names, buffered, tenant)
            finally:
                writer.end()

        task = asyncio.create_task(asyncio.to_thread(run))

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while (item := await queue.get()) is not None:
                    yield item
                await task
            finally:
                cancel.set()

        return StreamResponse(chunks(), content_type="application/x-tar")

    # -- history ---------------------------------------------------------------------------
    async def history(self, req: Request) -> Response:
        name = req.params["name"]
        image = await asyncio.to_thread(self.images.get, name, req.principal.tenant)
        entries = await asyncio.to_thread(self.images.history, image.id, req.principal.tenant)
        out: list[dict[str, Any]] = []
        for i, entry in enumerate(reversed(entries)):
            top = i == 0
            out.append(
                {
                    "Id": image.id if top else "<missing>",
                    "Created": _unix(entry.created),
                    "CreatedBy": entry.created_by,
                    "Tags": list(image.repo_tags) if top else None,
                    "Size": entry.size_bytes,
                    "Comment": entry.comment,
                }
            )
        return JsonResponse(out)

    # -- prune -----------------------------------------------------------------------------
    async def prune(self, req: Request) -> Response:
        filters = parse_filters(req.q("filters"))
        dangling = filters.get("dangling", ["true"])
        dangling_only = not any(v.lower() in ("false", "0") for v in dangling)
        result = await asyncio.to_thread(self.images.prune, dangling_only=dangling_only,
                                         tenant=req.principal.tenant)
        deleted = []
        for line in result.deleted:
            kind, _, what = line.partition(": ")
            deleted.append({kind: what})
            if kind == "Deleted":
                self.events.publish("image", "delete", what, {}, req.principal.tenant or "")
        self.events.publish("image", "prune", "", {"reclaimed": str(result.reclaimed_bytes)},
                            req.principal.tenant or "")
        return JsonResponse(
            {"ImagesDeleted": deleted or None, "SpaceReclaimed": result.reclaimed_bytes}
        )

    # -- login -----------------------------------------------------------------------------
    async def login(self, req: Request) -> Response:
        body = await req.json()
        creds = credentials_from_json(body)
        server = normalize_server_address(str(body.get("serveraddress") or ""))
        await asyncio.to_thread(registry.login, server, creds, self.options)
        await asyncio.to_thread(self.credentials.of(req.principal.tenant).set, server, creds)
        return JsonResponse({"Status": "Login Succeeded", "IdentityToken": ""})

    async def logout(self, req: Request) -> Response:
        server = normalize_server_address(req.q("serveraddress"))
        removed = await asyncio.to_thread(self.credentials.of(req.principal.tenant).remove, server)
        return JsonResponse({"Status": "Removed login credentials" if removed else "Not logged in"})


# -- progress streams -----------------------------------------------------------------------


class _Aux:
    """A final `aux` message (push result) travelling through the progress callback."""

    def __init__(self, aux: dict[str, Any]) -> None:
        self.aux = aux


class _Stream:
    """A `stream` message (load's "Loaded image: ...") travelling through the callback."""

    def __init__(self, text: str) -> None:
        self.text = text


_Emit = Callable[[registry.ProgressEvent | _Aux | _Stream], None]


def encode_progress(event: registry.ProgressEvent) -> dict[str, Any]:
    """One progress event in docker's JSON message form."""
    msg: dict[str, Any] = {"status": event.status}
    if event.current is not None and event.total:
        msg["progressDetail"] = {"current": event.current, "total": event.total}
        msg["progress"] = progress_bar(event.current, event.total)
    elif event.id and not event.status.startswith("Pulling from"):
        msg["progressDetail"] = {}
    if event.id:
        msg["id"] = event.id
    return msg


def encode_error(message: str) -> dict[str, Any]:
    return {"errorDetail": {"message": message}, "error": message}


def progress_bar(current: int, total: int) -> str:
    """Docker's `[====>    ]  1.2MB/3.4MB` string."""
    filled = min(_BAR_WIDTH, int(_BAR_WIDTH * current / total)) if total else 0
    bar = "=" * filled + (">" if filled < _BAR_WIDTH else "") + " " * (_BAR_WIDTH - filled - 1)
    return f"[{bar[:_BAR_WIDTH]}] {human_size(current):>8}/{human_size(total)}"


def human_size(n: float) -> str:
    """Decimal units with 4 significant digits, as docker's go-units HumanSize."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.4g}{unit}"
        n /= 1000
    return f"{n:.4g}TB"


def _progress_stream(
    work: Callable[[_Emit, threading.Event], None],
) -> StreamResponse:
    """Run `work` in a thread; its progress events become docker JSON lines on the response."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    cancel = threading.Event()

    def put(item: bytes | None) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def emit(event: registry.ProgressEvent | _Aux | _Stream) -> None:
        if isinstance(event, _Aux):
            msg: dict[str, Any] = {"progressDetail": {}, "aux": event.aux}
        elif isinstance(event, _Stream):
            msg = {"stream": event.text}
        else:
            msg = encode_progress(event)
        put(json.dumps(msg, separators=(",", ":")).encode() + b"\r\n")

    def run() -> None:
        try:
            work(emit, cancel)
        except SteelcupError as exc:
            put(json.dumps(encode_error(str(exc))).encode() + b"\r\n")
        except Exception as exc:  # noqa: BLE001 - headers are sent; report in-band
            put(json.dumps(encode_error(f"internal error: {exc}")).encode() + b"\r\n")
        finally:
            put(None)

    task = asyncio.create_task(asyncio.to_thread(run))

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while (item := await queue.get()) is not None:
                yield item
            await task
        finally:
            cancel.set()

    return StreamResponse(chunks())


def _unix(created: str) -> int:
    if not created:
        return 0
    try:
        return parse_time_ns(created[:19] + "Z") // 1_000_000_000
    except ValueError:
        return 0
