"""FIFOs and sockets a container made in its root, as they are kept on the host.

QEMU's 9p server (Debian's 7.2, since its fix for CVE-2023-2861) will not make a FIFO or a
socket in `security_model=passthrough`: it makes the node, fails to open it to set its mode
and removes it again (ENXIO). The guest kernel therefore keeps each as a stand-in
(guest/kernel/patches/05-9p-stand-ins.patch): an empty regular file with the sticky bit
(meaningless on a regular file) and the xattr `user.steelcup.node` naming the kind, "fifo" or
"socket". The guest shows it as what it stands for; whatever reads a container's files on the
host (export, commit, cp) does the same through `stand_in_kind`.

The mark is a container's own doing, so it can only ever turn an empty file into a FIFO or a
socket, never a device. The one other kind, "whiteout", is an overlay's deleted file in the
writable layer of a container whose guest overlays its root (--rootfs-cache block): the host
turns those into real whiteouts (character devices 0:0, which open nothing) before it mounts
its own view of the layer (`realize_whiteouts`).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

STAND_IN_XATTR = "user.steelcup.node"
_KINDS = {b"fifo": stat.S_IFIFO, b"socket": stat.S_IFSOCK}
_PEEK_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def may_stand_in(st: os.stat_result) -> bool:
    """Whether a file's stat has a stand-in's shape (empty, regular, sticky): only then is its
    xattr worth reading."""
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & stat.S_ISVTX) and st.st_size == 0


def stand_in_kind(fd: int, st: os.stat_result) -> int | None:
    """`stat.S_IFIFO` or `stat.S_IFSOCK` if the regular file open as `fd` (with stat `st`) is
    a stand-in for one, else None."""
    return _KINDS.get(_mark(fd, st) or b"")


def stand_in_kind_at(dir_fd: int, name: str) -> int | None:
    """`stand_in_kind` of entry `name` of directory `dir_fd` (None if it cannot be opened)."""
    return _KINDS.get(_mark_at(dir_fd, name) or b"")


def _mark(fd: int, st: os.stat_result) -> bytes | None:
    """The stand-in mark of the file open as `fd` (with stat `st`) if it has a stand-in's
    shape and a mark, else None."""
    if not may_stand_in(st):
        return None
    try:
        return os.getxattr(fd, STAND_IN_XATTR)
    except OSError:
        return None


def _mark_at(dir_fd: int, name: str) -> bytes | None:
    """`_mark` of entry `name` of directory `dir_fd` (None if it cannot be opened)."""
    try:
        fd = os.open(name, _PEEK_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        return _mark(fd, os.fstat(fd))
    finally:
        os.close(fd)


def stood_in_mode(st: os.stat_result, kind: int) -> int:
    """The mode of the node a stand-in with stat `st` stands for."""
    return kind | (stat.S_IMODE(st.st_mode) & ~stat.S_ISVTX)


# An overlay whiteout's stand-in (the guest's overlay over a 9p upper: --rootfs-cache block).
WHITEOUT = b"whiteout"


def realize_whiteouts(upper: Path) -> int:
    """Replace each whiteout stand-in below `upper` (the writable layer of a container whose
    guest overlays it, --rootfs-cache block) with the whiteout it stands for, a character
    device 0:0 (the host may make one; its mount is nodev), so that the host's own overlay of
    the layer sees the file as deleted. Walks by directory fd, following no symlink: the
    guest may be changing the tree meanwhile, and a stand-in it makes after this pass is
    realized by the next. Returns how many were replaced."""
    done = 0
    for _dir, _dirs, files, dir_fd in os.fwalk(upper, follow_symlinks=False):
        for name in files:
            if _mark_at(dir_fd, name) != WHITEOUT:
                continue
            temp = f".steelcup-whiteout-{os.getpid()}-{done}"
            try:
                os.mknod(temp, stat.S_IFCHR, 0, dir_fd=dir_fd)
                os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=dir_fd)
                continue
            done += 1
    return done

