"""Mount points made in a container's rootfs on the host, for a root the guest mounts read-only.

The guest creates a missing mount target itself (MOUNT in docs/guest-protocol.md), but it cannot
in a read-only root; dockerd makes mount points in the container's layer for `--read-only` too.
The rootfs comes from an image: no symlink is followed. A component that is a symlink or not a
directory is left alone, and the guest's MOUNT then reports it as it would anyway.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def make_mount_points(rootfs: Path, targets: Iterable[str], owner: int | None = None, *,
                      files: Iterable[str] = ()) -> None:
    """Create each absolute `target` below `rootfs` (mode 0755, owned by `owner`, the guest
    root's host id, when given), and each of `files` as an empty file (0644) in such
    directories (the mount point of a single-file bind), walking by fds without following
    symlinks."""
    root_fd = os.open(rootfs, DIR_FLAGS)
    try:
        for target in targets:
            _make(root_fd, _parts(target), owner)
        for target in files:
            parts = _parts(target)
            if parts and parts[-1] != "..":
                _make(root_fd, parts[:-1], owner, file=parts[-1])
    finally:
        os.close(root_fd)


def _parts(target: str) -> list[str]:
    return [c for c in target.split("/") if c not in ("", ".")]


def _make(root_fd: int, parts: list[str], owner: int | None, file: str = "") -> None:
    fd = os.dup(root_fd)
    try:
        for comp in parts:
            if comp == "..":
                return
            try:
                os.mkdir(comp, 0o755, dir_fd=fd)
                if owner is not None:
                    os.chown(comp, owner, owner, dir_fd=fd, follow_symlinks=False)
            except FileExistsError:
                pass
            try:
                nfd = os.open(comp, DIR_FLAGS, dir_fd=fd)
            except OSError:  # a symlink or a file (ELOOP, ENOTDIR): the guest says so
                return
            os.close(fd)
            fd = nfd
        if file:
            try:
                os.close(os.open(file, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o644, dir_fd=fd))
            except FileExistsError:  # a file already (or a symlink: the guest refuses it)
                return
            if owner is not None:
                os.chown(file, owner, owner, dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)
