"""Find a container's program in its root directory on the host, as runc does at `create`.

An engine learns from `create`'s error that the program is missing (podman: exit 127) or not
executable (126), by runc's words. The VM would find the same at `start`, which engines
report only as a failed start, so `create` looks first. Paths resolve inside the root: an
absolute symlink restarts at the root, `..` stops there, as if the root were `/`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from steelcup.errors import InvalidArgument

MAX_SYMLINKS = 40
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def resolve_in_root(root: Path, path: str) -> Path | None:
    """The host path of `path` (absolute, as the container sees it) below `root`, symlinks
    followed within `root`; None if some component does not exist."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    current: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if current:
                current.pop()
            continue
        candidate = root.joinpath(*current, part)
        try:
            info = candidate.lstat()
        except OSError:
            return None
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > MAX_SYMLINKS:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        current.append(part)
    return root.joinpath(*current)


def _executable(host: Path | None) -> bool:
    if host is None:
        return False
    try:
        info = host.stat()
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and bool(info.st_mode & 0o111)


def check_program(root: Path, argv0: str, env: Sequence[str], cwd: str = "/") -> None:
    """InvalidArgument with runc's words unless `argv0` names an executable file in `root`
    (looked up in the process's PATH when it has no slash)."""
    if "/" in argv0:
        path = argv0 if argv0.startswith("/") else os.path.join(cwd or "/", argv0)
        host = resolve_in_root(root, path)
        if host is None or not host.exists():
            raise InvalidArgument(f'exec: "{argv0}": stat {argv0}: no such file or directory')
        if not _executable(host):
            raise InvalidArgument(f'exec: "{argv0}": permission denied')
        return
    search = next((e.partition("=")[2] for e in env if e.startswith("PATH=")), DEFAULT_PATH)
    for directory in search.split(":"):
        if directory.startswith("/") and _executable(
                resolve_in_root(root, f"{directory}/{argv0}")):
            return
    raise InvalidArgument(f'exec: "{argv0}": executable file not found in $PATH')
