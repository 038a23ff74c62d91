"""Confined access to a container's root filesystem: an fd of its merged root, and paths
resolved below it like docker does (symlinks followed relative to the container root). A path
under one of the container's volume or bind mounts is found in the mounted host directory
(longest mount target first), as the container sees it, not in the rootfs beneath.

Every file is then opened through directory fds with `O_NOFOLLOW`, so a guest that swaps a
directory for a symlink meanwhile cannot make the daemon read or write outside the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from steelcup.errors import InvalidArgument
from steelcup.idmap import IdRange
from steelcup.image import rootfs as rootfs_module
from steelcup.runtime.containers import Runtime
from steelcup.runtime.lifecycle import Op
from steelcup.volume.namespace import key as volume_key
from steelcup.volume.spec import MountKind, MountPlan

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40  # symlinks followed while resolving one path (Linux's limit)
MAX_DEPTH = 1024
# What steelcup itself puts in a container's writable layer for each run: mount points for the
# guest kernel's filesystems and the /etc files it writes (runtime.resources). They are never
# the container's changes: `diff` hides them and `commit` leaves them out, as dockerd (whose
# init layer holds them). Relative paths, as tuples of names.
RUNTIME_PATHS = frozenset({("dev",), ("proc",), ("sys",), ("etc", "hosts"), ("etc", "hostname"),
                           ("etc", "resolv.conf")})
# Directories holding such files: their mtime moved when steelcup wrote them.
RUNTIME_PARENTS = frozenset(p[:-1] for p in RUNTIME_PATHS if len(p) > 1)


@contextlib.asynccontextmanager
async def mounted_root(runtime: Runtime, ref: str, op: Op = Op.FILES) -> AsyncIterator[int]:
    """An fd of the container's merged root, mounting it for the duration if it is stopped.

    Holds the container (`Runtime.holding_files`), so a concurrent `start` waits instead of
    racing the temporary mount, and a removal waits for the caller to finish.
    """
    async with runtime.holding_files(ref, op) as record:
        root = await asyncio.to_thread(runtime.prepare_rootfs, record)
        fd = os.open(root, DIR_FLAGS)
        try:
            yield fd
        finally:
            os.close(fd)


@dataclass(frozen=True)
class MountedDir:
    """A volume or bind mount of the container: its target's components, an fd of the host
    directory mounted there."""

    target: tuple[str, ...]
    fd: int
    readonly: bool = False
    ids: IdRange | None = None  # the range its ids are stored with (None: host ids as-is)


def mount_at(
    targets: Sequence[tuple[str, ...]], parts: tuple[str, ...]
) -> tuple[int | None, tuple[str, ...]]:
    """Which mount (index into `targets`, None: the rootfs) holds the resolved container path
    `parts`, and the path's components below it. The longest target that is a whole-component
    prefix wins, so a mount nested in another is seen through it."""
    best: int | None = None
    for index, target in enumerate(targets):
        if parts[:len(target)] == target and (best is None or len(target) > len(targets[best])):
            best = index
    if best is None:
        return None, parts
    return best, parts[len(targets[best]):]


class ContainerTree:
    """The container's filesystem as its processes see it: the rootfs fd with the host
    directories of its volume and bind mounts over their targets. Paths are resolved
    components (`resolve`); below a mount they are walked from the mount's fd, never above."""

    def __init__(self, root_fd: int, mounts: Sequence[MountedDir] = (),
                 root_ids: IdRange | None = None, root_readonly: bool = False) -> None:
        self.root_fd = root_fd
        self.mounts = tuple(mounts)
        self.root_ids = root_ids  # the range the rootfs's ids are stored with
        self.root_readonly = root_readonly  # --read-only

    def ids_at(self, parts: tuple[str, ...]) -> IdRange | None:
        """The id range of the files at `parts` (the rootfs's or its mount's)."""
        index, _ = mount_at([m.target for m in self.mounts], parts)
        return self.root_ids if index is None else self.mounts[index].ids

    def locate(self, parts: tuple[str, ...]) -> tuple[int, tuple[str, ...], bool]:
        """The fd to walk from, the components below it and whether that is read-only."""
        index, rest = mount_at([m.target for m in self.mounts], parts)
        if index is None:
            return self.root_fd, rest, self.root_readonly
        mount = self.mounts[index]
        return mount.fd, rest, mount.readonly

    def lstat(self, parts: tuple[str, ...]) -> os.stat_result | None:
        fd, rest, _ = self.locate(parts)
        return lstat_at(fd, rest)

    def open_dir(self, parts: tuple[str, ...]) -> int:
        fd, rest, _ = self.locate(parts)
        return open_dir(fd, rest)


