"""Run a planned Dockerfile: each step makes an image, from the build cache when its key is
known. RUN runs in a fresh VM as a container of the previous step's image and its writable
layer becomes the step's layer, as `docker commit` makes one; COPY, ADD and WORKDIR write
into a created (never started) container's layer the same way; other instructions change
only the config. Every container is removed whatever happens, and an image is registered only
whole (a step's image is held by its cache entry until the build adopts the last one).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from steelcup.build import copy as copy_module
from steelcup.build import fetch as fetch_module
from steelcup.build.compression import decompressed, is_archive
from steelcup.build.context import Context
from steelcup.build.dockerfile import Dockerfile, Instruction, parse, parse_trigger
from steelcup.build.plan import (
    Plan,
    Stage,
    StageState,
    apply_arg,
    apply_meta,
    cache_key,
    check_platform,
    clean_config,
    fail,
    plan,
    run_argv,
    run_env,
)
from steelcup.build.words import expand_word, expand_words
from steelcup.errors import InvalidArgument, NotFound, SteelcupError
from steelcup.image import rootfs as rootfs_module
from steelcup.image.layers import SourceCounter, apply_layer
from steelcup.image.reference import is_full_id
from steelcup.image.store import Image
from steelcup.image.users import resolve_user
from steelcup.runtime import fs_archive
from steelcup.runtime.containers import Runtime
from steelcup.runtime.fs_commit import write_layer
from steelcup.runtime.fs_paths import ContainerTree, mounted_tree, resolve, writable_layer
from steelcup.runtime.fs_tar import open_tar
from steelcup.runtime.lifecycle import Op
from steelcup.runtime.model import BUILD_STEP_LABEL, ContainerConfig, ContainerRecord

log = logging.getLogger(__name__)
Send = Callable[[dict[str, Any]], Awaitable[None]]
Pull = Callable[[str], Awaitable[None]]
Create = Callable[[ContainerConfig, str | None], ContainerRecord]
METADATA = frozenset({"ENV", "LABEL", "CMD", "ENTRYPOINT", "USER", "EXPOSE", "VOLUME",
                      "STOPSIGNAL", "SHELL", "HEALTHCHECK", "ONBUILD", "MAINTAINER"})
# what each instruction accepts as --flags
_FLAGS = {"COPY": frozenset({"from", "chown", "chmod", "link"}),
          "ADD": frozenset({"chown", "chmod", "link", "checksum"}), "RUN": frozenset()}
_IDLE_ARGV = ("/.steelcup-build-never-started",)  # a files-only container is never started


class BuildFailed(SteelcupError):
    """A step failed; the message is docker's (a RUN's names its command and exit code,
    which `code` carries: the docker CLI exits with it)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class BuildRequest:
    tags: tuple[str, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    target: str = ""
    nocache: bool = False
    pull: bool = False
    quiet: bool = False
    platform: str = ""
    network_mode: str = ""
    extra_hosts: tuple[tuple[str, str], ...] = ()
    tenant: str | None = None  # whose build (None: the operator's)


@dataclass(frozen=True)
class _Source:
    """One COPY source as a tar spool of entries relative to it; a directory's contents are
    copied, a file lands under `name` (its name as the instruction gave it)."""

    spool: IO[bytes]
    is_dir: bool
    name: str


@dataclass
class _Built:
    image: Image
    state: StageState


class Builder:
    """One build of one context."""

    def __init__(self, runtime: Runtime, spool_dir: Path, send: Send,
                 pull: Pull | None = None, create: Create | None = None,
                 fetch_limits: fetch_module.FetchLimits | None = None) -> None:
        self.rt = runtime
        self.fetch_limits = fetch_limits or fetch_module.FetchLimits()
        # how a step's container is made: with the tenant's sizes and quotas (the API's
        # admission), or the runtime's own create
        self._create: Create = create or runtime.create
        self.images = runtime.images
        self.spool_dir = spool_dir
        self._send = send
        self._pull = pull
        self.req = BuildRequest()
        self._step = 0
        self._plan: Plan | None = None
        self._df: Dockerfile | None = None

    async def say(self, text: str) -> None:
        if not self.req.quiet:
            await self._send({"stream": text})

    def prepare(self, ctx: Context, req: BuildRequest) -> None:
        """Parse and plan the Dockerfile: a bad one fails here, before anything runs."""
        self.req = req
        check_platform(req.platform)
        self._df = parse(ctx.dockerfile, ctx.dockerfile_name)
        self._plan = plan(self._df, req.build_args, req.target)

    async def build(self, ctx: Context, req: BuildRequest) -> Image:
        """Build every stage up to the target; the last is tagged `req.tags`, the tenant's."""
        if self._plan is None:
            self.prepare(ctx, req)
        assert self._plan is not None and self._df is not None
        req = self.req
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        for note in self._df.notes:
            await self.say(f"Note: {note}\n")
        built: list[_Built] = []
        for stage in self._plan.stages:
            built.append(await self._stage(ctx, stage, built, self._df.escape))
        result = built[-1].image
        if req.labels:
            state = built[-1].state
            state.config["Labels"] = {**(state.config.get("Labels") or {}), **req.labels}
            result = await self._commit_meta(result, state, "LABEL " + " ".join(
                f"{k}={v}" for k, v in req.labels.items()))
        final = await asyncio.to_thread(self.images.adopt, result.id, list(req.tags),
                                        req.tenant)
        await self._send({"aux": {"ID": final.id}})
        if req.quiet:
            await self._send({"stream": final.id + "\n"})
        else:
            await self.say(f"Successfully built {final.short_id}\n")
            for tag in req.tags:
                await self.say(f"Successfully tagged {tag}\n")
        return final

    # -- stages ----------------------------------------------------------------------------
    async def _stage(self, ctx: Context, stage: Stage, built: list[_Built],
                     escape: str) -> _Built:
        assert self._plan is not None
        await self._announce(stage.from_instruction)
        earlier = self._plan.stage_by_ref(stage.base, stage.index, by_index=False)
        if earlier is not None:
            base = built[earlier.index].image
        elif stage.base == "scratch":
            base = await self._scratch()
        else:
            base = await self._base_image(stage.base, stage.from_instruction)
        await self.say(f" ---> {base.short_id}\n")
        inner = json.loads(base.raw_config).get("config") or {}
        state = StageState(config=dict(inner))
        triggers = list(state.config.pop("OnBuild", None) or [])
        image = base
        if triggers:
            await self.say(f"# Executing {len(triggers)} build trigger"
                           f"{'s' if len(triggers) > 1 else ''}\n")
            for text in triggers:
                instr = parse_trigger(text, stage.line)
                image = await self._instruction(ctx, image, state, instr, built, escape)
        for instr in stage.instructions:
            await self._announce(instr)
            image = await self._instruction(ctx, image, state, instr, built, escape)
        return _Built(image, state)

    async def _announce(self, instr: Instruction) -> None:
        assert self._plan is not None
        self._step += 1
        await self.say(f"Step {self._step}/{self._plan.steps_total} : {instr.original}\n")

    async def _scratch(self) -> Image:
        key = cache_key("", "FROM scratch")
        hit = self.images.cached(self.req.tenant, key)
        if hit is not None:
            return hit
        return await asyncio.to_thread(
            self.images.derive, None, None, config={}, history=None,
            cache=(self.req.tenant, key))

    async def _base_image(self, ref: str, instr: Instruction) -> Image:
        tenant = self.req.tenant
        if not self.req.pull:
            try:
                return await asyncio.to_thread(self.images.get, ref, tenant)
            except NotFound:
                pass
        if self._pull is None or is_full_id(ref) or ref.startswith("sha256:"):
            raise BuildFailed(f"Dockerfile line {instr.line}: No such image: {ref}")
        await self.say(f"Pulling {ref}\n")
        await self._pull(ref)
        return await asyncio.to_thread(self.images.get, ref, tenant)

    # -- one instruction -------------------------------------------------------------------
    async def _instruction(self, ctx: Context, parent: Image, state: StageState,
                           instr: Instruction, built: list[_Built], escape: str) -> Image:
        assert self._plan is not None
        cmd = instr.cmd
        if cmd == "ARG":
            apply_arg(state, instr, self._plan.global_args, self.req.build_args, escape)
            shown = "ARG " + " ".join(instr.args)
            return await self._commit_meta(parent, state, shown)
        if cmd in METADATA:
            shown = apply_meta(state, instr, escape)
            return await self._commit_meta(parent, state, shown)
        if cmd == "WORKDIR":
            shown = apply_meta(state, instr, escape)
            return await self._workdir(parent, state, shown)
        if cmd == "RUN":
            return await self._run(parent, state, instr)
        if cmd in ("COPY", "ADD"):
            return await self._copy(ctx, parent, state, instr, built, escape)
        raise fail(instr, "unknown instruction")  # the parser knows no other

    async def _commit_meta(self, parent: Image, state: StageState, shown: str) -> Image:
        key = cache_key(parent.id, "#(nop) " + shown, {"config": clean_config(state.config)})
        hit = None if self.req.nocache else self.images.cached(self.req.tenant, key)
        if hit is not None:
            await self.say(" ---> Using cache\n")
        else:
            hit = await asyncio.to_thread(
                self.images.derive, parent.id, None, config=clean_config(state.config),
                history=self._history(f"/bin/sh -c #(nop)  {shown}", state),
                cache=(self.req.tenant, key))
        await self.say(f" ---> {hit.short_id}\n")
        return hit

    async def _cached(self, key: str) -> Image | None:
        """The step's image from the build cache (saying so), unless the build asked for none
        or the cache has none."""
        hit = None if self.req.nocache else self.images.cached(self.req.tenant, key)
        if hit is not None:
            await self.say(f" ---> Using cache\n ---> {hit.short_id}\n")
        return hit

    def _history(self, created_by: str, state: StageState) -> dict[str, Any]:
        entry: dict[str, Any] = {"created_by": created_by}
        if state.author:
            entry["author"] = state.author
        return entry

    # -- RUN -------------------------------------------------------------------------------
    async def _run(self, parent: Image, state: StageState, instr: Instruction) -> Image:
        instr.check_flags(_FLAGS["RUN"])
        argv = run_argv(state, instr)
        env = {k: v for k, v in run_env(state, self.req.build_args).items()
               if k not in state.env()}
        shown_args = [f"{k}={v}" for k, v in sorted(env.items())]
        created_by = " ".join(argv) if not shown_args else \
            f"|{len(shown_args)} {' '.join(shown_args)} {' '.join(argv)}"
        key = cache_key(parent.id, "RUN " + json.dumps(argv), {"env": env})
        hit = await self._cached(key)
        if hit is not None:
            return hit
        async with self._container(parent, state, argv, env) as cid:
            await self.say(f" ---> Running in {cid[:12]}\n")
            code = await self._execute(cid)
            if code != 0:
                raise BuildFailed(f"The command '{_shown(argv, instr)}' returned a non-zero "
                                  f"code: {code}", code)
            image = await self._commit_container(cid, parent, state, created_by, key)
        await self.say(f" ---> Removed intermediate container {cid[:12]}\n"
                       f" ---> {image.short_id}\n")
        return image

    async def _execute(self, cid: str) -> int:
        """Start the container, stream its output to the build, return its exit code."""
        attached = self.rt.attach(cid, True, True)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        waiter = self.rt.waiter(cid, "next-exit")  # before start: a quick exit is not missed
        try:
            await self.rt.start(cid)
            while True:
                item = await attached.subscriber.queue.get()
                if item is None:
                    break
                text = decoder.decode(item[1])  # a character split between chunks waits
                if text:
                    await self.say(text)
            tail = decoder.decode(b"", final=True)
            if tail:
                await self.say(tail)
            return await waiter
        finally:
            waiter.close()  # not awaited when start failed
            attached.detach()

    @contextlib.asynccontextmanager
    async def _container(self, parent: Image, state: StageState, argv: tuple[str, ...],
                         env: Mapping[str, str]) -> AsyncIterator[str]:
        """A container of the step's parent image for `argv`, removed on the way out."""
        config = ContainerConfig(
            image=parent.id, image_id="", entrypoint=("",), cmd=tuple(argv),
            env=tuple(f"{k}={v}" for k, v in env.items()),
            working_dir=str(state.config.get("WorkingDir") or ""),
            user=str(state.config.get("User") or ""),
            network_mode=self.req.network_mode, extra_hosts=self.req.extra_hosts,
            tenant=self.req.tenant or "", labels=(BUILD_STEP_LABEL,),
        )
        record = self._create(config, None)
        try:
            yield record.id
        finally:
            try:
                await self.rt.remove(record.id, force=True, volumes=True)
            except NotFound:
                pass
            except SteelcupError as exc:  # the runtime marked it dead; the step's error stands
                log.warning("build step container %s: removal failed: %s", record.id[:12], exc)

    async def _commit_container(self, cid: str, parent: Image, state: StageState,
                                created_by: str, key: str) -> Image:
        """The container's writable layer as the step's layer, as `docker commit`."""
        async with writable_layer(self.rt, cid, Op.COMMIT) as upper:
            ids = rootfs_module.ids_of(self.rt.container_dir(cid))

            def commit() -> Image:
                with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
                    write_layer(upper, spool, ids)
                    spool.seek(0)
                    return self.images.derive(
                        parent.id, spool, config=clean_config(state.config),
                        history=self._history(created_by, state),
                        cache=(self.req.tenant, key))

            return await asyncio.to_thread(commit)

    # -- WORKDIR ---------------------------------------------------------------------------
    async def _workdir(self, parent: Image, state: StageState, shown: str) -> Image:
        path = str(state.config["WorkingDir"])
        key = cache_key(parent.id, "#(nop) " + shown, {"config": clean_config(state.config)})
        hit = await self._cached(key)
        if hit is not None:
            return hit
        async with self._container(parent, state, _IDLE_ARGV, {}) as cid:
            async with mounted_tree(self.rt, cid) as tree:
                made = await asyncio.to_thread(self._make_dirs, tree, cid, path, None)
            if not made:
                return await self._commit_meta(parent, state, shown)
            image = await self._commit_container(cid, parent, state,
                                                 f"/bin/sh -c #(nop)  {shown}", key)
        await self.say(f" ---> {image.short_id}\n")
        return image

    def _make_dirs(self, tree: ContainerTree, cid: str, path: str,
                   owner: copy_module.Ownership | None) -> bool:
        """Create the missing directories of `path` in the container; False if none were."""
        parts = resolve(tree, path, follow_last=True)
        existing = 0
        while existing < len(parts) and tree.lstat(parts[:existing + 1]) is not None:
            existing += 1
        missing = parts[existing:]
        if not missing:
            return False
        here = parts[:existing]
        st = tree.lstat(here)
        if st is None or not stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(f"cannot create directory {path}: "
                                  f"/{'/'.join(here)} is not a directory")
        names = ["/".join(missing[:i + 1]) for i in range(len(missing))]
        with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
            copy_module.dirs_tar(spool, names, owner=owner or copy_module.Ownership(0, 0))
            spool.seek(0)
            fs_archive.extract_archive(tree, "/" + "/".join(here), spool, cid,
                                       copy_uid_gid=True)
        return True

    # -- COPY / ADD ------------------------------------------------------------------------
    async def _copy(self, ctx: Context, parent: Image, state: StageState, instr: Instruction,
                    built: list[_Built], escape: str) -> Image:
        assert self._plan is not None
        instr.check_flags(_FLAGS[instr.cmd])
        scope = state.scope()
        words = list(instr.args) if instr.json else expand_words(instr.rest, scope, escape)
        if instr.json:
            words = [expand_word(w, scope, escape) for w in words]
        if len(words) < 2:
            raise fail(instr, f"{instr.cmd} requires at least two arguments, but only one "
                       "was provided. Destination could not be determined")
        *srcs, dest = words
        chmod = copy_module.parse_chmod(instr.flag("chmod"), instr.line)
        chown = expand_word(instr.flag("chown") or "", scope, escape)
        source_from = instr.flag("from")
        from_image: Image | None = None
        if source_from is not None:
            ref = expand_word(source_from, scope, escape)
            earlier = self._plan.stage_by_ref(ref, len(built))
            if earlier is None and any(st.name == ref.lower()
                                       for st in self._plan.stages[len(built):]):
                raise fail(instr, f"--from={ref}: the stage {ref!r} comes after this one")
            from_image = built[earlier.index].image if earlier is not None else \
                await self._base_image(ref, instr)
        self._check_remote(instr, srcs, from_image is not None)
        workdir = str(state.config.get("WorkingDir") or "/")
        dest_path = posixpath.join(workdir, dest)
        if (len(srcs) > 1 or any(copy_module.has_wildcard(s) for s in srcs
                                 if not fetch_module.is_url(s))) and not dest.endswith("/"):
            raise fail(instr, "When using COPY with more than one source file, the destination "
                       "must be a directory and end with a /")
        with contextlib.ExitStack() as files:
            spools = await self._sources(ctx, instr, srcs, from_image, files)
            digests = await asyncio.to_thread(
                lambda: [copy_module.tar_digest(src.spool) for src in spools])
            flags = ([f"--chown={chown}"] if chown else []) + \
                ([f"--chmod={chmod:o}"] if chmod is not None else [])
            shown = f"{instr.cmd} " + " ".join(
                flags + [f"{'dir' if src.is_dir else 'file'}:{h.removeprefix('sha256:')}"
                   for src, h in zip(spools, digests, strict=True)] + ["in", dest])
            key = cache_key(parent.id, shown, {"dest": dest_path, "sources": digests,
                                               "config": clean_config(state.config)})
            hit = await self._cached(key)
            if hit is not None:
                return hit
            async with self._container(parent, state, _IDLE_ARGV, {}) as cid:
                async with mounted_tree(self.rt, cid) as tree:
                    await asyncio.to_thread(self._place, tree, cid, spools, dest, dest_path,
                                            chown, chmod, instr)
                image = await self._commit_container(cid, parent, state,
                                                     f"/bin/sh -c #(nop) {shown} ", key)
        await self.say(f" ---> {image.short_id}\n")
        return image

    def _check_remote(self, instr: Instruction, srcs: list[str], from_stage: bool) -> None:
        """URL sources: ADD fetches http(s) files; git sources and COPY of a URL are
        refused, and --checksum needs a URL."""
        for src in srcs:
            if fetch_module.is_git(src):
                raise fail(instr, f"source {src}: git sources are not supported by steelcup's "
                           "builder (clone it in a RUN, or put it in the context)")
            if fetch_module.is_url(src) and (instr.cmd == "COPY" or from_stage):
                raise fail(instr, f"source can't be a URL for COPY: {src} (use ADD)")
            if fetch_module.is_url(src):
                try:
                    fetch_module.check_url(src)
                except fetch_module.FetchError as exc:
                    raise fail(instr, str(exc)) from None
        checksum = instr.flag("checksum")
        if checksum is not None:
            if not all(fetch_module.is_url(s) for s in srcs):
                raise fail(instr, "--checksum can only be used with an HTTP(S) source")
            digits = checksum.removeprefix("sha256:")
            if not checksum.startswith("sha256:") or len(digits) != 64 or \
                    not all(c in "0123456789abcdef" for c in digits):
                raise fail(instr, f"--checksum={checksum}: sha256:<64 hex digits> expected")

    async def _sources(self, ctx: Context, instr: Instruction, srcs: list[str],
                       from_image: Image | None,
                       files: contextlib.ExitStack) -> list[_Source]:
        """Each source as a tar spool (entries relative to it) and whether it is a directory
        (whose contents are copied)."""
        if from_image is None:
            root_fd = os.open(ctx.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            files.callback(os.close, root_fd)
            return await asyncio.to_thread(self._context_sources, ContainerTree(root_fd),
                                           instr, srcs, files)
        dummy = StageState(config={})
        async with self._container(from_image, dummy, _IDLE_ARGV, {}) as cid, \
                mounted_tree(self.rt, cid) as tree:
            return await asyncio.to_thread(self._tree_sources, tree, cid, instr, srcs, files)

    def _context_sources(self, tree: ContainerTree, instr: Instruction, srcs: list[str],
                         files: contextlib.ExitStack) -> list[_Source]:
        out: list[_Source] = []
        for src in srcs:
            if fetch_module.is_url(src):
                out.append(self._url_source(src, instr, files))
                continue
            if copy_module.outside_context(src):
                raise BuildFailed(f"{instr.cmd} failed: forbidden path outside the build "
                                  f"context: {src} ()")
            names = [src]
            if copy_module.has_wildcard(src):
                names = copy_module.match_sources(tree.root_fd, src)
                if not names:
                    raise BuildFailed(f"{instr.cmd} failed: no source files were specified")
            found = self._tree_sources(tree, "context", instr, names, files)
            if instr.cmd == "ADD":
                found = [self._unpack_local_tar(tree, one, files) for one in found]
            out += found
        return out

    def _url_source(self, url: str, instr: Instruction,
                    files: contextlib.ExitStack) -> _Source:
        """ADD of a URL: the file fetched on the host (the operator's builds reach what the
        host reaches, a tenant's only public addresses), mode 0600 and the server's
        Last-Modified as docker's; never unpacked."""
        body = files.enter_context(tempfile.TemporaryFile(dir=self.spool_dir))
        try:
            got = fetch_module.fetch(url, body, self.fetch_limits,
                                     private_ok=self.req.tenant is None)
        except fetch_module.FetchError as exc:
            raise BuildFailed(f"Dockerfile line {instr.line}: ADD failed: {exc}") from None
        expected = instr.flag("checksum")
        if expected is not None and expected != got.digest:
            raise BuildFailed(f"Dockerfile line {instr.line}: ADD failed: {url}: checksum "
                              f"mismatch: expected {expected}, got {got.digest}")
        body.seek(0)
        spool = files.enter_context(tempfile.TemporaryFile(dir=self.spool_dir))
        with open_tar(spool) as tar:
            info = tarfile.TarInfo(got.name or "download")
            info.size, info.mode = got.size, 0o600
            info.mtime = int(got.mtime if got.mtime is not None else time.time())
            tar.addfile(info, body)
        spool.seek(0)
        return _Source(spool, False, got.name)

    def _tree_sources(self, tree: ContainerTree, where: str, instr: Instruction,
                      names: list[str], files: contextlib.ExitStack
                      ) -> list[_Source]:
        out: list[_Source] = []
        for name in names:
            parts = resolve(tree, name, follow_last=True)
            st = tree.lstat(parts)
            if st is None:
                raise BuildFailed(f"{instr.cmd} failed: file not found in build context or "
                                  f"excluded by .dockerignore: stat {name}: file does not exist"
                                  if where == "context" else
                                  f"{instr.cmd} failed: stat {name}: file does not exist")
            is_dir = stat.S_ISDIR(st.st_mode)
            asked = "/" + "/".join(parts) + ("/." if is_dir else "")
            source = fs_archive.locate(tree, asked, where)
            spool = files.enter_context(tempfile.TemporaryFile(dir=self.spool_dir))
            fs_archive.write_archive(tree, source, spool)
            spool.seek(0)
            out.append(_Source(spool, is_dir, posixpath.basename(posixpath.normpath(name))))
        return out

    def _unpack_local_tar(self, tree: ContainerTree, src: _Source,
                          files: contextlib.ExitStack) -> _Source:
        """ADD of a local tar archive: its contents, unpacked with the layer code's rules."""
        if src.is_dir:
            return src
        name = src.name
        parts = resolve(tree, src.name, follow_last=True)
        host = Path(f"/proc/self/fd/{tree.root_fd}", *parts)
        with open(host, "rb") as probe:
            head = probe.read(512)
        if not is_archive(head):
            return src
        top = Path(tempfile.mkdtemp(dir=self.spool_dir, prefix="add-"))
        files.callback(shutil.rmtree, top, ignore_errors=True)
        with open(host, "rb") as archive:
            upload = SourceCounter(archive)  # the expansion ratio is against the archive
            try:
                with decompressed(cast(IO[bytes], upload)) as raw:
                    apply_layer(raw, top, compressed=upload)
            except SteelcupError as exc:
                raise BuildFailed(f"ADD failed: {name}: {exc}") from exc
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        files.callback(os.close, fd)
        unpacked = ContainerTree(fd)
        source = fs_archive.locate(unpacked, "/.", "archive")
        out = files.enter_context(tempfile.TemporaryFile(dir=self.spool_dir))
        fs_archive.write_archive(unpacked, source, out)
        out.seek(0)
        return _Source(out, True, name)

    def _place(self, tree: ContainerTree, cid: str, spools: list[_Source],
               dest: str, dest_path: str, chown: str, chmod: int | None,
               instr: Instruction) -> None:
        """Extract the sources at the destination with docker's COPY rules."""
        owner = self._owner(tree, chown, instr)
        parts = resolve(tree, dest_path, follow_last=True)
        st = tree.lstat(parts)
        into_dir = dest.endswith("/") or len(spools) > 1 or spools[0].is_dir or \
            (st is not None and stat.S_ISDIR(st.st_mode))
        dir_path = dest_path if into_dir else posixpath.dirname(dest_path.rstrip("/")) or "/"
        self._make_dirs(tree, cid, dir_path, owner if into_dir else None)
        base_name = posixpath.basename(dest_path.rstrip("/"))
        if into_dir and any(not src.name for src in spools):
            raise fail(instr, "cannot determine filename from url: its path ends in / "
                       "(give the destination a file name)")
        for src in spools:
            def rename(name: str, src: _Source = src) -> str | None:
                if not name:
                    return None  # the directory itself: the destination is made already
                if src.is_dir:
                    return name
                return src.name if into_dir else base_name

            with tempfile.TemporaryFile(dir=self.spool_dir) as placed:
                with open_tar(placed) as out:
                    copy_module.relocate(src.spool, out, rename, owner, chmod)
                placed.seek(0)
                fs_archive.extract_archive(tree, dir_path, placed, cid, copy_uid_gid=True)

    def _owner(self, tree: ContainerTree, chown: str,
               instr: Instruction) -> copy_module.Ownership:
        if not chown:
            return copy_module.Ownership(0, 0)
        user, _, group = chown.partition(":")
        if user.isdigit() and (not group or group.isdigit()):
            return copy_module.Ownership(int(user), int(group or user))
        try:
            owner = resolve_user(Path(f"/proc/self/fd/{tree.root_fd}"), chown)
        except InvalidArgument as exc:
            raise fail(instr, f"--chown={chown}: {exc}") from None
        return copy_module.Ownership(owner.uid, owner.gid)


def _shown(argv: tuple[str, ...], instr: Instruction) -> str:
    return json.dumps(list(argv)) if instr.json else " ".join(argv)


