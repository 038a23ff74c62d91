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


END = b"\0" * 1024  # the two zero blocks that end an archive


def member(name: str, data: bytes = b"", *, pax: dict[str, str] | None = None,
           fmt: int = tarfile.PAX_FORMAT, **fields: Any) -> bytes:
    """One archive member (header blocks + data, no end marker); `fields` set TarInfo attrs."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 1_600_000_000
    for key, value in fields.items():
        setattr(info, key, value)
    if pax:
        info.pax_headers = pax
    out = info.tobuf(fmt, "utf-8", "surrogateescape")
    if data:
        out += data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)
    return out


def special(kind: bytes, payload: bytes) -> bytes:
    """A pax (`x`/`g`) or GNU long-name (`L`/`K`) header block carrying `payload`."""
    info = tarfile.TarInfo("././@LongLink" if kind in (b"L", b"K") else "././@PaxHeader")
    info.type, info.size = kind, len(payload)
    return info.tobuf(tarfile.USTAR_FORMAT) + payload + b"\0" * (-len(payload) % 512)


def pax_record(key: str, value: str) -> bytes:
    """One `"%d key=value\\n"` pax record (the length counts itself)."""
    body = f" {key}={value}\n".encode("utf-8", "surrogateescape")
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n += 1
    return str(n).encode() + body


def patched(name: str, offset: int, field: bytes, *, type_: bytes = b"0",
            data: bytes = b"") -> bytes:
    """A GNU header for `name` with the raw bytes `field` at `offset`, checksum recomputed."""
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime = type_, len(data), 1_600_000_000
    block = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    block[offset : offset + len(field)] = field
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block) + data + b"\0" * (-len(data) % 512)
