"""Directory trees into tar streams through fds, never following a symlink (for cp, export
and commit); overlay whiteouts can be written as OCI `.wh.` entries. Set-id bits and file
capabilities an image or a cp declared (kept inert on the host, see `image/privileges.py`) are
written out as declared, and the stand-ins the guest keeps for FIFOs and sockets
(`runtime/stand_ins.py`) as what they stand for.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
from collections.abc import Callable
from typing import IO

from steelcup.errors import SteelcupError
from steelcup.idmap import IdRange
from steelcup.image.layers import OPAQUE_MARKER, PRIVATE_XATTRS, WHITEOUT_PREFIX
from steelcup.image.privileges import CAPABILITY_XATTR, declared_for
from steelcup.runtime.fs_changes import is_opaque, is_whiteout
from steelcup.runtime.fs_paths import DIR_FLAGS, MAX_DEPTH
from steelcup.runtime.stand_ins import stand_in_kind, stood_in_mode

_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20
_XATTRS_KEPT = ("user.", CAPABILITY_XATTR)


def open_tar(out: IO[bytes]) -> tarfile.TarFile:
    return tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)


class TreeWriter:
    """Writes directory trees into a tar stream through fds, never following symlinks.

    With `overlay_whiteouts`, overlay whiteouts (0/0 char devices) become OCI `.wh.<name>`
    entries and opaque directories get a `.wh..wh..opq` entry (a layer from an upper dir).
    """

    def __init__(self, tar: tarfile.TarFile, *, overlay_whiteouts: bool = False,
                 ids: IdRange | None = None) -> None:
        self.tar = tar
        self.overlay_whiteouts = overlay_whiteouts
        self.ids = ids  # the tree holds ids shifted to this range: entries get guest ids
        self._links: dict[tuple[int, int], str] = {}
        self._exclude: Callable[[tuple[str, ...]], bool] = _nothing
        self._blank: Callable[[tuple[str, ...]], bool] = _nothing

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
        exclude: Callable[[tuple[str, ...]], bool] = lambda _p: False,
        blank: Callable[[tuple[str, ...]], bool] = lambda _p: False,
    ) -> None:
        """Add the open directory `fd` and its contents (names below `arcname`); entries
        whose relative path `exclude` names are left out altogether, regular files that
        `blank` names are added empty."""
        st = os.fstat(fd)
        if include_self:
            self.tar.addfile(self._info(arcname, st, fd=fd))
        self._exclude, self._blank = exclude, blank
        try:
            self._children(fd, arcname, (), skip_contents, 0)
        finally:
            self._exclude = self._blank = _nothing

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
            fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
            try:
                now = os.fstat(fd)
                if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                    raise SteelcupError(f"{arcname} changed while it was archived")
                self.tar.addfile(self._info(arcname, st, fd=fd))
                if self.overlay_whiteouts and is_opaque(fd):
                    marker = tarfile.TarInfo(_join(arcname, OPAQUE_MARKER))
                    marker.mtime = int(st.st_mtime)
                    self.tar.addfile(marker)
                if not skip(rel):
                    self._children(fd, arcname, rel, skip, depth + 1)
            finally:
                os.close(fd)
        elif stat.S_ISREG(mode) and self._blank(rel):
            info = self._info(arcname, st)
            info.size = 0
            self.tar.addfile(info)
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
                kind = stand_in_kind(fd, now)
                if kind == stat.S_IFSOCK:
                    return  # as a socket below
                if kind == stat.S_IFIFO:
                    info = self._info(arcname, st)
                    info.type, info.mode = tarfile.FIFOTYPE, stat.S_IMODE(stood_in_mode(st, kind))
                    self.tar.addfile(info)
                else:
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
            if self.overlay_whiteouts and is_whiteout(st):
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
        if depth > MAX_DEPTH:
            raise SteelcupError(f"directory tree too deep at {arcname}")
        with os.scandir(fd) as it:
            names = sorted(e.name for e in it)
        for name in names:
            if self._exclude((*rel, name)):
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed meanwhile (a running container)
            self._entry(fd, name, st, _join(arcname, name), (*rel, name), skip, depth)

    def _info(self, arcname: str, st: os.stat_result, *, fd: int | None = None) -> tarfile.TarInfo:
        info = tarfile.TarInfo(arcname)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        if self.ids is not None:
            info.uid, info.gid = self.ids.to_guest(st.st_uid), self.ids.to_guest(st.st_gid)
        info.mtime = st.st_mtime_ns // 1_000_000_000
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
        if fd is not None:
            headers: dict[str, str] = {}
            for key in _listxattr(fd):
                if key.startswith(_XATTRS_KEPT) and not key.startswith(PRIVATE_XATTRS):
                    with contextlib.suppress(OSError):
                        value = os.getxattr(fd, key)
                        headers["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
            declared = declared_for(fd, st)
            if declared is not None:
                info.mode = declared.mode
                if declared.capability is not None:
                    headers["SCHILY.xattr." + CAPABILITY_XATTR] = declared.capability.decode(
                        "utf-8", "surrogateescape"
                    )
            if headers:
                info.pax_headers = headers
        return info


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


def _nothing(_rel: tuple[str, ...]) -> bool:
    return False


def _listxattr(fd: int) -> list[str]:
    try:
        return os.listxattr(fd)
    except OSError:
        return []


def _join(head: str, name: str) -> str:
    if head in ("", "."):
        return name if head == "" else f"./{name}"
    return f"{head}/{name}"
