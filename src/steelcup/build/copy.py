"""COPY and ADD: which source paths an instruction names, and the tar of what lands at the
destination (names relocated, owners and modes set), plus a checksum of the sources that the
build cache keys on. Tar in, tar out; the builder does the mounting.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from steelcup.build.ignore import compile_pattern
from steelcup.errors import InvalidArgument
from steelcup.runtime.fs_paths import DIR_FLAGS
from steelcup.runtime.fs_tar import open_tar

_WILDCARD = frozenset("*?[")


@dataclass(frozen=True)
class Ownership:
    uid: int
    gid: int


def outside_context(src: str) -> bool:
    """Whether a COPY source names something above the context root."""
    clean = posixpath.normpath("/" + src.lstrip("/")) if src.startswith("/") else \
        posixpath.normpath(src)
    return clean == ".." or clean.startswith("../")


def has_wildcard(src: str) -> bool:
    return any(ch in _WILDCARD for ch in src)


def match_sources(root_fd: int, pattern: str) -> list[str]:
    """Context paths (relative, sorted) matching a wildcard source such as `src/*.c`."""
    clean = posixpath.normpath(pattern).lstrip("/")
    regex = compile_pattern(clean)
    depth = len(clean.split("/"))
    found: list[str] = []
    for rel in _walk(root_fd, "", depth):
        if regex.match(rel):
            found.append(rel)
    return sorted(found)


def _walk(fd: int, prefix: str, depth: int) -> Iterator[str]:
    """Relative paths down to `depth` components, never following symlinks."""
    for entry in sorted(os.listdir(fd)):
        rel = f"{prefix}{entry}"
        yield rel
        if depth <= 1:
            continue
        st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(entry, DIR_FLAGS, dir_fd=fd)
            try:
                yield from _walk(sub, rel + "/", depth - 1)
            finally:
                os.close(sub)


def _names(m: tarfile.TarInfo) -> str:
    name = posixpath.normpath(m.name)
    return "" if name in (".", "/") else name.lstrip("/").removeprefix("./")


def tar_digest(src: IO[bytes]) -> str:
    """A checksum of a source tar's names, kinds, modes, owners, link targets and contents
    (not times: an unchanged file copied again is a cache hit)."""
    h = hashlib.sha256()
    with tarfile.open(fileobj=src, mode="r|") as tar:
        for m in tar:
            h.update(repr((_names(m), m.type, m.mode, m.uid, m.gid, m.linkname,
                           m.size)).encode())
            if m.isreg():
                f = tar.extractfile(m)
                if f is not None:
                    for chunk in iter(lambda f=f: f.read(1 << 20), b""):  # type: ignore[misc]
                        h.update(chunk)
    src.seek(0)
    return "sha256:" + h.hexdigest()


def relocate(
    src: IO[bytes],
    out: tarfile.TarFile,
    rename: Callable[[str], str | None],
    owner: Ownership,
    chmod: int | None,
) -> int:
    """Copy the entries of tar `src` into `out` under the names `rename` gives (None: left
    out), owned by `owner`, with mode `chmod` if set. Returns the entries written."""
    written = 0
    with tarfile.open(fileobj=src, mode="r|") as tar:
        for m in tar:
            new = rename(_names(m))
            if new is None:
                continue
            m.name = new
            if m.islnk():
                target = rename(_names(tarfile.TarInfo(m.linkname)))
                if target is None:
                    continue
                m.linkname = target
            m.uid, m.gid, m.uname, m.gname = owner.uid, owner.gid, "", ""
            if chmod is not None and not m.issym():
                m.mode = chmod
            data = tar.extractfile(m) if m.isreg() else None
            out.addfile(m, data)
            written += 1
    src.seek(0)
    return written


def dirs_tar(out: IO[bytes], names: list[str], mode: int = 0o755,
             owner: Ownership = Ownership(0, 0)) -> None:
    """A tar of directories `names` (relative, parents first): what a COPY destination or a
    WORKDIR needs created."""
    with open_tar(out) as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            info.uid, info.gid = owner.uid, owner.gid
            tar.addfile(info)


def parse_chmod(text: str | None, line: int) -> int | None:
    if text is None:
        return None
    try:
        value = int(text, 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o7777:
        raise InvalidArgument(f"Dockerfile line {line}: invalid --chmod={text}: an octal mode "
                              "is expected (symbolic modes are not supported)")
    return value
