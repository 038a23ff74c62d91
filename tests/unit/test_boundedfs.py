"""Bounded filesystems: sizes, sparse images made from one template, and empty roots for
volumes."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from steelcup import boundedfs
from steelcup.errors import InvalidArgument

MIB = 1 << 20


@pytest.mark.parametrize(("text", "expected"), [
    ("20G", 20 << 30), ("512m", 512 * MIB), ("1.5g", 3 << 29), ("4096", 4096),
    ("64MB", 64 * MIB), ("2GiB", 2 << 30), ("1t", 1 << 40),
])
def test_parse_size_like_docker(text: str, expected: int) -> None:
    assert boundedfs.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "g", "-1g", "10x", "1 g b"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(InvalidArgument):
        boundedfs.parse_size(text)


def test_size_bounds() -> None:
    assert boundedfs.check_size(16 * MIB) == 16 * MIB
    for bad in (0, 16 * MIB - 1, boundedfs.MAX_BYTES + 1):
        with pytest.raises(InvalidArgument, match="storage size must be between"):
            boundedfs.check_size(bad)


def test_sparse_copy_keeps_data_and_holes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    with open(src, "wb") as f:
        f.truncate(256 * MIB)
        f.seek(100 * MIB)
        f.write(b"middle")
        f.seek(256 * MIB - 3)
        f.write(b"end")
    dst = tmp_path / "dst"
    boundedfs.sparse_copy(src, dst)
    assert dst.stat().st_size == 256 * MIB
    assert dst.stat().st_blocks * 512 < 4 * MIB  # holes stayed holes
    with open(dst, "rb") as f:
        f.seek(100 * MIB)
        assert f.read(6) == b"middle"
        f.seek(256 * MIB - 3)
        assert f.read() == b"end"


def test_default_size_images_are_sparse_copies_of_one_template(tmp_path: Path) -> None:
    maker = boundedfs.DiskMaker(tmp_path / "cache", 10 << 30)
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


def _root_entries(image: Path) -> set[str]:
    listing = subprocess.run(["debugfs", "-R", "ls -p /", str(image)], capture_output=True,
                             text=True, check=True).stdout
    # `ls -p`: /inode/mode/uid/gid/name/size/ per entry
    return {line.split("/")[5] for line in listing.splitlines() if line.startswith("/")}


def test_empty_root_images_have_no_lost_and_found(tmp_path: Path) -> None:
    """A volume's root is what the container sees at its mount point: empty, like docker's."""
    volumes = boundedfs.DiskMaker(tmp_path / "vcache", 64 * MIB, label="steelcup-vol",
                                  empty_root=True)
    volumes.make(tmp_path / "default.img", 64 * MIB)  # through the template
    volumes.make(tmp_path / "other.img", 32 * MIB)  # through mkfs
    for name in ("default.img", "other.img"):
        assert _root_entries(tmp_path / name) == {".", ".."}
    layers = boundedfs.DiskMaker(tmp_path / "lcache", 64 * MIB)
    layers.make(tmp_path / "layer.img", 32 * MIB)
    assert "lost+found" in _root_entries(tmp_path / "layer.img")


def _spares(maker: boundedfs.DiskMaker) -> list[Path]:
    return sorted((maker.cache_dir / boundedfs.SPARE_DIR).iterdir())


def _wait_for_spares(maker: boundedfs.DiskMaker, count: int) -> list[Path]:
    deadline = time.monotonic() + 30
    while len(spares := _spares(maker)) != count or any(
            not p.name.endswith(".spare") for p in spares):
        assert time.monotonic() < deadline, spares
        time.sleep(0.01)
    return spares


def test_default_size_images_are_spares_made_ahead_and_taken_whole(tmp_path: Path) -> None:
    """A start takes a spare by renaming it; the maker makes it up again in the background.
    What an earlier daemon left behind (a half-made spare, spares of another default size)
    is deleted, never handed out."""
    maker = boundedfs.DiskMaker(tmp_path / "cache", 64 * MIB, spares=2)
    spare_dir = tmp_path / "cache" / boundedfs.SPARE_DIR
    spare_dir.mkdir(parents=True)
    (spare_dir / "ext4-v1-1234.img.00.spare").write_bytes(b"another size")
    half_made = spare_dir / f"{maker.template().name}.01.part"
    half_made.write_bytes(b"cut short")
    earlier = spare_dir / f"{maker.template().name}.02.spare"  # an earlier daemon's: no loop
    earlier.write_bytes(b"ready, once")
    filler = maker.fill_spares()
    assert filler is not None
    filler.join()
    spares = _spares(maker)
    assert len(spares) == 2 and earlier not in spares
    assert all(p.name.startswith(maker.template().name) and p.name.endswith(".spare")
               for p in spares)
    made_ahead = {p.stat().st_ino for p in spares}

    image = tmp_path / "a.img"
    assert maker.make(image, 64 * MIB) is True
    assert image.stat().st_ino in made_ahead  # renamed, not copied
    assert image.stat().st_size == 64 * MIB and "lost+found" in _root_entries(image)
    if os.geteuid() == 0:  # a loop device came with it, bound to it under its new name
        loop = maker.take_loop(image)
        assert loop is not None and _backed_by(image) == [loop.device]
        os.close(loop.fd)  # unmounted: let go at once (autoclear)
        _wait_unbound(image)
    assert maker.take_loop(image) is None  # once
    assert maker.make(image, 64 * MIB) is False  # exists: left as it is
    refilled = _wait_for_spares(maker, 2)
    assert len({p.stat().st_ino for p in refilled} - made_ahead) == 1

    other = tmp_path / "b.img"  # another size: mkfs, the spares untouched
    assert maker.make(other, 32 * MIB) is True
    assert other.stat().st_size == 32 * MIB
    assert _spares(maker) == refilled


def _backed_by(image: Path) -> list[str]:
    """The loop devices bound to `image` (losetup names them by path)."""
    out = subprocess.run(["losetup", "-n", "-O", "NAME", "-j", str(image)], capture_output=True,
                         text=True, check=True).stdout
    return out.split()


def _wait_unbound(*images: Path) -> None:
    deadline = time.monotonic() + 10  # autoclear's rundown runs after the last close
    while any(_backed_by(i) for i in images):
        assert time.monotonic() < deadline, [(i, _backed_by(i)) for i in images]
        time.sleep(0.01)


@pytest.mark.skipif(os.geteuid() != 0, reason="binds loop devices: needs root")
def test_spares_come_bound_to_loop_devices_that_close_lets_go(tmp_path: Path) -> None:
    """A spare's LOOP_CONFIGURE is made ahead with it (it waits for the kernel's RCU grace
    period, which a busy host stretches to 100+ ms); the maker holds the devices, and its
    close (the daemon's shutdown) lets them go."""
    maker = boundedfs.DiskMaker(tmp_path / "cache", 64 * MIB, spares=2)
    filler = maker.fill_spares()
    assert filler is not None
    filler.join()
    spares = _spares(maker)
    assert len(spares) == 2 and all(len(_backed_by(p)) == 1 for p in spares)
    maker.close()
    _wait_unbound(*spares)
    assert maker.fill_spares() is None  # closed: no more
    image = tmp_path / "a.img"
    assert maker.make(image, 64 * MIB) is True  # a spare still, without its loop
    assert maker.take_loop(image) is None


def test_a_maker_without_spares_copies_the_template(tmp_path: Path) -> None:
    maker = boundedfs.DiskMaker(tmp_path / "cache", 64 * MIB)
    assert maker.fill_spares() is None
    assert maker.make(tmp_path / "a.img", 64 * MIB) is True
    assert not (tmp_path / "cache" / boundedfs.SPARE_DIR).exists()


@pytest.mark.parametrize(("size", "text"), [
    (10 << 30, "10G"), (32 * MIB, "32M"), (1536 * MIB, "1536M"), (4097, "4097"), (2048, "2K"),
])
def test_format_size_reads_back(size: int, text: str) -> None:
    assert boundedfs.format_size(size) == text and boundedfs.parse_size(text) == size


def test_a_mount_waits_for_a_lazily_detached_earlier_mount_of_the_image(tmp_path: Path) -> None:
    """An unmount that found the filesystem busy detaches it lazily: its data is written back
    only when its last user goes. A second mount before then would be another ext4 of the same
    disk, missing what the first had not written yet. `mount` waits for the first to go."""
    import os
    import threading

    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    image = tmp_path / "rw.img"
    boundedfs.DiskMaker(tmp_path / "cache", 64 * MIB).make(image, 64 * MIB)
    first, second = tmp_path / "first", tmp_path / "second"
    boundedfs.mount(image, first)
    held = open(first / "written-late", "w")  # noqa: SIM115 - the user that keeps it busy
    held.write("data")
    held.flush()
    boundedfs.unmount(first)  # busy: detached lazily, still alive through `held`
    mounted = threading.Event()
    worker = threading.Thread(target=lambda: (boundedfs.mount(image, second), mounted.set()))
    worker.start()
    try:
        assert not mounted.wait(0.5)  # waiting for the first mount to go, not mounting
        held.close()
        worker.join(timeout=30)
        assert mounted.is_set()
        assert (second / "written-late").read_text() == "data"
    finally:
        held.close()
        worker.join(timeout=30)
        boundedfs.unmount(second)
