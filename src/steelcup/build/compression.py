"""Compressed build contexts and ADD archives: what dockerd's classic builder accepts as a
context tar or unpacks for ADD (plain, gzip, bzip2, xz; zstd too, as the layer code reads it),
recognised by magic. gzip and zstd go
through the layer code; bzip2 and xz are read here, xz with a bound on the decoder's memory
(an xz header names the dictionary size the decoder must allocate, so a hostile context could
otherwise make the daemon allocate gigabytes).
"""

from __future__ import annotations

import bz2
import contextlib
import io
import lzma
from collections.abc import Callable, Iterator
from typing import IO, Protocol

from steelcup.boundedfs import MIB
from steelcup.errors import InvalidArgument
from steelcup.image.layers import _Prefixed
from steelcup.image.layers import decompressed as layer_decompressed

GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
HEAD_BYTES = 6  # enough for every magic above
TAR_MAGIC_OFFSET = 257  # "ustar" (POSIX and GNU tars)
XZ_MEMLIMIT_BYTES = 256 * MIB  # xz -9 needs 65 MiB to decode
_CHUNK = 1 << 16


def is_compressed(head: bytes) -> bool:
    return head.startswith((GZIP_MAGIC, BZIP2_MAGIC, XZ_MAGIC, ZSTD_MAGIC))


def is_archive(head: bytes) -> bool:
    """Whether the first bytes of a file are those of a (maybe compressed) tar."""
    return is_compressed(head) or head[TAR_MAGIC_OFFSET:TAR_MAGIC_OFFSET + 5] == b"ustar"


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    @property
    def needs_input(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


class _StreamReader(io.RawIOBase):
    """bzip2 or xz decompressed; concatenated streams are read one after another, as bzip2(1),
    xz(1) and Go's readers do. Bad data is the client's error."""

    def __init__(self, inner: IO[bytes], make: Callable[[], _Decompressor], name: str) -> None:
        self._inner = inner
        self._make = make
        self._name = name
        self._dec = make()
        self._pending = b""  # compressed input not yet given to the decompressor

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        while True:
            if self._dec.eof:
                rest = self._dec.unused_data + self._pending
                self._pending = b""
                if not rest:
                    rest = self._inner.read(_CHUNK)
                if not rest.strip(b"\0"):  # stream padding or the end
                    return 0
                self._dec = self._make()
                self._pending = rest
            if not self._pending and self._dec.needs_input:
                self._pending = self._inner.read(_CHUNK)
                if not self._pending:
                    raise InvalidArgument(f"the {self._name} stream is truncated")
            try:
                data = self._dec.decompress(self._pending, max_length=len(buf))
            except (lzma.LZMAError, OSError, EOFError, ValueError) as exc:  # in memory only
                raise InvalidArgument(f"{self._name}: {exc}") from None
            self._pending = b""
            if data:
                buf[:len(data)] = data
                return len(data)


@contextlib.contextmanager
def decompressed(stream: IO[bytes],
                 xz_memlimit: int = XZ_MEMLIMIT_BYTES) -> Iterator[IO[bytes]]:
    """A reader of `stream` with its compression (sniffed by magic) removed."""
    head = b""
    while len(head) < HEAD_BYTES:
        more = stream.read(HEAD_BYTES - len(head))
        if not more:
            break
        head += more
    reader = io.BufferedReader(_Prefixed(head, stream), _CHUNK)
    if head.startswith(BZIP2_MAGIC):
        yield io.BufferedReader(_StreamReader(reader, bz2.BZ2Decompressor, "bzip2"), _CHUNK)
    elif head.startswith(XZ_MAGIC):
        def xz() -> _Decompressor:
            return lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=xz_memlimit)
        yield io.BufferedReader(_StreamReader(reader, xz, "xz"), _CHUNK)
    else:
        with layer_decompressed(reader) as out:
            yield out
