"""Build small tar archives for tests (tests may write tars; the code under test only reads)."""

from __future__ import annotations

import io
import tarfile
from typing import Any

Entry = tuple[Any, ...]


def make_tar(entries: list[Entry], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """entries: ("file", name, data[, mode]), ("dir", name[, mode]), ("sym", name, target),
    ("link", name, target), ("chr"|"blk", name, major, minor), ("fifo", name)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for entry in entries:
            kind, name = entry[0], entry[1]
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            data = b""
            if kind == "file":
                data = entry[2]
                info.size = len(data)
                info.mode = entry[3] if len(entry) > 3 else 0o644
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = entry[2] if len(entry) > 2 else 0o755
            elif kind == "sym":
                info.type = tarfile.SYMTYPE
                info.linkname = entry[2]
            elif kind == "link":
                info.type = tarfile.LNKTYPE
                info.linkname = entry[2]
            elif kind in ("chr", "blk"):
                info.type = tarfile.CHRTYPE if kind == "chr" else tarfile.BLKTYPE
                info.devmajor, info.devminor = entry[2], entry[3]
                info.mode = 0o666
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                info.mode = 0o644
            else:
                raise ValueError(kind)
            tar.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return buf.getvalue()
