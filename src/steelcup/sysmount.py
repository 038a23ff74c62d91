"""mount(2) and umount2(2) through libc: mounts and unmounts without spawning `mount`."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import os
from pathlib import Path

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MNT_DETACH = 0x2


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(rc: int, path: Path) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))


def bind(source: Path, target: Path) -> None:
    """Bind-mount the directory `source` on `target` (non-recursive), nosuid and nodev (a bind
    takes its flags from a second, remounting call); OSError on failure."""
    libc = _libc()
    _check(libc.mount(os.fsencode(source), os.fsencode(target), None, MS_BIND, None), target)
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV
    if libc.mount(None, os.fsencode(target), None, flags, None) != 0:
        err = ctypes.get_errno()
        libc.umount2(os.fsencode(target), MNT_DETACH)
        raise OSError(err, os.strerror(err), str(target))


def mount(source: str, target: Path, fstype: str, flags: int, data: str) -> None:
    """mount(2) of a filesystem `fstype` from `source` on `target`; OSError on failure."""
    _check(_libc().mount(os.fsencode(source), os.fsencode(target), fstype.encode(), flags,
                         data.encode() if data else None), target)


def mount_kernel_fs(fstype: str, target: Path, options: str = "",
                    flags: int = MS_NOSUID | MS_NODEV | MS_NOEXEC) -> None:
    """Mount a kernel filesystem (`fstype`, no device: cgroup, cgroup2) on `target`."""
    mount(fstype, target, fstype, flags, options)


def umount(path: Path, flags: int = 0) -> None:
    """umount2(path, flags); OSError on failure (EINVAL: not a mount point)."""
    _check(_libc().umount2(os.fsencode(path), flags), path)


def unmount_all(path: Path) -> None:
    """Unmount every mount stacked on `path`, each lazily if busy (EBUSY); OSError otherwise.
    Idempotent."""
    while is_mountpoint(path):
        try:
            umount(path, 0)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            umount(path, MNT_DETACH)


def mounts_under(path: Path) -> list[Path]:
    """Mount points strictly below `path` (symlinks resolved), deepest first."""
    prefix = os.fsencode(os.path.realpath(path)).rstrip(b"/") + b"/"
    found = {Path(os.fsdecode(point)) for point in _mount_points() if point.startswith(prefix)}
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def is_mountpoint(path: Path) -> bool:
    """Whether `path` (symlinks resolved) is a mount point, from /proc/self/mountinfo."""
    if not path.exists():
        return False
    return os.fsencode(os.path.realpath(path)) in _mount_points()


def _mount_points() -> list[bytes]:
    """Every mount point of this mount namespace (mountinfo's 5th field, unescaped)."""
    points = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split(b" ")
            if len(fields) > 4:
                points.append(_unescape(fields[4]))
    return points


def filesystem_at(path: Path) -> tuple[str, str] | None:
    """(filesystem type, its super options) of the topmost mount whose mount point is `path`
    (symlinks resolved); None if `path` is not a mount point."""
    target = os.fsencode(os.path.realpath(path))
    found = None
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.rstrip(b"\n").split(b" ")
            if len(fields) > 4 and _unescape(fields[4]) == target and b"-" in fields[6:]:
                tail = fields[fields.index(b"-", 6) + 1:]
                if len(tail) >= 3:
                    found = (os.fsdecode(tail[0]), os.fsdecode(_unescape(tail[2])))
    return found


def _unescape(field: bytes) -> bytes:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i : i + 1] == b"\\" and field[i + 1 : i + 4].isdigit():
            out.append(int(field[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)
