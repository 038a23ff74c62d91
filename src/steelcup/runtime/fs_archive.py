"""`docker cp`: stat a path in a container (docker's path-stat header), stream it out as a
tar, and extract a tar into a container directory with docker cp's rules.
"""

from __future__ import annotations

import datetime
import os
import stat
import tarfile
from dataclasses import dataclass
from typing import IO, Any

from steelcup.errors import ImageError, InvalidArgument, NotFound, SteelcupError
from steelcup.idmap import IdRange
from steelcup.image.layers import LayerLimits, _Extractor, decompressed, open_stream
from steelcup.runtime.fs_paths import ContainerTree, lstat_at, open_dir, resolve, split_path
from steelcup.runtime.fs_tar import TreeWriter, open_tar
from steelcup.runtime.stand_ins import may_stand_in, stand_in_kind_at, stood_in_mode

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
class Source:
    """A resolved archive source: where it is, what it is, and its name in the tar."""

    parts: tuple[str, ...]
    st: os.stat_result
    arcname: str
    stat: PathStat


def locate(tree: ContainerTree, path: str, container: str) -> Source:
    """Resolve and stat an archive source (in a volume or bind mount if it is under one);
    NotFound with docker's message if it is missing."""
    if not path:
        raise InvalidArgument("path must not be empty")
    follow = path.endswith("/") or _wants_contents(path)
    parts, st = _existing(tree, path, container, follow_last=follow)
    link = ""
    if stat.S_ISLNK(st.st_mode):
        link = "/" + "/".join(_existing(tree, path, container, follow_last=True)[0])
    if _wants_contents(path):
        if not stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(f"{path}: not a directory")
        arcname = "."
    else:
        asked = split_path(path)
        arcname = asked[-1] if asked and asked[-1] != ".." else (parts[-1] if parts else ".")
    name = split_path(path)[-1] if split_path(path) else "/"
    info = PathStat(name=name if not _wants_contents(path) else ".", size=st.st_size,
                    mode=_go_mode(_shown_mode(tree, parts, st)), mtime=_rfc3339(st.st_mtime_ns),
                    link_target=link)
    return Source(parts, st, arcname, info)


def _existing(tree: ContainerTree, path: str, container: str, *,
              follow_last: bool) -> tuple[tuple[str, ...], os.stat_result]:
    """`path` resolved in the container, and its lstat. NotFound with docker's message if it
    is missing; a clear error if the host may not look at it (an overlay refusing a mark its
    guest wrote, EPERM), not the daemon's 500."""
    try:
        parts = resolve(tree, path, follow_last=follow_last)
        st = tree.lstat(parts)
    except OSError as exc:
        raise SteelcupError(f"cannot read {path} in container {container}: "
                            f"{exc.strerror or exc}") from exc
    if st is None:
        raise NotFound(f"Could not find the file {path} in container {container}")
    return parts, st


def _wants_contents(path: str) -> bool:
    """docker: `dir/.` means the directory's contents; a trailing `/` follows a last symlink."""
    return path == "." or path.endswith("/.")


def _shown_mode(tree: ContainerTree, parts: tuple[str, ...], st: os.stat_result) -> int:
    """The mode of what is at `parts`: a stand-in's is the FIFO's or socket's it stands for."""
    if not parts or not may_stand_in(st):
        return st.st_mode
    fd, rest, _ = tree.locate(parts)
    if not rest:
        return st.st_mode
    try:
        parent = open_dir(fd, rest[:-1])
    except OSError:
        return st.st_mode  # gone meanwhile: the archive will say so
    try:
        kind = stand_in_kind_at(parent, rest[-1])
    finally:
        os.close(parent)
    return st.st_mode if kind is None else stood_in_mode(st, kind)


