"""`docker cp` paths under a volume or bind mount go to the mounted host directory."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from steelcup.errors import InvalidArgument
from steelcup.runtime import fs_archive
from steelcup.runtime.fs_paths import DIR_FLAGS, ContainerTree, MountedDir, mount_at


def test_mount_at_longest_whole_component_prefix() -> None:
    targets = [("data",), ("data", "inner"), ("srv", "www")]
    assert mount_at(targets, ("data", "x")) == (0, ("x",))
    assert mount_at(targets, ("data",)) == (0, ())
    assert mount_at(targets, ("data", "inner", "f")) == (1, ("f",))
    assert mount_at(targets, ("database", "f")) == (None, ("database", "f"))
    assert mount_at(targets, ("srv",)) == (None, ("srv",))
    assert mount_at(targets, ()) == (None, ())
    assert mount_at([], ("data",)) == (None, ("data",))


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[ContainerTree, Path, Path]]:
    """A rootfs whose /data is the mount point of a host dir `vol`."""
    root, vol = tmp_path / "rootfs", tmp_path / "vol"
    (root / "data").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc" / "hostname").write_text("container\n")
    (root / "data" / "hidden").write_text("under the mount\n")
    vol.mkdir()
    (vol / "in-volume").write_text("volume\n")
    root_fd, vol_fd = os.open(root, DIR_FLAGS), os.open(vol, DIR_FLAGS)
    try:
        yield ContainerTree(root_fd, [MountedDir(("data",), vol_fd)]), root, vol
    finally:
        os.close(root_fd)
        os.close(vol_fd)


def _tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return sorted(m.name for m in tar.getmembers())


def test_cp_in_and_out_uses_the_volume(tree: tuple[ContainerTree, Path, Path]) -> None:
    t, root, vol = tree
    fs_archive.extract_archive(t, "/data", io.BytesIO(_tar("new.txt", b"hi\n")), "c")
    assert (vol / "new.txt").read_bytes() == b"hi\n"
    assert not (root / "data" / "new.txt").exists()
    source = fs_archive.locate(t, "/data/in-volume", "c")
    assert source.stat.size == len(b"volume\n")
    out = io.BytesIO()
    fs_archive.write_archive(t, source, out)
    assert _names(out.getvalue()) == ["in-volume"]
    whole = fs_archive.locate(t, "/data", "c")  # the mount point itself: the volume's root
    out = io.BytesIO()
    fs_archive.write_archive(t, whole, out)
    assert _names(out.getvalue()) == ["data", "data/in-volume", "data/new.txt"]
    with pytest.raises(Exception, match="Could not find"):
        fs_archive.locate(t, "/data/hidden", "c")


def test_no_escape_from_the_volume(tree: tuple[ContainerTree, Path, Path]) -> None:
    """The attack: the guest plants `..` paths and symlinks in its volume to reach the host."""
    t, root, vol = tree
    (vol / "up").symlink_to("../../..")
    (vol / "abs").symlink_to("/etc")
    # `..` and symlinks resolve in the container: to its rootfs, never to the host around vol
    assert fs_archive.locate(t, "/data/../etc/hostname", "c").parts == ("etc", "hostname")
    assert fs_archive.locate(t, "/data/up/etc/hostname", "c").parts == ("etc", "hostname")
    src = fs_archive.locate(t, "/data/abs/hostname", "c")
    out = io.BytesIO()
    fs_archive.write_archive(t, src, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        member = tar.extractfile("hostname")
        assert member is not None and member.read() == b"container\n"
    fs_archive.extract_archive(t, "/data/abs", io.BytesIO(_tar("x", b"x")), "c")
    assert (root / "etc" / "x").exists() and not (vol.parent / "x").exists()


def test_read_only_mount_refuses_cp_in(tmp_path: Path) -> None:
    root, vol = tmp_path / "rootfs", tmp_path / "vol"
    (root / "ro").mkdir(parents=True)
    vol.mkdir()
    root_fd, vol_fd = os.open(root, DIR_FLAGS), os.open(vol, DIR_FLAGS)
    try:
        t = ContainerTree(root_fd, [MountedDir(("ro",), vol_fd, readonly=True)])
        with pytest.raises(InvalidArgument, match="read-only"):
            fs_archive.extract_archive(t, "/ro", io.BytesIO(_tar("x", b"x")), "c")
    finally:
        os.close(root_fd)
        os.close(vol_fd)
    assert list(vol.iterdir()) == []
