"""The writable layer's bounded filesystem: sizes, sparse images, and (root only) the limit
itself, met through the container's overlay like a guest's writes."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from steelcup import sysmount
from steelcup.errors import InvalidArgument
from steelcup.image import layerdisk, rootfs

MIB = 1 << 20


@pytest.mark.parametrize(("text", "expected"), [
    ("20G", 20 << 30), ("512m", 512 * MIB), ("1.5g", 3 << 29), ("4096", 4096),
    ("64MB", 64 * MIB), ("2GiB", 2 << 30), ("1t", 1 << 40),
])
def test_parse_size_like_docker(text: str, expected: int) -> None:
    assert layerdisk.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "g", "-1g", "10x", "1 g b"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(InvalidArgument):
        layerdisk.parse_size(text)


def test_size_bounds() -> None:
    assert layerdisk.check_size(16 * MIB) == 16 * MIB
    for bad in (0, 16 * MIB - 1, layerdisk.MAX_BYTES + 1):
        with pytest.raises(InvalidArgument, match="storage size must be between"):
            layerdisk.check_size(bad)


def test_sparse_copy_keeps_data_and_holes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    with open(src, "wb") as f:
        f.truncate(256 * MIB)
        f.seek(100 * MIB)
        f.write(b"middle")
        f.seek(256 * MIB - 3)
        f.write(b"end")
    dst = tmp_path / "dst"
    layerdisk.sparse_copy(src, dst)
    assert dst.stat().st_size == 256 * MIB
    assert dst.stat().st_blocks * 512 < 4 * MIB  # holes stayed holes
    with open(dst, "rb") as f:
        f.seek(100 * MIB)
        assert f.read(6) == b"middle"
        f.seek(256 * MIB - 3)
        assert f.read() == b"end"


def test_default_size_images_are_sparse_copies_of_one_template(tmp_path: Path) -> None:
    maker = layerdisk.DiskMaker(tmp_path / "cache", 10 << 30)
    maker.make(tmp_path / "a.img", 10 << 30)
    template = maker.template()
    made = template.stat().st_mtime_ns
    maker.make(tmp_path / "b.img", 10 << 30)
    assert template.stat().st_mtime_ns == made  # made once
    for name in ("a.img", "b.img"):
        st = (tmp_path / name).stat()
        assert st.st_size == 10 << 30
        assert st.st_blocks * 512 < 32 * MIB  # a 10 GiB filesystem costs a few MiB of host disk
    # another size: its own filesystem, and no template kept for it
    maker.make(tmp_path / "c.img", 64 * MIB)
    assert (tmp_path / "c.img").stat().st_size == 64 * MIB
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [template.name]


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/mounts") as f:
        return [line for line in f if str(path) in line]


@pytest.fixture
def root_dir(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("loop and overlay mounts need root")
    yield tmp_path
    for cdir in tmp_path.glob("c*"):
        rootfs.release(cdir)


def test_writes_past_the_size_get_enospc_through_the_overlay(root_dir: Path) -> None:
    """The attack: fill the container's root. Without a bounded layer the write succeeds
    (and the host's disk is what fills)."""
    layer = root_dir / "layer"
    layer.mkdir()
    (layer / "etc").mkdir()
    maker = layerdisk.DiskMaker(root_dir / "cache", 10 << 30)
    cdir = root_dir / "c1"
    cdir.mkdir()
    root = rootfs.prepare([layer], cdir, maker, 32 * MIB)
    written = 0
    with pytest.raises(OSError) as caught, open(root / "fill", "wb") as f:  # noqa: PT012
        chunk = b"x" * MIB
        for _ in range(64):
            f.write(chunk)
            f.flush()
            written += len(chunk)
        os.fsync(f.fileno())
    assert caught.value.errno in (errno.ENOSPC, errno.EDQUOT)
    assert written <= 32 * MIB
    assert sysmount.is_mountpoint(cdir / "rw")
    assert rootfs.upper_dir(cdir) == cdir / "rw/upper"
    assert (cdir / "rw.img").stat().st_blocks * 512 <= 33 * MIB  # the host file is bounded
    (root / "fill").unlink()
    (root / "etc/kept").write_text("data")
    rootfs.release(cdir)
    assert not _mounts_under(cdir)
    # stopped: the layer is mounted on demand for diff/commit, and keeps the data
    assert (rootfs.mount_layer(cdir) / "etc/kept").read_text() == "data"
    rootfs.release(cdir)
    rootfs.remove(cdir)
    assert not cdir.exists() and not _mounts_under(root_dir)


def test_container_dirs_from_before_sizes_keep_their_plain_upper(root_dir: Path) -> None:
    layer = root_dir / "layer"
    layer.mkdir()
    cdir = root_dir / "c1"
    (cdir / "upper").mkdir(parents=True)
    (cdir / "upper/old").write_text("kept")
    maker = layerdisk.DiskMaker(root_dir / "cache", 10 << 30)
    root = rootfs.prepare([layer], cdir, maker, 32 * MIB)
    assert (root / "old").read_text() == "kept"
    assert not (cdir / "rw.img").exists() and rootfs.upper_dir(cdir) == cdir / "upper"
    rootfs.release(cdir)


def test_no_loop_device_outlives_the_mount(root_dir: Path) -> None:
    maker = layerdisk.DiskMaker(root_dir / "cache", 10 << 30)
    cdir = root_dir / "c1"
    cdir.mkdir()
    image = cdir / "rw.img"
    maker.make(image, 10 << 30)
    rootfs.mount_layer(cdir)
    rootfs.release(cdir)
    loops = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True)
    assert loops.stdout.strip() == ""
