"""Template RAM file checks: any change to the file shows in its fingerprint and digest."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from steelcup.pool.integrity import content_digest, data_extents, fingerprint

PAGE = 4096


def _ram(tmp_path: Path) -> Path:
    f = tmp_path / "ram"
    with f.open("wb") as out:
        out.truncate(64 * PAGE)
        out.seek(8 * PAGE)
        out.write(os.urandom(4 * PAGE))
        out.seek(40 * PAGE)
        out.write(b"\0" * PAGE)  # data that happens to be zeros is still data
    return f


def test_extents_skip_holes(tmp_path: Path) -> None:
    f = _ram(tmp_path)
    fd = os.open(f, os.O_RDONLY)
    try:
        extents = data_extents(fd)
    finally:
        os.close(fd)
    covered = sum(length for _, length in extents)
    assert covered < 64 * PAGE
    assert any(start <= 8 * PAGE < start + length for start, length in extents)


def test_reading_changes_nothing(tmp_path: Path) -> None:
    f = _ram(tmp_path)
    before, digest = fingerprint(f), content_digest(f)
    f.read_bytes()
    assert fingerprint(f) == before and content_digest(f) == digest


def test_a_punched_hole_changes_both(tmp_path: Path) -> None:
    f = _ram(tmp_path)
    before, digest = fingerprint(f), content_digest(f)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f, os.O_RDWR)
    try:
        assert libc.fallocate(fd, 0x03, ctypes.c_long(40 * PAGE), ctypes.c_long(PAGE)) == 0
    finally:
        os.close(fd)
    assert f.read_bytes()[40 * PAGE:41 * PAGE] == b"\0" * PAGE  # same bytes when read ...
    assert fingerprint(f) != before  # ... but the file changed
    assert content_digest(f) != digest


def test_a_rewrite_of_the_same_bytes_changes_the_fingerprint(tmp_path: Path) -> None:
    f = _ram(tmp_path)
    before = fingerprint(f)
    data = f.read_bytes()[8 * PAGE:9 * PAGE]
    fd = os.open(f, os.O_RDWR)
    try:
        os.pwrite(fd, data, 8 * PAGE)
    finally:
        os.close(fd)
    assert fingerprint(f) != before