def _go_mode(st_mode: int) -> int:
    mode = stat.S_IMODE(st_mode) & 0o777
    kind = stat.S_IFMT(st_mode)
    mode |= {
        stat.S_IFDIR: _GO_DIR,
        stat.S_IFLNK: _GO_SYMLINK,
        stat.S_IFIFO: _GO_PIPE,
        stat.S_IFSOCK: _GO_SOCKET,
        stat.S_IFBLK: _GO_DEVICE,
        stat.S_IFCHR: _GO_DEVICE | _GO_CHARDEV,
    }.get(kind, 0)
    if st_mode & stat.S_ISUID:
        mode |= _GO_SETUID
    if st_mode & stat.S_ISGID:
        mode |= _GO_SETGID
    if st_mode & stat.S_ISVTX:
        mode |= _GO_STICKY
    return mode


def _rfc3339(ns: int) -> str:
    dt = datetime.datetime.fromtimestamp(ns // 1_000_000_000, datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 1_000_000_000:09d}Z"


def write_archive(tree: ContainerTree, source: Source, out: IO[bytes]) -> None:
    """The tar stream of `docker cp CONTAINER:PATH -`: entries below `source.arcname`."""
    fd, rest, _ = tree.locate(source.parts)
    with open_tar(out) as tar:
        writer = TreeWriter(tar, ids=tree.ids_at(source.parts))
        if not rest:  # the root or a mount's root
            writer.add_dir_fd(fd, source.arcname)
            return
        parent = open_dir(fd, rest[:-1])
        try:
            writer.add(parent, rest[-1], source.arcname)
        finally:
            os.close(parent)


class _CopyExtractor(_Extractor):
    """The layer extractor with docker cp's rules: no whiteouts, optional ownership.

    Set-id bits and capabilities are recorded inert like a layer's (the upper dir is a host
    directory too); the container sees them only in what `cp`, export and commit write out.
    """

    def __init__(self, dest_fd: int, *, copy_uid_gid: bool, no_overwrite_dir_non_dir: bool,
                 ids: IdRange | None = None):
        super().__init__(dest_fd, LayerLimits(max_entries=10_000_000, max_bytes=1 << 50))
        self.copy_uid_gid = copy_uid_gid
        self.no_overwrite = no_overwrite_dir_non_dir
        self.ids = ids  # the destination stores ids shifted to this range

    def _apply(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        if not self.copy_uid_gid:
            m.uid = m.gid = 0
        if self.ids is not None:
            m.uid, m.gid = self.ids.to_host(m.uid), self.ids.to_host(m.gid)
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
    tree: ContainerTree,
    path: str,
    stream: IO[bytes],
    container: str,
    *,
    no_overwrite_dir_non_dir: bool = False,
    copy_uid_gid: bool = False,
) -> None:
    """Extract a tar (plain or compressed) into directory `path` of the container (into the
    volume or bind mount it is under, if any)."""
    parts, st = _existing(tree, path, container, follow_last=True)
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidArgument("extraction point is not a directory")
    fd, rest, readonly = tree.locate(parts)
    if readonly:  # dockerd's texts
        raise InvalidArgument("container rootfs is marked read-only" if fd == tree.root_fd
                              else f"mounted volume is marked read-only: {path}")
    try:
        dest_fd = open_dir(fd, rest)
    except OSError as exc:  # swapped for a symlink after resolve: refuse
        raise InvalidArgument(f"cannot open {path} in the container: {exc.strerror}") from exc
    try:
        extractor = _CopyExtractor(dest_fd, copy_uid_gid=copy_uid_gid,
                                   no_overwrite_dir_non_dir=no_overwrite_dir_non_dir,
                                   ids=tree.ids_at(parts))
        with decompressed(stream) as raw:
            try:
                extractor.run(open_stream(raw))
            except (tarfile.TarError, EOFError) as exc:
                raise InvalidArgument(f"invalid tar archive: {exc}") from exc
            except ImageError as exc:
                raise InvalidArgument(str(exc)) from exc
        extractor.finish()
    finally:
        os.close(dest_fd)
