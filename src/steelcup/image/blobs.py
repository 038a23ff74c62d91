"""Content-addressed blobs on disk: `blobs/sha256/<hex>`, written via a temp file, verified,
committed by rename; nothing appears under a digest unless its whole content matched.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from steelcup.errors import ImageError
from steelcup.image.reference import is_full_id
from steelcup.untrusted_json import decode_json

MAX_JSON_BYTES = 16 << 20
COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int


class BlobStore:
    """The blobs under `root` (one file per sha256 digest); in-flight writes go to `tmp`."""

    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root
        self._tmp = tmp

    def path(self, digest: str) -> Path:
        return self.root / digest_hex(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def write(
        self, src: IO[bytes], expected: str | None = None, expected_size: int | None = None
    ) -> Blob:
        """Copy `src` into the blob store: temp file, fsync, verify, rename."""
        hasher = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="blob-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := src.read(COPY_CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    if expected_size is not None and size > expected_size:
                        raise ImageError(
                            f"blob {expected} is larger than the {expected_size} bytes announced"
                        )
                out.flush()
                os.fsync(out.fileno())
            digest = "sha256:" + hasher.hexdigest()
            if expected_size is not None and size != expected_size:
                raise ImageError(
                    f"blob {expected} is truncated: got {size} of {expected_size} bytes"
                )
            if expected is not None and expected != digest:
                raise ImageError(f"blob digest mismatch: expected {expected}, got {digest}")
            final = self.root / hasher.hexdigest()
            if final.exists():
                tmp.unlink()
            else:
                os.chmod(tmp, 0o644)
                os.rename(tmp, final)
                fsync_dir(self.root)
            return Blob(digest, size)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def read_json(self, digest: str, what: str) -> tuple[bytes, Any]:
        path = self.path(digest)
        if path.stat().st_size > MAX_JSON_BYTES:
            raise ImageError(f"{what} is larger than {MAX_JSON_BYTES} bytes")
        raw = path.read_bytes()
        return raw, decode_json(raw, what, error=ImageError)

    def discard(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def sweep(self, keep: set[str]) -> None:
        """Delete every blob whose digest is not in `keep`."""
        for blob in self.root.iterdir():
            if "sha256:" + blob.name not in keep:
                blob.unlink(missing_ok=True)

    def usage_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.iterdir() if p.is_file())


def digest_hex(digest: str) -> str:
    """The hex part of a `sha256:<hex>` digest (the file name under blobs/ and layers/)."""
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or not is_full_id(hexpart):
        raise ImageError(f"malformed digest {digest!r}")
    return hexpart


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
