"""Bounded filesystems: sizes, sparse images made from one template, and empty roots for
volumes."""

from __future__ import annotations

import subprocess
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
