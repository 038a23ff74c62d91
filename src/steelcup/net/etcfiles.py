"""Writes /etc/hosts, /etc/resolv.conf and /etc/hostname into a container's rootfs on the host
before the VM starts (docker does the same with bind mounts). An image cannot redirect the
writes: no symlink is followed, neither for /etc nor for the files."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from steelcup.errors import InvalidArgument


def write_etc_files(rootfs: Path, files: Mapping[str, str], owner: int | None = None) -> None:
    """`files` maps names inside /etc (e.g. "hosts") to their content; `owner`: the host uid
    and gid they (and an /etc made for them) get, the guest root's (None: the daemon's)."""
    root_fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            os.mkdir("etc", 0o755, dir_fd=root_fd)
            if owner is not None:
                os.chown("etc", owner, owner, dir_fd=root_fd, follow_symlinks=False)
        except FileExistsError:
            pass
        try:
            etc_fd = os.open("etc", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=root_fd)
        except OSError as exc:
            raise InvalidArgument(f"the image's /etc is not a directory: {exc}") from exc
        try:
            for name, content in files.items():
                if "/" in name or name in ("", ".", ".."):
                    raise InvalidArgument(f"bad /etc file name {name!r}")
                # Replace whatever is there (a symlink included) by a regular file.
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    os.unlink(name, dir_fd=etc_fd)
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644, dir_fd=etc_fd)
                with os.fdopen(fd, "w") as f:
                    if owner is not None:
                        os.fchown(f.fileno(), owner, owner)
                    f.write(content)
        finally:
            os.close(etc_fd)
    finally:
        os.close(root_fd)
