"""A build context is hostile input: unpacked inside its directory only, without devices or
whiteouts, bounded; its Dockerfile read from inside it; .dockerignore applied."""

from __future__ import annotations

import bz2
import gzip
import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from steelcup.build.context import unpack
from steelcup.errors import InvalidArgument
from tests.unit.image.tarutil import make_tar

DOCKERFILE = ("file", "Dockerfile", b"FROM scratch\n")


def files_under(root: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            out.add(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def test_unpacks_gzip_reads_the_dockerfile_and_prunes_ignored(tmp_path: Path) -> None:
    tar = make_tar([DOCKERFILE, ("file", ".dockerignore", b"*.log\nsub\n!sub/keep\ngone/\n"),
                    ("file", "a.log", b""), ("file", "b.txt", b""), ("file", "d/c.log", b""),
                    ("dir", "sub"), ("file", "sub/keep", b""), ("file", "sub/drop", b""),
                    ("dir", "gone"), ("file", "gone/x", b"")])
    ctx = unpack(io.BytesIO(gzip.compress(tar)), tmp_path / "work")
    try:
        assert ctx.dockerfile == "FROM scratch\n"
        # `*.log` is anchored at the root (d/c.log stays), unlike a .gitignore
        assert files_under(ctx.root) == {"Dockerfile", ".dockerignore", "b.txt", "d", "d/c.log",
                                         "sub", "sub/keep"}
    finally:
        ctx.close()
    assert list((tmp_path / "work").iterdir()) == []  # cleaned up


@pytest.mark.parametrize(("entries", "message"), [
    ([("file", "../../escape", b"x")], "escapes"),
    ([("sym", "link", "/tmp"), ("file", "link/through-link", b"x")], "link"),
    ([("file", ".wh.x", b"")], r"\.wh\."),
])
def test_escapes_and_whiteouts_are_refused(tmp_path: Path, entries: list[tuple[object, ...]],
                                           message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        unpack(io.BytesIO(make_tar([DOCKERFILE, *entries])), tmp_path / "work")
    assert list((tmp_path / "work").iterdir()) == []  # nothing left
    assert not (tmp_path / "escape").exists() and not os.path.exists("/tmp/through-link")


def test_device_files_are_dropped(tmp_path: Path) -> None:
    ctx = unpack(io.BytesIO(make_tar([DOCKERFILE, ("chr", "dev", 1, 3)])), tmp_path / "work")
    try:
        assert not (ctx.root / "dev").exists()
    finally:
        ctx.close()


def test_size_bound(tmp_path: Path) -> None:
    tar = make_tar([DOCKERFILE, ("file", "big", b"x" * 5000)])
    with pytest.raises(InvalidArgument, match="invalid build context"):
        unpack(io.BytesIO(tar), tmp_path / "work", max_bytes=4096)
    assert list((tmp_path / "work").iterdir()) == []


def test_dockerfile_location(tmp_path: Path) -> None:
    tar = make_tar([("dir", "d"), ("file", "d/Custom", b"FROM a\n"), ("sym", "out", "/etc/passwd")])
    ctx = unpack(io.BytesIO(tar), tmp_path / "w", "d/Custom")
    assert ctx.dockerfile == "FROM a\n"
    ctx.close()
    with pytest.raises(InvalidArgument, match="Cannot locate specified Dockerfile: Dockerfile"):
        unpack(io.BytesIO(tar), tmp_path / "w")
    with pytest.raises(InvalidArgument, match="must be within the build context"):
        unpack(io.BytesIO(tar), tmp_path / "w", "../x")
    # a symlink is resolved inside the context: /etc/passwd there does not exist
    with pytest.raises(InvalidArgument, match="Cannot locate"):
        unpack(io.BytesIO(tar), tmp_path / "w", "out")


def test_a_tar_without_its_end_as_the_docker_cli_sends_for_f_dash(tmp_path: Path) -> None:
    """docker build -f - sends the context without the last file's padding or end blocks."""
    full = make_tar([("file", ".dockerfile.x", b"FROM a\n"), ("file", "last", b"47 bytes")])
    cut = full[:512 * 3 + len(b"47 bytes")]  # header, data block, header, then the data only
    ctx = unpack(io.BytesIO(cut), tmp_path / "work", ".dockerfile.x")
    try:
        assert (ctx.root / "last").read_bytes() == b"47 bytes"
    finally:
        ctx.close()
    ctx = unpack(io.BytesIO(gzip.compress(cut)), tmp_path / "work", ".dockerfile.x")
    ctx.close()


@pytest.mark.parametrize("compress", [lambda b: gzip.compress(b, 1), lambda b: bz2.compress(b, 1)])
def test_a_context_bomb_is_refused_by_its_ratio_to_the_upload(
        tmp_path: Path, compress: Callable[[bytes], bytes]) -> None:
    """70 MiB of zeros (past the 64 MiB floor) sent as a few kilobytes: refused by the
    100-times expansion check, measured against the bytes uploaded."""
    tar = make_tar([DOCKERFILE, ("file", "zeros", bytes(70 << 20))])
    with pytest.raises(InvalidArgument, match="decompression bomb"):
        unpack(io.BytesIO(compress(tar)), tmp_path / "work")
    assert list((tmp_path / "work").iterdir()) == []
