"""Mount points as statx tells them (STATX_ATTR_MOUNT_ROOT) and as /proc/self/mountinfo
does (the fallback): the same answers for bind mounts, their sources, symlinks to them,
mounted files and paths that do not exist; and which filesystems keep their files in memory
(tmpfs), where template RAM files must not go."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from steelcup import sysmount


@pytest.fixture(params=["statx", "mountinfo"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root")
    if request.param == "mountinfo":
        monkeypatch.setattr(sysmount, "_mount_root", lambda _path: None)
    else:
        assert sysmount._mount_root(Path("/")) is True  # this kernel reports the attribute
    yield request.param


def test_mount_points_are_told_apart_from_what_they_show(tmp_path: Path, way: str) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    (source / "sub").mkdir(parents=True)
    target.mkdir()
    file_source, file_target = tmp_path / "file-source", tmp_path / "file-target"
    file_source.write_text("x")
    file_target.write_text("")
    link = tmp_path / "link"
    link.symlink_to(target)
    sysmount.bind(source, target)
    sysmount.bind(file_source, file_target)
    try:
        assert sysmount.is_mountpoint(target)
        assert sysmount.is_mountpoint(link)  # symlinks resolved
        assert sysmount.is_mountpoint(file_target)
        assert sysmount.is_mountpoint(Path("/"))
        # the same filesystem as the parent, so st_dev alone could not tell these apart
        assert not sysmount.is_mountpoint(source)
        assert not sysmount.is_mountpoint(target / "sub")
        assert not sysmount.is_mountpoint(tmp_path)
        assert not sysmount.is_mountpoint(file_source)
        assert not sysmount.is_mountpoint(tmp_path / "missing")
        assert not sysmount.is_mountpoint(file_target / "below-a-file")
    finally:
        sysmount.umount(file_target)
        sysmount.umount(target)
    assert not sysmount.is_mountpoint(target)
    assert not sysmount.is_mountpoint(file_target)


def test_unmount_all_takes_off_every_stacked_mount(tmp_path: Path, way: str) -> None:
    a, b, target = tmp_path / "a", tmp_path / "b", tmp_path / "target"
    for d in (a, b, target):
        d.mkdir()
    (b / "top").write_text("b")
    sysmount.bind(a, target)
    sysmount.bind(b, target)
    assert (target / "top").read_text() == "b"
    sysmount.unmount_all(target)
    assert not sysmount.is_mountpoint(target) and not any(target.iterdir())
    sysmount.unmount_all(target)  # idempotent


def test_memory_filesystems_are_told_apart_from_the_rest(tmp_path: Path) -> None:
    """Template RAM files must not live on one (steelcup.daemon.warn_memory_filesystem)."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm")
    assert sysmount.memory_filesystem(shm) == "tmpfs"
    assert sysmount.memory_filesystem(Path("/proc")) is None  # procfs: not a memory fs
    assert sysmount.memory_filesystem(tmp_path / "missing") is None  # cannot be told


def test_the_daemon_warns_of_a_state_root_in_memory(caplog: pytest.LogCaptureFixture) -> None:
    from steelcup.daemon import warn_memory_filesystem

    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm")
    with caplog.at_level(logging.WARNING, logger="steelcup.daemon"):
        warn_memory_filesystem(Path("/proc"))
        assert not caplog.records
        warn_memory_filesystem(shm)
    assert "on tmpfs" in caplog.text and "give --root a disk filesystem" in caplog.text
