"""The writable layer's bounded filesystem (root only): the limit met through the container's
overlay like a guest's writes, the plain upper dir of older containers, no loop device left."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from steelcup import boundedfs, sysmount
from steelcup.image import rootfs

MIB = 1 << 20


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
    maker = boundedfs.DiskMaker(root_dir / "cache", 10 << 30)
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
    maker = boundedfs.DiskMaker(root_dir / "cache", 10 << 30)
    root = rootfs.prepare([layer], cdir, maker, 32 * MIB)
    assert (root / "old").read_text() == "kept"
    assert not (cdir / "rw.img").exists() and rootfs.upper_dir(cdir) == cdir / "upper"
    rootfs.release(cdir)


def test_no_loop_device_outlives_the_mount(root_dir: Path) -> None:
    maker = boundedfs.DiskMaker(root_dir / "cache", 10 << 30)
    cdir = root_dir / "c1"
    cdir.mkdir()
    image = cdir / "rw.img"
    maker.make(image, 10 << 30)
    rootfs.mount_layer(cdir)
    rootfs.release(cdir)
    loops = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True)
    assert loops.stdout.strip() == ""


def test_a_new_layer_is_mounted_without_looking_for_earlier_mounts_of_it(
        root_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only an image mounted before can still have a lazily detached mount going
    (boundedfs.wait_released); looking for one reads every loop device's backing file."""
    looked = []
    real = boundedfs._loops_backed_by

    def spy(image: Path) -> list[str]:
        looked.append(image)
        return real(image)

    monkeypatch.setattr(boundedfs, "_loops_backed_by", spy)
    layer = root_dir / "layer"
    layer.mkdir()
    maker = boundedfs.DiskMaker(root_dir / "cache", 10 << 30, spares=1)
    cdir = root_dir / "c1"
    cdir.mkdir()
    rootfs.prepare([layer], cdir, maker, 10 << 30)
    assert looked == []
    rootfs.release(cdir)
    rootfs.prepare([layer], cdir, maker, 10 << 30)  # the same container started again
    assert looked == [cdir / "rw.img"]
    rootfs.release(cdir)


def test_a_spares_layer_is_mounted_on_the_loop_device_that_came_with_it(
        root_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No LOOP_CONFIGURE on a start that takes a spare; its mount holds the device, which
    goes with the mount."""
    layer = root_dir / "layer"
    layer.mkdir()
    maker = boundedfs.DiskMaker(root_dir / "cache", 10 << 30, spares=1)
    filler = maker.fill_spares()
    assert filler is not None
    filler.join()
    attached = []
    real = boundedfs._attach_loop

    def spy(image: Path) -> tuple[str, int]:
        attached.append(image)
        return real(image)

    monkeypatch.setattr(boundedfs, "_attach_loop", spy)
    cdir = root_dir / "c1"
    cdir.mkdir()
    rootfs.prepare([layer], cdir, maker, 10 << 30)
    assert attached == []
    (rootfs.upper_dir(cdir) / "x").write_text("written")
    assert sysmount.is_mountpoint(cdir / "rw")
    rootfs.release(cdir)
    maker.close()
    deadline = time.monotonic() + 10
    while subprocess.run(["losetup", "-j", str(cdir / "rw.img")], capture_output=True,
                         text=True).stdout.strip():
        assert time.monotonic() < deadline
        time.sleep(0.01)
