"""Container filesystem operations done on the host, without the guest: changes (diff),
archive get/put (cp), export, commit, rename and prune.

The writable layer is the upper dir of the container's host overlay, so all of this reads the
overlay (or its upper dir) directly. Paths inside the container are resolved like docker does
(symlinks followed relative to the container root), and every file is then opened through
directory fds with `O_NOFOLLOW`, so a guest that swaps a directory for a symlink meanwhile
cannot make the daemon read or write outside the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import errno
import json
import os
import re
import shlex
import stat
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from steelcup.errors import Conflict, ImageError, InvalidArgument, NotFound, SteelcupError
from steelcup.image import rootfs as rootfs_module
from steelcup.image.config import ImageConfig
from steelcup.image.layers import (
    OPAQUE_MARKER,
    OPAQUE_XATTR,
    WHITEOUT_PREFIX,
    LayerLimits,
    _Extractor,
    decompressed,
)
from steelcup.image.store import Image
from steelcup.runtime.containers import Live, Runtime
from steelcup.runtime.logs import parse_time_ns
from steelcup.runtime.model import ContainerRecord, Status
from steelcup.runtime.names import validate_name

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_MAX_LINKS = 40  # symlinks followed while resolving one path (Linux's limit)
_MAX_DEPTH = 1024
_CHUNK = 1 << 20
_XATTRS_KEPT = ("user.", "security.capability")
# the contents of these are the guest kernel's, never the container's
EXPORT_SKIP_CONTENTS = frozenset({("proc",), ("sys",), ("dev",)})

# Go's os.FileMode bits: docker's path-stat header carries a Go FileMode, not a unix mode.
_GO_DIR = 1 << 31
_GO_SYMLINK = 1 << 27
_GO_DEVICE = 1 << 26
_GO_PIPE = 1 << 25
_GO_SOCKET = 1 << 24
_GO_SETUID = 1 << 23
_GO_SETGID = 1 << 22
_GO_CHARDEV = 1 << 21
_GO_STICKY = 1 << 20


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


@dataclass(frozen=True)
class PathStat:
    """docker's `X-Docker-Container-Path-Stat`: what a path in the container is."""

    name: str
    size: int
    mode: int  # a Go os.FileMode
    mtime: str  # RFC 3339 with nanoseconds
    link_target: str

    @property
    def is_dir(self) -> bool:
        return bool(self.mode & _GO_DIR)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "mode": self.mode, "mtime": self.mtime,
                "linkTarget": self.link_target}


@dataclass(frozen=True)
class PruneReport:
    deleted: list[str]
    reclaimed_bytes: int


# ============================================================================ changes (diff)


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str | int) -> bool:
    try:
        if isinstance(path, int):
            return os.getxattr(path, OPAQUE_XATTR) == b"y"
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


class LowerView:
    """Lookups in the merged view of read-only layers (stored in overlay form), no mount."""

    def __init__(self, layers: list[Path]) -> None:
        self._top_first = [str(d) for d in reversed(layers)]

    def lstat(self, parts: tuple[str, ...]) -> os.stat_result | None:
        for layer in self._top_first:
            found, stop = self._in_layer(layer, parts)
            if found is not None:
                return None if _is_whiteout(found) else found
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
            if _is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                return None, True  # a file or whiteout here hides everything below
            if _is_opaque(path):
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
                        if not _is_whiteout(entry.stat(follow_symlinks=False)):
                            names.add(entry.name)
                if _is_opaque(path):
                    break
            elif st is not None or stop:
                break
        return names


