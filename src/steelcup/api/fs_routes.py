"""Docker Engine API routes for container filesystems: changes, archive (cp), export, commit,
rename and container prune. Thin adapters over `runtime.fs_*`; tar streams are produced
by a worker thread and flow to the client with backpressure.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import threading
from collections.abc import Callable
from typing import IO

from steelcup.api.bodies import QueueWriter, spool_body
from steelcup.api.filters import parse_filters
from steelcup.api.http import (
    EmptyResponse,
    JsonResponse,
    Request,
    Response,
    Router,
    StreamResponse,
)
from steelcup.errors import InvalidArgument
from steelcup.image.store import ImageStore
from steelcup.runtime import fs_admin, fs_archive, fs_changes, fs_commit, fs_paths
from steelcup.runtime.containers import Runtime
from steelcup.runtime.events import EventBus
from steelcup.runtime.lifecycle import Op

log = logging.getLogger(__name__)

STAT_HEADER = "X-Docker-Container-Path-Stat"
TAR = "application/x-tar"
_QUEUE_MAX = 16
_BUFFER = 256 << 10


def register(router: Router, runtime: Runtime, images: ImageStore, events: EventBus) -> None:
    api = _FsApi(runtime, images, events)
    router.add("GET", "/containers/{id}/changes", api.changes)
    router.add("HEAD", "/containers/{id}/archive", api.archive_head)
    router.add("GET", "/containers/{id}/archive", api.archive_get)
    router.add("PUT", "/containers/{id}/archive", api.archive_put)
    router.add("GET", "/containers/{id}/export", api.export)
    router.add("POST", "/containers/{id}/rename", api.rename)
    router.add("POST", "/containers/prune", api.prune)
    router.add("POST", "/commit", api.commit)


def stat_header(info: fs_archive.PathStat) -> tuple[str, str]:
    raw = json.dumps(info.to_json(), separators=(",", ":")).encode()
    return STAT_HEADER, base64.b64encode(raw).decode("ascii")


class _FsApi:
    def __init__(self, runtime: Runtime, images: ImageStore, events: EventBus) -> None:
        self.rt = runtime
        self.images = images
        self.events = events
        self.spool_dir = runtime.root / "tmp"

    async def changes(self, req: Request) -> Response:
        found = await fs_changes.container_changes(self.rt, req.params["id"])
        return JsonResponse([{"Path": c.path, "Kind": int(c.kind)} for c in found])

    # -- archive ---------------------------------------------------------------------------
    async def _locate(
        self, req: Request
    ) -> tuple[contextlib.AsyncExitStack, fs_paths.ContainerTree, fs_archive.Source]:
        """Mount (if needed) and find `?path=`; the caller owns the returned exit stack."""
        name = req.params["id"]
        path = req.q("path")
        stack = contextlib.AsyncExitStack()
        try:
            tree = await stack.enter_async_context(fs_paths.mounted_tree(self.rt, name))
            source = await asyncio.to_thread(fs_archive.locate, tree, path, name)
        except BaseException:
            await stack.aclose()
            raise
        return stack, tree, source

    async def archive_head(self, req: Request) -> Response:
        stack, _fd, source = await self._locate(req)
        await stack.aclose()
        return EmptyResponse(200, headers=[stat_header(source.stat)])

    async def archive_get(self, req: Request) -> Response:
        stack, tree, source = await self._locate(req)
        chunks = _ThreadStream(lambda out: fs_archive.write_archive(tree, source, out), stack)
        return StreamResponse(chunks, content_type=TAR, headers=[stat_header(source.stat)])

    async def archive_put(self, req: Request) -> Response:
        name = req.params["id"]
        path = req.q("path")
        if not path:
            raise InvalidArgument("path must not be empty")
        no_overwrite = req.q_bool("noOverwriteDirNonDir")
        copy_uid_gid = req.q_bool("copyUIDGID")
        self.rt.record(name)  # 404 before reading the body
        spool = await spool_body(req, self.spool_dir)
        try:
            async with fs_paths.mounted_tree(self.rt, name) as tree:
                await asyncio.to_thread(
                    fs_archive.extract_archive, tree, path, spool, name,
                    no_overwrite_dir_non_dir=no_overwrite, copy_uid_gid=copy_uid_gid,
                )
        finally:
            spool.close()
        return EmptyResponse(200)

    # -- export ----------------------------------------------------------------------------
    async def export(self, req: Request) -> Response:
        ref = req.params["id"]
        stack = contextlib.AsyncExitStack()
        try:
            root_fd = await stack.enter_async_context(
                fs_paths.mounted_root(self.rt, ref, Op.EXPORT))
            record = self.rt.record(ref)
        except BaseException:
            await stack.aclose()
            raise
        self.events.publish("container", "export", record.id, {"name": record.name},
                            record.config.tenant)
        ids = fs_paths.stored_ids(self.rt, record.id)
        chunks = _ThreadStream(lambda out: fs_commit.write_export(root_fd, out, ids), stack)
        return StreamResponse(chunks, content_type=TAR)

    # -- commit, rename, prune -------------------------------------------------------------
    async def commit(self, req: Request) -> Response:
        container = req.q("container")
        if not container:
            raise InvalidArgument("container is required: use ?container=NAME")
        repo, tag = req.q("repo"), req.q("tag")
        if tag and not repo:
            raise InvalidArgument("a tag needs a repository name")
        ref = (f"{repo}:{tag}" if tag else repo) or None
        container = self.rt.resolve(container, req.principal.tenant)
        image = await fs_commit.commit(
            self.rt, container, repo_tag=ref, comment=req.q("comment"),
            author=req.q("author"), changes=req.q_all("changes"), spool_dir=self.spool_dir,
            tenant=req.principal.tenant,
        )
        return JsonResponse({"Id": image.id}, status=201)

    async def rename(self, req: Request) -> Response:
        self.rt.rename(req.params["id"], req.q("name"))
        return EmptyResponse(204)

    async def prune(self, req: Request) -> Response:
        report = await fs_admin.prune(self.rt, parse_filters(req.q("filters")),
                                      req.principal.tenant)
        return JsonResponse({"ContainersDeleted": report.deleted or None,
                             "SpaceReclaimed": report.reclaimed_bytes})


class _ThreadStream:
    """Chunks that `work` writes in a worker thread; `stack` (the mount) is closed at the end.

    An async iterator with `aclose`, so the server releases the mount even when the client
    goes away before the first chunk.
    """

    def __init__(
        self, work: Callable[[IO[bytes]], None], stack: contextlib.AsyncExitStack
    ) -> None:
        loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(_QUEUE_MAX)
        self._cancel = threading.Event()
        self._stack = stack
        self._closed = False
        writer = QueueWriter(loop, self._queue, self._cancel)

        def run() -> None:
            try:
                with io.BufferedWriter(writer, _BUFFER) as out:
                    work(out)
            finally:
                writer.end()

        self._task: asyncio.Future[None] = asyncio.ensure_future(asyncio.to_thread(run))

    def __aiter__(self) -> _ThreadStream:
        return self

    async def __anext__(self) -> bytes:
        item = await self._queue.get()
        if item is None:
            try:
                await self._task  # a failure mid-stream must not look like a complete tar
            finally:
                await self.aclose()
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel.set()
        while not self._task.done():
            while not self._queue.empty():
                self._queue.get_nowait()
            await asyncio.wait({self._task}, timeout=0.1)
        if not self._task.cancelled() and self._task.exception() is not None:
            log.warning("archive stream stopped: %s", self._task.exception())
        await self._stack.aclose()
