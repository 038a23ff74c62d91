"""Is a template's RAM file still what the template saved? Clones trust it only while it is.

Two checks of different cost:
- `Fingerprint` (one stat): device, inode, size, mtime and ctime. Every way of changing a
  file's content (write, a shared mapping, fallocate's hole punching, truncate) moves its
  mtime and ctime, and ctime cannot be set back from user space: checked before every clone.
  (Not its allocated blocks: ext4 counts extent-tree blocks and settles delayed allocation
  after the fact.)
- `content_digest` (reads the file's data extents): sha256 over each extent's offset and bytes
  (holes, i.e. never-touched or discarded guest pages, are skipped by SEEK_DATA/SEEK_HOLE, so
  a 2 GiB template with 60 MiB in use costs 60 MiB of reading). Checked after an anomaly: a
  clone that fails to restore.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Fingerprint:
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int


def fingerprint(path: Path) -> Fingerprint:
    st = os.stat(path)
    return Fingerprint(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def data_extents(fd: int) -> list[tuple[int, int]]:
    """(offset, length) of every data region of the open file `fd` (holes left out)."""
    size = os.fstat(fd).st_size
    extents = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        extents.append((start, end - start))
        offset = end
    return extents


def content_digest(path: Path) -> str:
    """sha256 of the file's data extents, each prefixed by its offset and length."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        h.update(os.fstat(fd).st_size.to_bytes(8, "little"))
        for start, length in data_extents(fd):
            h.update(start.to_bytes(8, "little") + length.to_bytes(8, "little"))
            done = 0
            while done < length:
                chunk = os.pread(fd, min(_CHUNK, length - done), start + done)
                if not chunk:
                    break
                h.update(chunk)
                done += len(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()
