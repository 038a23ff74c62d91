"""Confined access to a container's root filesystem: an fd of its merged root, and paths
resolved below it like docker does (symlinks followed relative to the container root).

Every file is then opened through directory fds with `O_NOFOLLOW`, so a guest that swaps a
directory for a symlink meanwhile cannot make the daemon read or write outside the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from steelcup.errors import InvalidArgument, NotFound
from steelcup.image import rootfs as rootfs_module
from steelcup.runtime.containers import Live, Runtime

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40  # symlinks followed while resolving one path (Linux's limit)
MAX_DEPTH = 1024


@contextlib.asynccontextmanager
async def mounted_root(runtime: Runtime, live: Live) -> AsyncIterator[int]:
    """An fd of the container's merged root, mounting it for the duration if it is stopped.

    Holds the container's `busy` lock, so a concurrent `start` waits instead of racing the
    temporary mount (and the mount is released only if the container is not running).
    """
    async with live.busy:
        if live.removed:
            raise NotFound(f"No such container: {live.record.id}")
        cdir = runtime.container_dir(live.record.id)
        try:
            root = await asyncio.to_thread(runtime.prepare_rootfs, live.record)
            fd = os.open(root, DIR_FLAGS)
            try:
                yield fd
            finally:
                os.close(fd)
        finally:
            if not live.record.state.running and not live.removed:
                await asyncio.to_thread(rootfs_module.release, cdir)


@contextlib.asynccontextmanager
async def writable_layer(runtime: Runtime, live: Live) -> AsyncIterator[Path]:
    """The container's upper dir (what diff, commit and sizes read), its filesystem mounted for
    the duration if the container is stopped. Holds `busy`, like `mounted_root`. The dir does
    not exist for a container that never ran."""
    async with live.busy:
        if live.removed:
            raise NotFound(f"No such container: {live.record.id}")
        cdir = runtime.container_dir(live.record.id)
        try:
            yield await asyncio.to_thread(rootfs_module.mount_layer, cdir)
        finally:
            if not live.record.state.running and not live.removed:
                await asyncio.to_thread(rootfs_module.release, cdir)


def split_path(path: str) -> list[str]:
    return [c for c in path.split("/") if c not in ("", ".")]


def open_dir(root_fd: int, parts: Iterable[str]) -> int:
    """Open directory `parts` below `root_fd` without following any symlink."""
    fd = os.dup(root_fd)
    try:
        for comp in parts:
            nfd = os.open(comp, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def lstat_at(root_fd: int, parts: tuple[str, ...]) -> os.stat_result | None:
    """lstat of `parts` below the root (None if missing), walking fds without following."""
    if not parts:
        return os.fstat(root_fd)
    try:
        parent = open_dir(root_fd, parts[:-1])
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    try:
        return os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    finally:
        os.close(parent)


def resolve(root_fd: int, path: str, *, follow_last: bool) -> tuple[str, ...]:
    """Resolve `path` in the container: symlinks are followed relative to the container root
    (an absolute target restarts at the root, `..` stops at the root). The last component is
    followed only if `follow_last`. The result may not exist."""
    pending = path.split("/")
    done: list[str] = []
    links = 0
    while pending:
        comp = pending.pop(0)
        if comp in ("", "."):
            continue
        if comp == "..":
            if done:
                done.pop()
            continue
        last = not any(c not in ("", ".") for c in pending)
        if not last or follow_last:
            st = lstat_at(root_fd, (*done, comp))
            if st is not None and stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise InvalidArgument(f"too many levels of symbolic links: {path}")
                parent = open_dir(root_fd, done)
                try:
                    target = os.readlink(comp, dir_fd=parent)
                finally:
                    os.close(parent)
                if target.startswith("/"):
                    done = []
                pending = target.split("/") + pending
                continue
        done.append(comp)
    return tuple(done)
