"""`docker diff`: what a container's writable layer (the upper dir of its host overlay)
changed relative to its image's read-only layers, read from disk without an overlay mount.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from steelcup.errors import SteelcupError
from steelcup.idmap import IdRange
from steelcup.image import rootfs as rootfs_module
from steelcup.image.layers import OPAQUE_XATTR
from steelcup.runtime.containers import Runtime
from steelcup.runtime.fs_paths import MAX_DEPTH, RUNTIME_PARENTS, RUNTIME_PATHS, writable_layer


class ChangeKind(enum.IntEnum):
    """Docker's change kinds, as numbered in the API."""

    MODIFIED = 0
    ADDED = 1
    DELETED = 2

    @property
    def letter(self) -> str:
        return "CAD"[self.value]


@dataclass(frozen=True)
class Change:
    path: str  # absolute, inside the container
    kind: ChangeKind


async def container_changes(runtime: Runtime, ref: str) -> list[Change]:
    record = runtime.record(ref)
    image = await asyncio.to_thread(runtime.images.get, record.config.image_id)
    layers = runtime.images.layer_dirs(image)
    async with writable_layer(runtime, record.id) as upper:
        ids = rootfs_module.ids_of(runtime.container_dir(record.id))
        return await asyncio.to_thread(compute_changes, upper, layers, ids)


def compute_changes(upper: Path, layers: list[Path], ids: IdRange | None = None
                    ) -> list[Change]:
    """What the upper dir changes relative to `layers` (lowest first), sorted by path.

    Like docker: a whiteout is a deletion; an entry also present below is a modification
    (directories only when their mode, owner or mtime differ, or when something below them
    changed); anything else is an addition. An opaque directory that hides a lower
    one also reports the lower entries it hides as deleted. `ids`: the range the upper dir's
    ids are stored with (the layers hold guest ids). What steelcup itself made for the run
    (`RUNTIME_PATHS`) is not the container's change, nor the new mtime of /etc it gave.
    """
    lower = LowerView(layers)
    changes: dict[str, ChangeKind] = {}

    def record(parts: tuple[str, ...], kind: ChangeKind) -> None:
        changes["/" + "/".join(parts)] = kind
        for i in range(1, len(parts)):  # the directories holding a change changed too
            changes.setdefault("/" + "/".join(parts[:i]), ChangeKind.MODIFIED)

    def walk(path: str, parts: tuple[str, ...], depth: int) -> None:
        if depth > MAX_DEPTH:
            raise SteelcupError(f"directory tree too deep at /{'/'.join(parts)}")
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            child = (*parts, entry.name)
            if child in RUNTIME_PATHS:
                continue
            st = entry.stat(follow_symlinks=False)
            if is_whiteout(st):
                if lower.lstat(child) is not None:
                    record(child, ChangeKind.DELETED)
                continue
            below = lower.lstat(child)
            is_dir = stat.S_ISDIR(st.st_mode)
            if below is None:
                record(child, ChangeKind.ADDED)
            elif is_dir and stat.S_ISDIR(below.st_mode):
                opaque = is_opaque(entry.path)
                if opaque:
                    present = {e.name for e in os.scandir(entry.path)}
                    for name in sorted(lower.children(child) - present):
                        record((*child, name), ChangeKind.DELETED)
                if opaque or _meta_differs(st, below, ids,
                                           mtime=child not in RUNTIME_PARENTS):
                    record(child, ChangeKind.MODIFIED)
            else:
                record(child, ChangeKind.MODIFIED)
            if is_dir:
                walk(entry.path, child, depth + 1)

    if upper.is_dir():
        walk(str(upper), (), 0)
    return [Change(path, kind) for path, kind in sorted(changes.items())]


def _meta_differs(a: os.stat_result, b: os.stat_result, ids: IdRange | None,
                  *, mtime: bool = True) -> bool:
    """Whether upper entry `a` changed lower entry `b`'s metadata (`mtime`: counting it)."""
    a_uid, a_gid = a.st_uid, a.st_gid
    if ids is not None:
        a_uid, a_gid = ids.to_guest(a_uid), ids.to_guest(a_gid)
    return (
        stat.S_IMODE(a.st_mode) != stat.S_IMODE(b.st_mode)
        or a_uid != b.st_uid
        or a_gid != b.st_gid
        or (mtime and a.st_mtime_ns != b.st_mtime_ns)
    )


class LowerView:
    """Lookups in the merged view of read-only layers (stored in overlay form), no mount."""

    def __init__(self, layers: list[Path]) -> None:
        self._top_first = [str(d) for d in reversed(layers)]

    def lstat(self, parts: tuple[str, ...]) -> os.stat_result | None:
        for layer in self._top_first:
            found, stop = self._in_layer(layer, parts)
            if found is not None:
                return None if is_whiteout(found) else found
            if stop:
                return None
        return None

    def _in_layer(self, layer: str, parts: tuple[str, ...]) -> tuple[os.stat_result | None, bool]:
        """(entry or None, whether lower layers are hidden at this path by this layer)."""
        path = layer
        for i, comp in enumerate(parts):
            path = os.path.join(path, comp)
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                return None, False
            if i == len(parts) - 1:
                return st, False
            if is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                return None, True  # a file or whiteout here hides everything below
            if is_opaque(path):
                # the rest of the path is looked up in this layer only
                rest = os.path.join(path, *parts[i + 1 :])
                try:
                    return os.lstat(rest), True
                except (FileNotFoundError, NotADirectoryError):
                    return None, True
        return None, False

    def children(self, parts: tuple[str, ...]) -> set[str]:
        """Names visible in directory `parts` of the merged lower layers."""
        names: set[str] = set()
        hidden: set[str] = set()
        for layer in self._top_first:
            st, stop = self._in_layer(layer, parts) if parts else (os.lstat(layer), False)
            if st is not None and stat.S_ISDIR(st.st_mode):
                path = os.path.join(layer, *parts)
                with contextlib.suppress(OSError), os.scandir(path) as it:
                    for entry in it:
                        if entry.name in hidden:
                            continue
                        hidden.add(entry.name)  # higher layers win, whiteouts included
                        if not is_whiteout(entry.stat(follow_symlinks=False)):
                            names.add(entry.name)
                if is_opaque(path):
                    break
            elif st is not None or stop:
                break
        return names


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


# An overlay mounted with `userxattr` marks opaque directories so: a block-root container's
# guest overlay (--rootfs-cache block) and the host's view of its layer.
USER_OPAQUE_XATTR = "user.overlay.opaque"


def is_opaque(path: str | int) -> bool:
    """Whether the directory `path` (or open as fd `path`) of a writable layer is opaque, by
    either overlay's mark."""
    for name in (OPAQUE_XATTR, USER_OPAQUE_XATTR):
        try:
            if isinstance(path, int):
                value = os.getxattr(path, name)
            else:
                value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        if value == b"y":
            return True
    return False