def compute_changes(upper: Path, layers: list[Path]) -> list[Change]:
    """What the upper dir changes relative to `layers` (lowest first), sorted by path.

    Like docker: a whiteout is a deletion; an entry also present below is a modification
    (directories only when their mode, owner or mtime differ, or when something below them
    changed); anything else is an addition. An opaque directory that hides a lower
    one also reports the lower entries it hides as deleted.
    """
    lower = LowerView(layers)
    changes: dict[str, ChangeKind] = {}

    def record(parts: tuple[str, ...], kind: ChangeKind) -> None:
        changes["/" + "/".join(parts)] = kind
        for i in range(1, len(parts)):  # the directories holding a change changed too
            changes.setdefault("/" + "/".join(parts[:i]), ChangeKind.MODIFIED)

    def walk(path: str, parts: tuple[str, ...], depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise SteelcupError(f"directory tree too deep at /{'/'.join(parts)}")
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            child = (*parts, entry.name)
            st = entry.stat(follow_symlinks=False)
            if _is_whiteout(st):
                if lower.lstat(child) is not None:
                    record(child, ChangeKind.DELETED)
                continue
            below = lower.lstat(child)
            is_dir = stat.S_ISDIR(st.st_mode)
            if below is None:
                record(child, ChangeKind.ADDED)
            elif is_dir and stat.S_ISDIR(below.st_mode):
                opaque = _is_opaque(entry.path)
                if opaque:
                    present = {e.name for e in os.scandir(entry.path)}
                    for name in sorted(lower.children(child) - present):
                        record((*child, name), ChangeKind.DELETED)
                if opaque or _meta_differs(st, below):
                    record(child, ChangeKind.MODIFIED)
            else:
                record(child, ChangeKind.MODIFIED)
            if is_dir:
                walk(entry.path, child, depth + 1)

    if upper.is_dir():
        walk(str(upper), (), 0)
    return [Change(path, kind) for path, kind in sorted(changes.items())]


def _meta_differs(a: os.stat_result, b: os.stat_result) -> bool:
    return (
        stat.S_IMODE(a.st_mode) != stat.S_IMODE(b.st_mode)
        or a.st_uid != b.st_uid
        or a.st_gid != b.st_gid
        or a.st_mtime_ns != b.st_mtime_ns
    )


# ============================================================================ confined paths


def split_path(path: str) -> list[str]:
    return [c for c in path.split("/") if c not in ("", ".")]


def open_dir(root_fd: int, parts: Iterable[str]) -> int:
    """Open directory `parts` below `root_fd` without following any symlink."""
    fd = os.dup(root_fd)
    try:
        for comp in parts:
            nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
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


def _wants_contents(path: str) -> bool:
    """docker: `dir/.` means the directory's contents; a trailing `/` follows a last symlink."""
    return path == "." or path.endswith("/.")


def _go_mode(st: os.stat_result) -> int:
    mode = stat.S_IMODE(st.st_mode) & 0o777
    kind = stat.S_IFMT(st.st_mode)
    mode |= {
        stat.S_IFDIR: _GO_DIR,
        stat.S_IFLNK: _GO_SYMLINK,
        stat.S_IFIFO: _GO_PIPE,
        stat.S_IFSOCK: _GO_SOCKET,
        stat.S_IFBLK: _GO_DEVICE,
        stat.S_IFCHR: _GO_DEVICE | _GO_CHARDEV,
    }.get(kind, 0)
    if st.st_mode & stat.S_ISUID:
        mode |= _GO_SETUID
    if st.st_mode & stat.S_ISGID:
        mode |= _GO_SETGID
    if st.st_mode & stat.S_ISVTX:
        mode |= _GO_STICKY
    return mode


def _rfc3339(ns: int) -> str:
    dt = datetime.datetime.fromtimestamp(ns // 1_000_000_000, datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 1_000_000_000:09d}Z"


@dataclass(frozen=True)
class Source:
    """A resolved archive source: where it is, what it is, and its name in the tar."""

    parts: tuple[str, ...]
    st: os.stat_result
    arcname: str
    stat: PathStat


def locate(root_fd: int, path: str, container: str) -> Source:
    """Resolve and stat an archive source; NotFound with docker's message if it is missing."""
    if not path:
        raise InvalidArgument("path must not be empty")
    follow = path.endswith("/") or _wants_contents(path)
    parts = resolve(root_fd, path, follow_last=follow)
    st = lstat_at(root_fd, parts)
    if st is None:
        raise NotFound(f"Could not find the file {path} in container {container}")
    link = ""
    if stat.S_ISLNK(st.st_mode):
        link = "/" + "/".join(resolve(root_fd, path, follow_last=True))
    if _wants_contents(path):
        if not stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(f"{path}: not a directory")
        arcname = "."
    else:
        asked = split_path(path)
        arcname = asked[-1] if asked and asked[-1] != ".." else (parts[-1] if parts else ".")
    name = split_path(path)[-1] if split_path(path) else "/"
    info = PathStat(name=name if not _wants_contents(path) else ".", size=st.st_size,
                    mode=_go_mode(st), mtime=_rfc3339(st.st_mtime_ns), link_target=link)
    return Source(parts, st, arcname, info)


# ============================================================================ tar writing


class _SizedReader:
    """Exactly `size` bytes from `fd`: zero-padded if the file shrank, cut if it grew."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._left = size

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if n < 0 else min(n, self._left)
        data = os.read(self._fd, min(want, _CHUNK))
        if not data:
            data = b"\0" * min(want, _CHUNK)
        self._left -= len(data)
        return data


class TreeWriter:
    """Writes directory trees into a tar stream through fds, never following symlinks.

    With `overlay_whiteouts`, overlay whiteouts (0/0 char devices) become OCI `.wh.<name>`
    entries and opaque directories get a `.wh..wh..opq` entry (a layer from an upper dir).
    """

    def __init__(self, tar: tarfile.TarFile, *, overlay_whiteouts: bool = False) -> None:
        self.tar = tar
        self.overlay_whiteouts = overlay_whiteouts
        self._links: dict[tuple[int, int], str] = {}

    def add(
        self,
        parent_fd: int,
        name: str,
        arcname: str,
        *,
        skip_contents: Callable[[tuple[str, ...]], bool] = lambda _p: False,
    ) -> None:
        """Add entry `name` of directory `parent_fd` (recursively) as `arcname`."""
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        self._entry(parent_fd, name, st, arcname, (), skip_contents, 0)

    def add_dir_fd(
        self,
        fd: int,
        arcname: str,
        *,
        skip_contents: Callable[[tuple[str, ...]], bool] = lambda _p: False,
        include_self: bool = True,
    ) -> None:
        """Add the open directory `fd` and its contents (names below `arcname`)."""
        st = os.fstat(fd)
        if include_self:
            self.tar.addfile(self._info(arcname, st, fd=fd))
        self._children(fd, arcname, (), skip_contents, 0)

    def _entry(
        self,
        parent_fd: int,
        name: str,
        st: os.stat_result,
        arcname: str,
        rel: tuple[str, ...],
        skip: Callable[[tuple[str, ...]], bool],
        depth: int,
    ) -> None:
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
            try:
                now = os.fstat(fd)
                if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                    raise SteelcupError(f"{arcname} changed while it was archived")
                self.tar.addfile(self._info(arcname, st, fd=fd))
                if self.overlay_whiteouts and _is_opaque(fd):
                    marker = tarfile.TarInfo(_join(arcname, OPAQUE_MARKER))
                    marker.mtime = int(st.st_mtime)
                    self.tar.addfile(marker)
                if not skip(rel):
                    self._children(fd, arcname, rel, skip, depth + 1)
            finally:
                os.close(fd)
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self._links:
                info = self._info(arcname, st)
                info.type, info.linkname, info.size = tarfile.LNKTYPE, self._links[key], 0
                self.tar.addfile(info)
                return
            fd = os.open(name, _FILE_FLAGS, dir_fd=parent_fd)
            try:
                now = os.fstat(fd)
                if not stat.S_ISREG(now.st_mode) or now.st_ino != st.st_ino:
                    raise SteelcupError(f"{arcname} changed while it was archived")
                info = self._info(arcname, st, fd=fd)
                info.size = st.st_size
                self.tar.addfile(info, _SizedReader(fd, st.st_size))
            finally:
                os.close(fd)
            if st.st_nlink > 1:
                self._links[key] = arcname
        elif stat.S_ISLNK(mode):
            info = self._info(arcname, st)
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(name, dir_fd=parent_fd)
            self.tar.addfile(info)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            if self.overlay_whiteouts and _is_whiteout(st):
                head, _, base = arcname.rpartition("/")
                info = self._info(_join(head, WHITEOUT_PREFIX + base) if head
                                  else WHITEOUT_PREFIX + base, st)
                info.type, info.mode = tarfile.REGTYPE, 0o644
                self.tar.addfile(info)
                return
            info = self._info(arcname, st)
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self.tar.addfile(info)
        elif stat.S_ISFIFO(mode):
            info = self._info(arcname, st)
            info.type = tarfile.FIFOTYPE
            self.tar.addfile(info)
        # sockets are not archived (docker skips them too)

    def _children(
        self,
        fd: int,
        arcname: str,
        rel: tuple[str, ...],
        skip: Callable[[tuple[str, ...]], bool],
        depth: int,
    ) -> None:
        if depth > _MAX_DEPTH:
            raise SteelcupError(f"directory tree too deep at {arcname}")
        with os.scandir(fd) as it:
            names = sorted(e.name for e in it)
        for name in names:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed meanwhile (a running container)
            self._entry(fd, name, st, _join(arcname, name), (*rel, name), skip, depth)

    def _info(self, arcname: str, st: os.stat_result, *, fd: int | None = None) -> tarfile.TarInfo:
        info = tarfile.TarInfo(arcname)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.mtime = st.st_mtime_ns // 1_000_000_000
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
        if fd is not None:
            headers: dict[str, str] = {}
            for key in _listxattr(fd):
                if key.startswith(_XATTRS_KEPT):
                    with contextlib.suppress(OSError):
                        value = os.getxattr(fd, key)
                        headers["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
            if headers:
                info.pax_headers = headers
        return info


def _listxattr(fd: int) -> list[str]:
    try:
        return os.listxattr(fd)
    except OSError:
        return []


def _join(head: str, name: str) -> str:
    if head in ("", "."):
        return name if head == "" else f"./{name}"
    return f"{head}/{name}"


def _open_tar(out: IO[bytes]) -> tarfile.TarFile:
    return tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)


def write_archive(root_fd: int, source: Source, out: IO[bytes]) -> None:
    """The tar stream of `docker cp CONTAINER:PATH -`: entries below `source.arcname`."""
    with _open_tar(out) as tar:
        writer = TreeWriter(tar)
        if not source.parts:
            writer.add_dir_fd(root_fd, source.arcname)
            return
        parent = open_dir(root_fd, source.parts[:-1])
        try:
            writer.add(parent, source.parts[-1], source.arcname)
        finally:
            os.close(parent)


def write_export(root_fd: int, out: IO[bytes]) -> None:
    """The whole root filesystem, without what is under /proc, /sys and /dev."""
    with _open_tar(out) as tar:
        TreeWriter(tar).add_dir_fd(
            root_fd, "", include_self=False,
            skip_contents=lambda rel: rel in EXPORT_SKIP_CONTENTS,
        )


def write_layer(upper: Path, out: IO[bytes]) -> None:
    """An OCI layer tar from an overlay upper dir (whiteouts converted to `.wh.` entries)."""
    with _open_tar(out) as tar:
        if not upper.is_dir():
            return
        fd = os.open(upper, _DIR_FLAGS)
        try:
            TreeWriter(tar, overlay_whiteouts=True).add_dir_fd(fd, "", include_self=False)
        finally:
            os.close(fd)


# ============================================================================ tar extraction


class _CopyExtractor(_Extractor):
    """The layer extractor with docker cp's rules: no whiteouts, optional ownership."""

    def __init__(self, dest_fd: int, *, copy_uid_gid: bool, no_overwrite_dir_non_dir: bool):
        super().__init__(dest_fd, LayerLimits(allow_setid=True, max_entries=10_000_000,
                                              max_bytes=1 << 50))
        self.copy_uid_gid = copy_uid_gid
        self.no_overwrite = no_overwrite_dir_non_dir

    def _apply(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        if not self.copy_uid_gid:
            m.uid = m.gid = 0
        if self.no_overwrite:
            parts = self._clean(m.name)
            if parts:
                st = self._existing(parts)
                if st is not None and stat.S_ISDIR(st.st_mode) and not m.isdir():
                    raise InvalidArgument(
                        f"cannot overwrite directory {'/'.join(parts)!r} with non-directory")
                if st is not None and not stat.S_ISDIR(st.st_mode) and m.isdir():
                    raise InvalidArgument(
                        f"cannot overwrite non-directory {'/'.join(parts)!r} with directory")
        super()._apply(tar, m)

    def _existing(self, parts: tuple[str, ...]) -> os.stat_result | None:
        return lstat_at(self.root_fd, parts)

    def _whiteout(self, dir_parts: tuple[str, ...], name: str) -> None:
        raise InvalidArgument(f"refusing to copy the whiteout entry {name!r} into a container")


def extract_archive(
    root_fd: int,
    path: str,
    stream: IO[bytes],
    container: str,
    *,
    no_overwrite_dir_non_dir: bool = False,
    copy_uid_gid: bool = False,
) -> None:
    """Extract a tar (plain or compressed) into directory `path` of the container."""
    parts = resolve(root_fd, path, follow_last=True)
    st = lstat_at(root_fd, parts)
    if st is None:
        raise NotFound(f"Could not find the file {path} in container {container}")
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidArgument("extraction point is not a directory")
    try:
        dest_fd = open_dir(root_fd, parts)
    except OSError as exc:  # swapped for a symlink after resolve: refuse
        raise InvalidArgument(f"cannot open {path} in the container: {exc.strerror}") from exc
    try:
        extractor = _CopyExtractor(dest_fd, copy_uid_gid=copy_uid_gid,
                                   no_overwrite_dir_non_dir=no_overwrite_dir_non_dir)
        with decompressed(stream) as raw:
            try:
                extractor.run(tarfile.open(fileobj=raw, mode="r|", errorlevel=2))
            except (tarfile.TarError, EOFError) as exc:
                raise InvalidArgument(f"invalid tar archive: {exc}") from exc
            except ImageError as exc:
                raise InvalidArgument(str(exc)) from exc
        extractor.finish()
    finally:
        os.close(dest_fd)


# ============================================================================ commit config


_CHANGE_WORDS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "USER", "VOLUME",
                 "WORKDIR", "STOPSIGNAL")


def _json_or_shell(text: str) -> tuple[str, ...]:
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
    return ("/bin/sh", "-c", text)


def _pairs(text: str, word: str) -> list[tuple[str, str]]:
    """`K=V K2="v 2"` or the legacy `K V` form of ENV/LABEL."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise InvalidArgument(f"{word}: {exc}") from None
    if not tokens:
        raise InvalidArgument(f"{word} requires at least one argument")
    if "=" not in tokens[0]:
        key, _, value = text.strip().partition(" ")
        return [(key, value.strip())]
    out = []
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"{word} names can not be blank: {token!r}")
        out.append((key, value))
    return out


def apply_changes(config: ImageConfig, changes: Iterable[str]) -> ImageConfig:
    """Apply `docker commit --change` Dockerfile instructions to an image config."""
    cmd_set = False
    for raw_line in changes:
        for line in raw_line.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            word, _, rest = line.partition(" ")
            word, rest = word.upper(), rest.strip()
            if word not in _CHANGE_WORDS:
                raise InvalidArgument(f"{word} is not a valid change command")
            if word == "CMD":
                config = replace(config, cmd=_json_or_shell(rest))
                cmd_set = True
            elif word == "ENTRYPOINT":
                config = replace(config, entrypoint=_json_or_shell(rest) if rest else None,
                                 cmd=config.cmd if cmd_set else None)
            elif word == "ENV":
                env = config.env_dict()
                for key, value in _pairs(rest, word):
                    env[key] = value
                config = replace(config, env=tuple(f"{k}={v}" for k, v in env.items()))
            elif word == "LABEL":
                labels = dict(config.labels)
                labels.update(_pairs(rest, word))
                config = replace(config, labels=labels)
            elif word == "USER":
                config = replace(config, user=rest)
            elif word == "WORKDIR":
                config = replace(config, working_dir=os.path.normpath(
                    os.path.join(config.working_dir or "/", rest)))
            elif word == "STOPSIGNAL":
                config = replace(config, stop_signal=rest)
            elif word == "EXPOSE":
                ports = set(config.exposed_ports)
                for port in rest.split():
                    ports.add(port if "/" in port else f"{port}/tcp")
                config = replace(config, exposed_ports=tuple(sorted(ports)))
            elif word == "VOLUME":
                vols = set(config.volumes) | set(
                    _json_or_shell(rest) if rest.startswith("[") else rest.split())
                config = replace(config, volumes=tuple(sorted(vols)))
            else:  # ONBUILD: steelcup does not build images
                raise InvalidArgument("ONBUILD is not supported by steelcup commit")
    try:
        return ImageConfig.from_dict(config.to_dict())  # validate (ports, env)
    except ImageError as exc:
        raise InvalidArgument(str(exc)) from exc


def commit_config(record: ContainerRecord, image: Image) -> ImageConfig:
    """The run-time config a committed image gets: the container's, over the image's."""
    c = record.config
    labels = {**image.config.labels, **dict(c.labels)}
    return replace(
        image.config,
        entrypoint=c.entrypoint,
        cmd=c.cmd,
        env=c.env,
        working_dir=c.working_dir if c.working_dir != "/" or image.config.working_dir else "",
        user=c.user,
        labels=labels,
        stop_signal=image.config.stop_signal,
    )


# ============================================================================ runtime glue


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
        image = await asyncio.to_thread(runtime.images.get, live.record.config.image_id)
        layer_dirs = runtime.images.layer_dirs(image)
        root = await asyncio.to_thread(rootfs_module.prepare, layer_dirs, cdir)
        try:
            fd = os.open(root, _DIR_FLAGS)
            try:
                yield fd
            finally:
                os.close(fd)
        finally:
            if not live.record.state.running and not live.removed:
                await asyncio.to_thread(rootfs_module.release, cdir)


def container_changes(runtime: Runtime, ref: str) -> list[Change]:
    live = runtime.get(ref)
    image = runtime.images.get(live.record.config.image_id)
    upper = runtime.container_dir(live.record.id) / "upper"
    return compute_changes(upper, runtime.images.layer_dirs(image))


async def commit(
    runtime: Runtime,
    ref: str,
    *,
    repo_tag: str | None,
    comment: str = "",
    author: str = "",
    changes: Iterable[str] = (),
    spool_dir: Path,
) -> Image:
    """`docker commit`: the container's image plus its upper dir as a new layer."""
    live = runtime.get(ref)
    record = live.record
    image = await asyncio.to_thread(runtime.images.get, record.config.image_id)
    config = apply_changes(commit_config(record, image), changes)
    upper = runtime.container_dir(record.id) / "upper"
    spool_dir.mkdir(parents=True, exist_ok=True)

    def run() -> Image:
        with tempfile.TemporaryFile(dir=spool_dir) as spool:
            write_layer(upper, spool)
            spool.seek(0)
            created_by = " ".join(shlex.quote(a) for a in (record.path, *record.args))
            return runtime.images.commit(
                record.config.image_id, spool, config=config, ref=repo_tag, comment=comment,
                author=author, created_by=created_by,
            )

    new = await asyncio.to_thread(run)
    runtime.events.publish("container", "commit", record.id, {
        "name": record.name, "comment": comment, "imageID": new.id,
        "imageRef": repo_tag or "", "author": author,
    })
    return new


def rename(runtime: Runtime, ref: str, new_name: str) -> None:
    """`docker rename`; Conflict if another container has the name."""
    live = runtime.get(ref)
    if not new_name:
        raise InvalidArgument("Neither old nor new names may be empty")
    name = validate_name(new_name)
    old = live.record.name
    if name == old:
        raise InvalidArgument("Renaming a container with the same name as its current name")
    for other in runtime.list():
        if other.name == name and other.id != live.record.id:
            raise Conflict(
                f'Conflict. The container name "/{name}" is already in use by container '
                f'"{other.id}". You have to remove (or rename) that container to be able to '
                "reuse that name."
            )
    record = replace(live.record, name=name)
    runtime.store.save(record)
    live.record = record
    runtime.events.publish("container", "rename", record.id,
                           {"name": name, "oldName": "/" + old})


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_until(text: str, now_s: float) -> float:
    """docker's `until` filter: unix time, RFC 3339, or a Go duration before now."""
    text = text.strip()
    if text and _DURATION.sub("", text) == "":
        return now_s - sum(float(n) * _UNIT_S[u] for n, u in _DURATION.findall(text))
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_time_ns(text.replace("+00:00", "Z")) / 1e9
    except ValueError:
        raise InvalidArgument(f"invalid until filter: {text!r}") from None


def prune_candidates(
    records: Iterable[ContainerRecord], filters: dict[str, list[str]], now_s: float
) -> list[ContainerRecord]:
    """Stopped containers that match docker's prune filters (until, label, label!)."""
    for key in filters:
        if key not in ("until", "label", "label!"):
            raise InvalidArgument(f"invalid filter '{key}'")
    untils = [parse_until(v, now_s) for v in filters.get("until", [])]
    out = []
    for record in records:
        if record.state.status not in (Status.CREATED, Status.EXITED, Status.DEAD):
            continue
        created = parse_time_ns(record.created) / 1e9
        if any(created >= u for u in untils):
            continue
        labels = dict(record.config.labels)
        if not all(_label_ok(labels, v) for v in filters.get("label", [])):
            continue
        if any(_label_ok(labels, v) for v in filters.get("label!", [])):
            continue
        out.append(record)
    return out


def _label_ok(labels: dict[str, str], want: str) -> bool:
    key, sep, value = want.partition("=")
    return key in labels and (not sep or labels[key] == value)


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


async def prune(runtime: Runtime, filters: dict[str, list[str]]) -> PruneReport:
    """Remove stopped containers matching `filters`; the space is their upper dirs."""
    deleted: list[str] = []
    reclaimed = 0
    for record in prune_candidates(runtime.list(), filters, time.time()):
        upper = runtime.container_dir(record.id) / "upper"
        size = await asyncio.to_thread(_tree_bytes, upper)
        try:
            await runtime.remove(record.id)
        except (Conflict, NotFound):
            continue  # started or removed meanwhile
        deleted.append(record.id)
        reclaimed += size
    runtime.events.publish("container", "prune", "", {"reclaimed": str(reclaimed)})
    return PruneReport(deleted, reclaimed)
