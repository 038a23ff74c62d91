"""A build context: the client's tar unpacked into a private directory with the layer code's
safety rules (no escape, no device files, bounded size), .dockerignore applied, the Dockerfile
read from inside it. The directory goes when the build ends (`close`).
"""

from __future__ import annotations

import io
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from steelcup.boundedfs import GIB
from steelcup.build.compression import decompressed
from steelcup.build.ignore import IgnoreRules
from steelcup.errors import ImageError, InvalidArgument
from steelcup.image.layers import LayerLimits, SourceCounter, _Extractor, apply_layer
from steelcup.runtime.fs_paths import DIR_FLAGS, open_dir, resolve

CONTEXT_MAX_BYTES = 4 * GIB  # unpacked
DOCKERFILE_MAX_BYTES = 1 << 20
DEFAULT_DOCKERFILE = "Dockerfile"


@dataclass
class Context:
    root: Path
    dockerfile: str  # its text
    dockerfile_name: str
    ignore: IgnoreRules

    def close(self) -> None:
        shutil.rmtree(self.root.parent, ignore_errors=True)


class _ContextExtractor(_Extractor):
    """The layer extractor for a context: owners dropped, whiteout names refused."""

    def _apply(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        m.uid = m.gid = 0
        super()._apply(tar, m)

    def _whiteout(self, dir_parts: tuple[str, ...], name: str) -> None:
        raise ImageError(f"the build context holds {name!r}: names starting with .wh. are "
                         "refused")


class _Completed(io.RawIOBase):
    """A tar stream whose end may be missing: the docker CLI's context for `-f -` stops right
    after the last file's data, without its padding or the two zero blocks that end a tar (Go's
    reader accepts that). At the end of `inner`, zeros up to the next 512-byte block and the
    end blocks follow; a tar that has them reads the same."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self._count = 0
        self._tail: bytes | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        if self._tail is None:
            data = self._inner.read(len(buf))
            if data:
                self._count += len(data)
                buf[:len(data)] = data
                return len(data)
            self._tail = bytes(-self._count % 512 + 1024)
        n = min(len(buf), len(self._tail))
        buf[:n] = self._tail[:n]
        self._tail = self._tail[n:]
        return n


def unpack(stream: IO[bytes], work_dir: Path, dockerfile: str = "",
           max_bytes: int = CONTEXT_MAX_BYTES) -> Context:
    """Unpack the context tar (plain, gzip, bzip2, xz or zstd) under `work_dir`, read its
    Dockerfile
    (`dockerfile`: a path inside the context) and drop what .dockerignore leaves out."""
    work_dir.mkdir(parents=True, exist_ok=True)
    top = Path(tempfile.mkdtemp(dir=work_dir, prefix="context-"))
    root = top / "root"
    root.mkdir(mode=0o755)
    try:
        limits = LayerLimits(max_bytes=max_bytes, max_entries=1_000_000)
        try:
            upload = SourceCounter(stream)  # the expansion ratio is against what was sent
            with decompressed(cast(IO[bytes], upload)) as raw:
                completed = io.BufferedReader(_Completed(raw))
                apply_layer(completed, root, limits, extractor_class=_ContextExtractor,
                            compressed=upload)
        except (ImageError, InvalidArgument) as exc:  # the latter from a decompressor
            raise InvalidArgument(f"invalid build context: {exc}") from exc
        name = dockerfile or DEFAULT_DOCKERFILE
        text = read_file(root, name, DOCKERFILE_MAX_BYTES)
        if text is None:
            raise InvalidArgument(f"Cannot locate specified Dockerfile: {name}")
        ignore_text = read_file(root, ".dockerignore", DOCKERFILE_MAX_BYTES) or ""
        rules = IgnoreRules.parse(ignore_text)
        prune(root, rules)
        return Context(root, text, name, rules)
    except BaseException:
        shutil.rmtree(top, ignore_errors=True)
        raise


def from_dockerfile(text: str, work_dir: Path) -> Context:
    """A context that is only a Dockerfile (a remote URL whose content is one, as dockerd
    reads it): nothing to COPY from, the text is not a file of the context."""
    work_dir.mkdir(parents=True, exist_ok=True)
    top = Path(tempfile.mkdtemp(dir=work_dir, prefix="context-"))
    root = top / "root"
    root.mkdir(mode=0o755)
    return Context(root, text, DEFAULT_DOCKERFILE, IgnoreRules.parse(""))


def read_file(root: Path, name: str, max_bytes: int) -> str | None:
    """A text file of the context, its path resolved inside it; None if missing."""
    clean = posixpath.normpath(name)
    if clean.startswith("/") or clean == ".." or clean.startswith("../"):
        raise InvalidArgument(f"the Dockerfile ({name}) must be within the build context")
    root_fd = os.open(root, DIR_FLAGS)
    try:
        parts = resolve(root_fd, clean, follow_last=True)
        if not parts:
            return None
        try:
            parent = open_dir(root_fd, parts[:-1])
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise InvalidArgument(f"cannot read {name} in the build context: "
                                  f"{exc.strerror}") from exc
        finally:
            os.close(parent)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise InvalidArgument(f"{name} in the build context is not a regular file")
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise InvalidArgument(f"{name} is larger than {max_bytes} bytes")
        return data.decode("utf-8", errors="replace")
    finally:
        os.close(root_fd)


def prune(root: Path, rules: IgnoreRules) -> None:
    """Remove what `rules` leave out; an ignored directory stays only for what `!` re-includes
    below it."""
    if not rules.patterns:
        return
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath,
                                                                                     d))]:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rules.ignored(rel):
                os.unlink(os.path.join(dirpath, name))
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full) or not os.path.isdir(full):
                continue
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rules.ignored(rel) and not os.listdir(full):
                os.rmdir(full)
