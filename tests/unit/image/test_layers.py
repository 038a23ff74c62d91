"""Safe layer application: formats, whiteouts, ownership and limits (the hostile corpus and the
benign controls are tables in test_hostile_layers.py)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from steelcup.errors import ImageError
from steelcup.image.layers import OPAQUE_XATTR, LayerLimits, apply_layer

from .tarutil import END, make_tar, member

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="whiteouts/ownership need root")


def test_devices_skipped_unless_allowed(tmp_path: Path) -> None:
    data = make_tar([("chr", "null", 1, 3), ("file", "ok", b"1")])
    stats = apply_layer(io.BytesIO(data), tmp_path)
    assert not (tmp_path / "null").exists() and stats.skipped == 1
    if ROOT:
        other = tmp_path / "other"
        other.mkdir()
        apply_layer(io.BytesIO(data), other, LayerLimits(allow_devices=True))
        st = (other / "null").lstat()
        assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1


def test_setid_bits_stripped(tmp_path: Path) -> None:
    """Set-id bits never reach the host file (test_privileges.py: they are recorded inert)."""
    data = make_tar([("file", "su", b"x", 0o4755), ("dir", "sg", 0o2775), ("dir", "t", 0o1777)])
    apply_layer(io.BytesIO(data), tmp_path)
    assert stat.S_IMODE((tmp_path / "su").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "sg").stat().st_mode) == 0o775
    assert stat.S_IMODE((tmp_path / "t").stat().st_mode) == 0o1777  # sticky is fine


def test_gzip_bomb_refused_by_expansion_ratio(tmp_path: Path) -> None:
    data = gzip.compress(make_tar([("file", "big", b"\0" * 5_000_000)]))
    assert len(data) < 20_000  # expands ~500 times; under the byte limit by far
    limits = LayerLimits(ratio_floor_bytes=1_000_000)  # default ratio (100), default byte cap
    with pytest.raises(ImageError, match="expands more than 100 times"):
        apply_layer(io.BytesIO(data), tmp_path, limits)


def test_ratio_spares_small_layers_and_can_be_turned_off(tmp_path: Path) -> None:
    zeros = make_tar([("file", "big", b"\0" * 5_000_000)])
    data = gzip.compress(zeros)
    for sub in "abc":
        (tmp_path / sub).mkdir()
    # under the default 64 MiB floor: a small layer of zeros is fine
    assert apply_layer(io.BytesIO(data), tmp_path / "a").size_bytes == len(zeros)
    off = LayerLimits(ratio_floor_bytes=1_000_000, max_ratio=0)
    assert apply_layer(io.BytesIO(data), tmp_path / "b", off).size_bytes == len(zeros)
    # an uncompressed layer never trips the ratio (it expands 1:1)
    strict = LayerLimits(ratio_floor_bytes=0, max_ratio=1)
    assert apply_layer(io.BytesIO(zeros), tmp_path / "c", strict).size_bytes == len(zeros)


def test_out_of_range_mtime_clamped(tmp_path: Path) -> None:
    data = member("f", b"x", pax={"mtime": "1e300"}) + member("g", pax={"mtime": "nan"}) + END
    apply_layer(io.BytesIO(data), tmp_path)
    assert (tmp_path / "f").stat().st_mtime == 1 << 33
    assert (tmp_path / "g").stat().st_mtime == 0


def test_target_symlink_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(ImageError, match="not a directory"):
        apply_layer(io.BytesIO(make_tar([("file", "a", b"1")])), tmp_path / "link")
    assert list(real.iterdir()) == []


# --- benign controls -------------------------------------------------------------------------


def test_regular_content_modes_and_diff_id(tmp_path: Path) -> None:
    data = make_tar([("dir", "etc", 0o755), ("file", "etc/hosts", b"127.0.0.1 x\n", 0o600),
                     ("file", "./dup", b"first"), ("file", "dup", b"second")])
    stats = apply_layer(io.BytesIO(data), tmp_path)
    assert (tmp_path / "etc/hosts").read_bytes() == b"127.0.0.1 x\n"
    assert stat.S_IMODE((tmp_path / "etc/hosts").stat().st_mode) == 0o600
    assert (tmp_path / "dup").read_bytes() == b"second"
    assert stats.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert stats.size_bytes == len(data)
    assert (tmp_path / "etc").stat().st_mtime == 1_600_000_000


def test_gzip_layer_same_diff_id(tmp_path: Path) -> None:
    data = make_tar([("file", "a", b"hello")])
    stats = apply_layer(io.BytesIO(gzip.compress(data)), tmp_path)
    assert stats.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert (tmp_path / "a").read_bytes() == b"hello"


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd tool not installed")
def test_zstd_layer(tmp_path: Path) -> None:
    data = make_tar([("file", "a", b"zzz" * 1000)])
    comp = subprocess.run(["zstd", "-c", "-q"], input=data, capture_output=True, check=True)
    stats = apply_layer(io.BytesIO(comp.stdout), tmp_path)
    assert (tmp_path / "a").read_bytes() == b"zzz" * 1000
    assert stats.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()


def test_implicit_parents_and_root_entry(tmp_path: Path) -> None:
    data = make_tar([("dir", "./", 0o755), ("file", "x/y/z", b"deep")])
    apply_layer(io.BytesIO(data), tmp_path)
    assert (tmp_path / "x/y/z").read_bytes() == b"deep"


@needs_root
def test_whiteouts_become_overlay_char_devices(tmp_path: Path) -> None:
    data = make_tar([("dir", "etc"), ("file", "etc/.wh.motd", b""), ("file", ".wh.gone", b""),
                     ("file", ".wh..wh.plnk", b"")])
    stats = apply_layer(io.BytesIO(data), tmp_path)
    for p in (tmp_path / "etc/motd", tmp_path / "gone"):
        st = p.lstat()
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert not (tmp_path / "etc/.wh.motd").exists()
    assert not (tmp_path / ".wh..wh.plnk").exists()
    assert stats.whiteouts == 3


@needs_root
def test_whiteout_does_not_hide_same_layer_file_and_is_replaced_later(tmp_path: Path) -> None:
    data = make_tar([("file", "keep", b"mine"), ("file", ".wh.keep", b""),
                     ("file", ".wh.back", b""), ("file", "back", b"again")])
    apply_layer(io.BytesIO(data), tmp_path)
    assert (tmp_path / "keep").read_bytes() == b"mine"
    assert (tmp_path / "back").read_bytes() == b"again"


@needs_root
def test_opaque_dir_xattr(tmp_path: Path) -> None:
    data = make_tar([("dir", "var/cache", 0o755), ("file", "var/cache/.wh..wh..opq", b""),
                     ("file", "var/cache/new", b"n")])
    apply_layer(io.BytesIO(data), tmp_path)
    assert os.getxattr(tmp_path / "var/cache", OPAQUE_XATTR) == b"y"
    assert not (tmp_path / "var/cache/.wh..wh..opq").exists()
    assert (tmp_path / "var/cache/new").read_bytes() == b"n"


@needs_root
def test_ownership_applied(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("owned")
        info.uid, info.gid, info.size = 1234, 5678, 1
        tar.addfile(info, io.BytesIO(b"x"))
    apply_layer(io.BytesIO(buf.getvalue()), tmp_path)
    st = (tmp_path / "owned").stat()
    assert (st.st_uid, st.st_gid) == (1234, 5678)
