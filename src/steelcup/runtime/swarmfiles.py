"""The swarm secrets and configs a service's replica gets, placed for each run of its VM.

Secrets are files in a directory of their own on the host (made for the run, removed after
it), shared with the VM read-only and mounted on /run/secrets: they never enter the
container's root filesystem (so `docker commit` or `diff` never see them). Configs go to any
path the service names: the guest has no single-file bind mount, so each is written into the
container's root filesystem at its target for every run (the container's own copy). Owner and
mode are the service's (`File.UID/GID/Mode`), in the VM's id range. No path is followed
through a symlink: a target is walked by directory fds with `O_NOFOLLOW`.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steelcup.errors import InvalidArgument
from steelcup.idmap import IdRange

SECRETS_DIR = "/run/secrets"
SECRETS_TAG = "swarmsecrets"  # the 9p share's tag
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Where a config may not go: the guest kernel's filesystems and the secrets' mount.
_RESERVED = ("/proc", "/sys", "/dev", SECRETS_DIR)

# (kind, object id) -> the object's content; NotFound if it is gone.
DataOf = Callable[[str, str], bytes]


@dataclass(frozen=True)
class SwarmFile:
    """One secret or config as a replica sees it."""

    kind: str  # "secret" or "config"
    object_id: str
    object_name: str
    target: str  # absolute path in the container
    uid: int = 0
    gid: int = 0
    mode: int = 0o444

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> SwarmFile:
        return SwarmFile(str(data["kind"]), str(data["object_id"]), str(data["object_name"]),
                         str(data["target"]), int(data["uid"]), int(data["gid"]),
                         int(data["mode"]))


def secret_target(name: str) -> str:
    """A secret's `File.Name` as its path: a plain file name, or that name under
    /run/secrets given in full. Anything else (a directory, `..`) is refused."""
    base = name.removeprefix(SECRETS_DIR + "/") if name.startswith("/") else name
    if not base or "/" in base or base in (".", "..") or "\0" in base:
        raise InvalidArgument(f"secret target {name!r}: steelcup mounts secrets as files "
                              f"directly in {SECRETS_DIR}: give a file name")
    return f"{SECRETS_DIR}/{base}"


def config_target(name: str) -> str:
    """A config's `File.Name`: an absolute path (a relative one is below /, as dockerd);
    `..` and the guest kernel's filesystems are refused."""
    if not name or "\0" in name:
        raise InvalidArgument("config target: a path is needed")
    path = name if name.startswith("/") else "/" + name
    if ".." in path.split("/"):
        raise InvalidArgument(f"config target {name!r}: '..' is not allowed in a target")
    norm = posixpath.normpath(path)
    if norm == "/" or path.endswith("/"):
        raise InvalidArgument(f"config target {name!r}: the target is a file's path")
    if any(norm == r or norm.startswith(r + "/") for r in _RESERVED):
        raise InvalidArgument(f"config target {name!r}: {norm} is the guest's own "
                              "(proc, sys, dev, or the secrets' mount)")
    return norm


def check_unique(files: Sequence[SwarmFile]) -> None:
    seen: set[str] = set()
    for f in files:
        if f.target in seen:
            raise InvalidArgument(f"{f.target} is the target of two secrets or configs")
        seen.add(f.target)


def _host_id(ids: IdRange | None, guest_id: int) -> int:
    return ids.to_host(guest_id) if ids is not None else guest_id


def write_secrets(dir: Path, files: Iterable[SwarmFile], data_of: DataOf,
                  ids: IdRange | None) -> None:
    """A fresh `dir` (mode 0755, the guest root's) holding each secret as its file name,
    with its owner and mode."""
    shutil.rmtree(dir, ignore_errors=True)
    dir.mkdir(mode=0o700, parents=True)
    root = _host_id(ids, 0)
    for f in files:
        name = posixpath.basename(f.target)
        fd = os.open(dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data_of(f.kind, f.object_id))
            os.fchown(out.fileno(), _host_id(ids, f.uid), _host_id(ids, f.gid))
            os.fchmod(out.fileno(), f.mode & 0o7777)
    os.chown(dir, root, root)
    os.chmod(dir, 0o755)


def write_configs(rootfs: Path, files: Iterable[SwarmFile], data_of: DataOf,
                  ids: IdRange | None) -> None:
    """Each config at its target below `rootfs`, replacing what is there (a symlink
    included); missing directories are made (0755, the guest root's)."""
    root = _host_id(ids, 0)
    root_fd = os.open(rootfs, DIR_FLAGS)
    try:
        for f in files:
            parts = [p for p in f.target.split("/") if p]
            dir_fd = _walk(root_fd, parts[:-1], root, f.target)
            try:
                name = parts[-1]
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=dir_fd)
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
                with os.fdopen(fd, "wb") as out:
                    out.write(data_of(f.kind, f.object_id))
                    os.fchown(out.fileno(), _host_id(ids, f.uid), _host_id(ids, f.gid))
                    os.fchmod(out.fileno(), f.mode & 0o7777)
            except IsADirectoryError:
                raise InvalidArgument(f"config {f.object_name}: its target {f.target} is a "
                                      "directory in the image") from None
            finally:
                os.close(dir_fd)
    finally:
        os.close(root_fd)


def _walk(root_fd: int, parts: list[str], owner: int, target: str) -> int:
    fd = os.dup(root_fd)
    try:
        for comp in parts:
            try:
                os.mkdir(comp, 0o755, dir_fd=fd)
                os.chown(comp, owner, owner, dir_fd=fd, follow_symlinks=False)
            except FileExistsError:
                pass
            try:
                nfd = os.open(comp, DIR_FLAGS, dir_fd=fd)
            except OSError:  # a symlink or a file: never followed out of the root
                raise InvalidArgument(f"config target {target}: {comp} is not a directory "
                                      "in the container (symlinks are not followed)") from None
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise
