"""Volume snapshots on real loop-mounted filesystems (root needed; skips otherwise)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from steelcup import boundedfs
from steelcup.errors import Conflict, InvalidArgument, NotFound
from steelcup.volume.manager import VolumeManager

MIB = 1 << 20


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("loop mounts need root")
    yield tmp_path
    VolumeManager(tmp_path).recover()


def _manager(root: Path, users: dict[str, list[str]] | None = None) -> VolumeManager:
    disks = boundedfs.DiskMaker(root / "cache", 32 * MIB, label="steelcup-vol",
                                empty_root=True)
    return VolumeManager(root, in_use=lambda name: (users or {}).get(name, []), disks=disks)


def test_a_snapshot_of_a_volume_being_written_is_a_consistent_point_in_time(root: Path) -> None:
    vm = _manager(root)
    vol = vm.create("data")
    data = vm.hold("run1", "data")  # mounted, as for a running container
    (data / "before").write_text("kept")
    stop = threading.Event()
    counts: list[int] = []

    def writer() -> None:  # a guest writing all along (its writes wait while frozen)
        n = 0
        while not stop.is_set():
            n += 1
            tmp = data / "n.tmp"
            tmp.write_text(str(n))
            os.replace(tmp, data / "n")
        counts.append(n)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        snap = vm.snapshots.create("data", "s1")
    finally:
        stop.set()
        thread.join(30)
    assert snap.volume == "data" and snap.size_bytes == vol.size_bytes
    (data / "after").write_text("not in the snapshot")
    vm.release("run1")
    restored = vm.create("restored", options={"snapshot": "s1"})
    assert restored.size_bytes == vol.size_bytes
    got = vm.hold("check", "restored")
    try:
        assert (got / "before").read_text() == "kept"
        assert not (got / "after").exists()
        n = int((got / "n").read_text())  # a whole number: no torn write
        assert 0 < n <= counts[0]
    finally:
        vm.release("check")


def test_a_volume_with_snapshots_stays_and_names_are_checked(root: Path) -> None:
    vm = _manager(root)
    vm.create("data")
    vm.snapshots.create("data", "s1")
    with pytest.raises(Conflict, match="already exists"):
        vm.snapshots.create("data", "s1")
    with pytest.raises(Conflict, match="has snapshots - \\[s1\\]"):
        vm.remove("data")
    assert [s.name for s in vm.snapshots.list("", "data")] == ["s1"]
    assert vm.snapshots.list("", "other") == []
    for bad in ("../x", "a/b", ""):
        with pytest.raises(InvalidArgument):
            vm.snapshots.create("data", bad)
    with pytest.raises(NotFound):
        vm.snapshots.create("missing", "s2")
    with pytest.raises(NotFound):
        vm.create("x", options={"snapshot": "nope"})
    with pytest.raises(InvalidArgument, match="snapshot's size"):
        vm.create("x", options={"snapshot": "s1", "size": "64m"})
    vm.snapshots.remove("s1")
    vm.remove("data")
    with pytest.raises(NotFound):
        vm.snapshots.get("s1")


def test_an_unbounded_volume_in_use_is_refused_unless_forced(root: Path) -> None:
    users = {"plain": ["c1"]}
    vm = VolumeManager(root, in_use=lambda name: users.get(name, []))
    vol = vm.create("plain")
    (vol.mountpoint / "f").write_text("x")
    os.chown(vol.mountpoint / "f", 1000, 1000)
    with pytest.raises(Conflict, match="--force"):
        vm.snapshots.create("plain", "p1")
    vm.snapshots.create("plain", "p1", force=True)
    copy = vm.create("copy", options={"snapshot": "p1"})
    assert (copy.mountpoint / "f").read_text() == "x"
    assert (copy.mountpoint / "f").stat().st_uid == 1000  # owners kept


def test_leftovers_of_a_crash_are_cleaned(root: Path) -> None:
    vm = _manager(root)
    (vm.snapshots.dir / ".tmp-half").mkdir()
    vm.recover()
    assert not (vm.snapshots.dir / ".tmp-half").exists()
