"""Resolve a docker `--user` spec against the container's /etc/passwd and /etc/group.

The files are opened inside the rootfs with symlinks resolved *within* the rootfs (like a
chroot would), never escaping it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from steelcup.errors import InvalidArgument

MAX_ID = 2**31 - 1
MAX_FILE_BYTES = 16 << 20
_MAX_SYMLINKS = 40
DEFAULT_HOME = "/"  # runc's, for a user the passwd file does not list


@dataclass(frozen=True)
class User:
    """Who a container's process runs as."""

    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary
    home: str  # the passwd entry's home directory: the process's HOME unless its env sets one


def resolve_user(rootfs: Path, user: str, group_add: Sequence[str] = ()) -> User:
    """`user` is "", "name", "uid", "name:group" or "uid:gid". `group_add` (docker's
    --group-add: names of the container's /etc/group or gids) are supplementary groups on
    top."""
    spec_user, has_group, spec_group = user.partition(":")
    if has_group and not spec_group:
        raise InvalidArgument(f"invalid user spec {user!r}: empty group")
    if not spec_user:
        if has_group:
            raise InvalidArgument(f"invalid user spec {user!r}: empty user")
        spec_user = "0"
    passwd = _read_db(rootfs, "etc/passwd", 7)
    uid: int
    gid = 0
    name = ""
    home = DEFAULT_HOME
    matched = None
    if spec_user.isdigit():
        uid = _id(spec_user, user)
        matched = next((e for e in passwd if e[2] == spec_user), None)
    else:
        matched = next((e for e in passwd if e[0] == spec_user), None)
        if matched is None:
            raise InvalidArgument(
                f"unable to find user {spec_user}: no matching entries in passwd file"
            )
        uid = _id(matched[2], user)
    if matched is not None:
        name = matched[0]
        gid = _id(matched[3], user)
        home = matched[5] or DEFAULT_HOME
    groups_db = _read_db(rootfs, "etc/group", 4)
    groups: list[int] = []
    if has_group:
        if spec_group.isdigit():
            gid = _id(spec_group, user)
        else:
            entry = next((g for g in groups_db if g[0] == spec_group), None)
            if entry is None:
                raise InvalidArgument(
                    f"unable to find group {spec_group}: no matching entries in group file"
                )
            gid = _id(entry[2], user)
    elif name:
        for g in groups_db:
            if name in g[3].split(","):
                gid_value = _id(g[2], user)
                if gid_value not in groups:
                    groups.append(gid_value)
    for extra in group_add:
        if extra.isdigit():
            value = _id(extra, extra)
        else:
            entry = next((g for g in groups_db if g[0] == extra), None)
            if entry is None:
                raise InvalidArgument(
                    f"Unable to find group {extra}: no matching entries in group file")
            value = _id(entry[2], extra)
        if value not in groups:
            groups.append(value)
    return User(uid, gid, tuple(groups), home)


def _id(text: str, spec: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidArgument(f"invalid user spec {spec!r}: bad id {text!r}") from None
    if not 0 <= value <= MAX_ID:
        raise InvalidArgument(f"invalid user spec {spec!r}: id {value} out of range")
    return value


def _read_db(rootfs: Path, relpath: str, nfields: int) -> list[list[str]]:
    data = _read_in_root(rootfs, relpath)
    entries = []
    for line in data.decode("utf-8", "replace").splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) < nfields:
            continue
        entries.append(fields[:nfields])
    return entries


def _read_in_root(rootfs: Path, relpath: str) -> bytes:
    """Read a file inside `rootfs`; symlinks are resolved as if rootfs were `/`.

    Missing file -> b"" (docker treats a missing passwd/group file as empty).
    """
    root_fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _open_scoped(root_fd, relpath)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return b""
        raise
    finally:
        os.close(root_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(MAX_FILE_BYTES)
    finally:
        os.close(fd)


def _open_scoped(root_fd: int, relpath: str) -> int:
    pending = [c for c in relpath.split("/") if c not in ("", ".")]
    stack: list[int] = [os.dup(root_fd)]  # fds of the directories walked so far
    links = 0
    try:
        while pending:
            comp = pending.pop(0)
            if comp == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            cur = stack[-1]
            st = os.stat(comp, dir_fd=cur, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, "too many symlinks")
                target = os.readlink(comp, dir_fd=cur)
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                pending = [c for c in target.split("/") if c not in ("", ".")] + pending
                continue
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            if pending:
                flags |= os.O_DIRECTORY
            stack.append(os.open(comp, flags, dir_fd=cur))
        if len(stack) == 1:
            raise OSError(errno.EISDIR, "is the root")
        return stack.pop()
    finally:
        for fd in stack:
            os.close(fd)
