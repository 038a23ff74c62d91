"""Context compression as dockerd accepts it: gzip, bzip2, xz (and zstd via the layer code)
sniffed by magic; concatenated streams read through; bad or truncated data, and an xz stream
that asks for more decoder memory than the limit, are the client's clear errors."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from collections.abc import Callable

import pytest

from steelcup.build.compression import decompressed, is_archive
from steelcup.errors import InvalidArgument
from tests.unit.image.tarutil import make_tar

DATA = b"context bytes " * 5000


def read_all(data: bytes, **kwargs: int) -> bytes:
    with decompressed(io.BytesIO(data), **kwargs) as raw:
        return raw.read()


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress, bytes])
def test_each_format_reads_back(compress: Callable[[bytes], bytes]) -> None:
    assert read_all(compress(DATA)) == DATA


@pytest.mark.parametrize("compress", [bz2.compress, lzma.compress])
def test_concatenated_streams_read_through(compress: Callable[[bytes], bytes]) -> None:
    assert read_all(compress(b"one ") + compress(b"two")) == b"one two"


@pytest.mark.parametrize(("data", "match"), [
    (bz2.compress(DATA)[:40], "bzip2 stream is truncated"),
    (lzma.compress(DATA)[:40], "xz stream is truncated"),
    (b"BZh9" + b"\xff" * 64, "^bzip2: "),
    (b"\xfd7zXZ\x00" + b"\xff" * 64, "^xz: "),
])
def test_bad_data_is_the_clients_error(data: bytes, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        read_all(data)


def test_xz_decoder_memory_is_bounded() -> None:
    packed = lzma.compress(DATA, preset=6)  # an 8 MiB dictionary: ~9 MiB to decode
    assert read_all(packed, xz_memlimit=64 << 20) == DATA
    with pytest.raises(InvalidArgument, match="^xz: .*[Mm]emory"):
        read_all(packed, xz_memlimit=1 << 20)


def test_is_archive() -> None:
    assert is_archive(make_tar([("file", "a", b"x")])[:512])
    assert all(is_archive(f(b"x")) for f in (gzip.compress, bz2.compress, lzma.compress))
    assert not is_archive(b"FROM scratch\n")
