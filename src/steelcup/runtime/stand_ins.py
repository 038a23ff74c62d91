"""FIFOs and sockets a container made in its root, as they are kept on the host.

QEMU's 9p server (Debian's 7.2, since its fix for CVE-2023-2861) will not make a FIFO or a
socket in `security_model=passthrough`: it makes the node, fails to open it to set its mode
and removes it again (ENXIO). The guest kernel therefore keeps each as a stand-in
(guest/kernel/patches/05-9p-stand-ins.patch): an empty regular file with the sticky bit
(meaningless on a regular file) and the xattr `user.steelcup.node` naming the kind, "fifo" or
"socket". The guest shows it as what it stands for; whatever reads a container's files on the
host (export, commit, cp) does the same through `stand_in_kind`.

The mark is a container's own doing, so it can only ever turn an empty file into a FIFO or a
socket, never a device.
"""

from __future__ import annotations

import os
import stat

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
    if not may_stand_in(st):
        return None
    try:
        return _KINDS.get(os.getxattr(fd, STAND_IN_XATTR))
    except OSError:
        return None


def stand_in_kind_at(dir_fd: int, name: str) -> int | None:
    """`stand_in_kind` of entry `name` of directory `dir_fd` (None if it cannot be opened)."""
    try:
        fd = os.open(name, _PEEK_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        return stand_in_kind(fd, os.fstat(fd))
    finally:
        os.close(fd)


def stood_in_mode(st: os.stat_result, kind: int) -> int:
    """The mode of the node a stand-in with stat `st` stands for."""
    return kind | (stat.S_IMODE(st.st_mode) & ~stat.S_ISVTX)
