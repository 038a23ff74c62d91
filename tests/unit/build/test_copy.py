"""COPY's source rules and tar relocation."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from steelcup.build.copy import (
    Ownership,
    dirs_tar,
    match_sources,
    outside_context,
    parse_chmod,
    relocate,
    tar_digest,
)
from steelcup.errors import InvalidArgument
from tests.unit.image.tarutil import make_tar


@pytest.mark.parametrize(("src", "outside"), [
    ("a", False), ("./a/../b", False), ("/abs", False), ("..", True), ("../x", True),
    ("a/../../x", True), ("/../x", False),
])
def test_outside_context(src: str, outside: bool) -> None:
    assert outside_context(src) is outside


def test_match_sources(tmp_path: Path) -> None:
    for name in ("a.c", "b.c", "c.h", "src/d.c", "src/deep/e.c"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert match_sources(fd, "*.c") == ["a.c", "b.c"]
        assert match_sources(fd, "src/*.c") == ["src/d.c"]
        assert match_sources(fd, "?.h") == ["c.h"]
        assert match_sources(fd, "*.go") == []
    finally:
        os.close(fd)


def test_digest_ignores_times_not_contents() -> None:
    def tar(data: bytes, mtime: int, mode: int = 0o644) -> io.BytesIO:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            info = tarfile.TarInfo("f")
            info.size, info.mtime, info.mode = len(data), mtime, mode
            t.addfile(info, io.BytesIO(data))
        buf.seek(0)
        return buf

    assert tar_digest(tar(b"x", 1)) == tar_digest(tar(b"x", 2))
    assert tar_digest(tar(b"x", 1)) != tar_digest(tar(b"y", 1))
    assert tar_digest(tar(b"x", 1)) != tar_digest(tar(b"x", 1, 0o755))


def test_relocate_renames_owns_and_chmods() -> None:
    src = io.BytesIO(make_tar([("dir", "."), ("file", "a", b"A"), ("link", "b", "a"),
                               ("sym", "s", "a")]))
    out_buf = io.BytesIO()
    with tarfile.open(fileobj=out_buf, mode="w") as out:
        n = relocate(src, out, lambda name: f"dest/{name}" if name else None,
                     Ownership(5, 6), 0o600)
    assert n == 3
    out_buf.seek(0)
    with tarfile.open(fileobj=out_buf) as tar:
        members = {m.name: m for m in tar}
    assert set(members) == {"dest/a", "dest/b", "dest/s"}
    assert members["dest/b"].linkname == "dest/a"
    assert all((m.uid, m.gid) == (5, 6) for m in members.values())
    assert members["dest/a"].mode == 0o600 and members["dest/s"].issym()


def test_dirs_tar_and_chmod_parsing() -> None:
    buf = io.BytesIO()
    dirs_tar(buf, ["a", "a/b"], owner=Ownership(1, 1))
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        assert [(m.name, m.isdir(), m.uid) for m in tar] == [("a", True, 1), ("a/b", True, 1)]
    assert parse_chmod("755", 1) == 0o755 and parse_chmod(None, 1) is None
    with pytest.raises(InvalidArgument, match="line 4: invalid --chmod=u"):
        parse_chmod("u+x", 4)
