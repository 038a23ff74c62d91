"""User namespaces and idmapped mounts (Linux >= 5.12): the effects behind steelcup.idmap.

- `namespace_fd(ids)`: an fd of a user namespace mapping `ids` (made once per range: a short-
  lived child unshares, the daemon writes its maps, the namespace lives on through the fd).
- `enter(fd)`: between fork and exec, become root of that namespace (host id `ids.base`).
- `idmapped_bind(source, target, fd)`: `source` appears at `target` with its ids mapped through
  the namespace's map (`open_tree` + `mount_setattr(MOUNT_ATTR_IDMAP)` + `move_mount`).
- `shift_tree(path, old, new)`: re-store every id below `path` for another range.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

from steelcup import sysmount
from steelcup.idmap import IdRange, shift
from steelcup.libc import LIBC, PRCTL, SETNS, UNSHARE, last_error

CLONE_NEWUSER = 0x10000000
_PR_SET_PDEATHSIG = 1

_lock = threading.Lock()


def make_namespace(uid_map: str, gid_map: str) -> int:
    """A new user namespace with these maps, as an O_CLOEXEC fd (OSError if the kernel or our
    privileges refuse)."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only unshares and waits
        try:
            os.close(ready_r)
            os.close(done_w)
            ok = UNSHARE(CLONE_NEWUSER) == 0
            PRCTL(_PR_SET_PDEATHSIG, 9, 0, 0, 0)
            os.write(ready_w, b"1" if ok else b"0")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError("cannot create a user namespace (unshare CLONE_NEWUSER refused)")
        Path(f"/proc/{pid}/uid_map").write_text(uid_map)
        Path(f"/proc/{pid}/gid_map").write_text(gid_map)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(pid, 0)


_namespaces: dict[str, int] = {}


def namespace_fd(uid_map: str) -> int:
    """The daemon's one user namespace for this map (uids and gids alike), made on first use."""
    with _lock:
        fd = _namespaces.get(uid_map)
        if fd is None:
            fd = _namespaces[uid_map] = make_namespace(uid_map, uid_map)
        return fd


def qemu_namespace_fd(ids: IdRange) -> int:
    return namespace_fd(ids.ns_map())


def enter(ns_fd: int) -> None:
    """In a forked child before exec: join the namespace and become its root (the host id of
    its guest id 0). OSError if refused. The death signal is reset by the id change: callers
    set it again after."""
    if SETNS(ns_fd, CLONE_NEWUSER) != 0:
        raise last_error("setns user namespace")
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def idmapped_bind(source: Path, target: Path, uid_map: str, *, recursive: bool = False,
                  readonly: bool = False) -> None:
    """Attach a copy of the mount tree at `source` (a directory or a file) on `target`, nosuid
    and nodev (and read-only on request), its ids seen through `uid_map` (file id k shows as the
    map's host id for k). OSError if refused."""
    sysmount.clone_mount(source, sysmount.AT_FDCWD, str(target), readonly=readonly,
                         recursive=recursive, userns_fd=namespace_fd(uid_map))


@functools.cache
def supported() -> bool:
    """Whether this kernel and our privileges allow user namespaces and idmapped mounts."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory(prefix="steelcup-idmap-") as tmp:
            src, dst = Path(tmp, "s"), Path(tmp, "d")
            src.mkdir()
            dst.mkdir()
            idmapped_bind(src, dst, IdRange(1 << 20).ns_map())
            try:
                return dst.stat().st_uid == (1 << 20) + src.stat().st_uid
            finally:
                LIBC.umount2(os.fsencode(dst), 2)
    except OSError:
        return False


def shift_tree(path: Path, old: IdRange | None, new: IdRange | None) -> int:
    """Re-store the owner of `path` and everything below it (symlinks themselves, no
    crossing into other filesystems) from `old` to `new`; the number of entries changed.
    chown drops set-id bits, so each file's mode is put back after."""
    if old == new:
        return 0
    changed = 0
    dev = path.lstat().st_dev

    def fix(p: str) -> None:
        nonlocal changed
        st = os.lstat(p)
        uid, gid = shift(st.st_uid, old, new), shift(st.st_gid, old, new)
        if (uid, gid) != (st.st_uid, st.st_gid):
            os.chown(p, uid, gid, follow_symlinks=False)
            if not os.path.islink(p) and st.st_mode & 0o6000:
                os.chmod(p, st.st_mode & 0o7777)
            changed += 1

    fix(str(path))
    for top, dirs, files in os.walk(path):
        for name in files:
            fix(os.path.join(top, name))
        keep = []
        for name in dirs:
            full = os.path.join(top, name)
            fix(full)
            if os.lstat(full).st_dev == dev and not os.path.islink(full):
                keep.append(name)
        dirs[:] = keep
    return changed