@contextlib.asynccontextmanager
async def mounted_tree(runtime: Runtime, ref: str) -> AsyncIterator[ContainerTree]:
    """`mounted_root` with the container's volumes (mounted for the duration, as for a run)
    and binds over their targets: what `docker cp` reads and writes."""
    async with mounted_root(runtime, ref) as root_fd, contextlib.AsyncExitStack() as stack:
        config = runtime.record(ref).config
        plans = [MountPlan.from_json(p) for p in config.mount_plans]
        volumes = runtime.resources.volumes
        holder = f"cp-{uuid.uuid4().hex}"  # its own hold: the run's release is not ours
        mounts: list[MountedDir] = []
        if volumes is not None:
            stack.push_async_callback(asyncio.to_thread, volumes.release, holder)
        for plan in plans:
            ids: IdRange | None = None  # a bind: the host's own files
            if plan.kind is MountKind.BIND:
                host = Path(plan.source)
            elif plan.kind is MountKind.VOLUME and volumes is not None:
                key = volume_key(config.tenant, plan.source)  # its tenant's volume
                host = await asyncio.to_thread(volumes.hold, holder, key)
                ids = volumes.ids_of(key)
            else:
                continue  # tmpfs lives in the guest only
            try:
                fd = os.open(host, DIR_FLAGS)
            except OSError as exc:
                raise InvalidArgument(f"cannot open the mount source of {plan.target}: "
                                      f"{exc.strerror}") from exc
            stack.callback(os.close, fd)
            mounts.append(MountedDir(tuple(split_path(plan.target)), fd, plan.readonly, ids))
        record = runtime.record(ref)
        yield ContainerTree(root_fd, mounts, stored_ids(runtime, record.id),
                            root_readonly=record.config.read_only)


def stored_ids(runtime: Runtime, container_id: str) -> IdRange | None:
    """The id range the container's writable layer is stored with."""
    return rootfs_module.ids_of(runtime.container_dir(container_id))


@contextlib.asynccontextmanager
async def writable_layer(runtime: Runtime, ref: str, op: Op = Op.FILES) -> AsyncIterator[Path]:
    """The container's upper dir (what diff, commit and sizes read), its filesystem mounted for
    the duration if the container is stopped. Holds the container, like `mounted_root`. The
    dir does not exist for a container that never ran."""
    async with runtime.holding_files(ref, op) as record:
        yield await asyncio.to_thread(rootfs_module.mount_layer,
                                      runtime.container_dir(record.id))


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


def resolve(
    root: int | ContainerTree, path: str, *, follow_last: bool
) -> tuple[str, ...]:
    """Resolve `path` in the container: symlinks are followed relative to the container root
    (an absolute target restarts at the root, `..` stops at the root). The last component is
    followed only if `follow_last`. The result may not exist. With a tree, components under a
    mount are looked up in its host directory (a symlink there is still the container's)."""
    tree = root if isinstance(root, ContainerTree) else ContainerTree(root)
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
            st = tree.lstat((*done, comp))
            if st is not None and stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise InvalidArgument(f"too many levels of symbolic links: {path}")
                parent = tree.open_dir(tuple(done))
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
