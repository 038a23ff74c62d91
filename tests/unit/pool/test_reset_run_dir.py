"""A crashed daemon's VM run dir (template RAM files, ready VMs' slot binds) is emptied at the
next start without touching what the binds pointed at."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from steelcup import sysmount
from steelcup.pool.factory import reset_run_dir


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
def test_stale_slot_binds_are_unmounted_and_the_dir_removed(tmp_path: Path) -> None:
    rootfs = tmp_path / "container" / "rootfs"
    rootfs.mkdir(parents=True)
    (rootfs / "precious").write_text("container data")
    run_dir = tmp_path / "vms"
    slot_root = run_dir / "s" / "s1234" / "root"
    slot_root.mkdir(parents=True)
    (run_dir / "t" / "abcd").mkdir(parents=True)
    (run_dir / "t" / "abcd" / "ram").write_bytes(b"\0" * 4096)
    sysmount.bind(rootfs, slot_root)
    try:
        assert sysmount.mounts_under(run_dir) == [slot_root]
        reset_run_dir(run_dir)
    finally:
        if sysmount.is_mountpoint(slot_root):
            sysmount.umount(slot_root, sysmount.MNT_DETACH)
    assert not run_dir.exists()
    assert (rootfs / "precious").read_text() == "container data"
    assert not sysmount.mounts_under(tmp_path)


def test_missing_run_dir_is_fine(tmp_path: Path) -> None:
    reset_run_dir(tmp_path / "never-made")
    assert not (tmp_path / "never-made").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
def test_what_a_kept_vm_uses_stays_with_its_mounts(tmp_path: Path) -> None:
    """Live restore: the state dir and slot of a VM that outlived the daemon stay (its slot's
    bind of the container root too); everything else goes, a stale bind included."""
    rootfs = tmp_path / "container" / "rootfs"
    rootfs.mkdir(parents=True)
    (rootfs / "precious").write_text("container data")
    run_dir = tmp_path / "vms"
    kept_slot, stale_slot = run_dir / "s" / "s1", run_dir / "s" / "s2"
    kept_state = run_dir / "abc-123"
    for d in (kept_slot / "root", stale_slot / "root", kept_state, run_dir / "t" / "k"):
        d.mkdir(parents=True)
    (kept_state / "qmp.sock").write_text("")
    (run_dir / "t" / "k" / "ram").write_bytes(b"\0" * 4096)
    sysmount.bind(rootfs, kept_slot / "root")
    sysmount.bind(rootfs, stale_slot / "root")
    try:
        reset_run_dir(run_dir, keep=[kept_state, kept_slot])
        assert sysmount.mounts_under(run_dir) == [kept_slot / "root"]
        assert (kept_slot / "root" / "precious").exists()
        assert (kept_state / "qmp.sock").exists()
        assert not stale_slot.exists() and not (run_dir / "t").exists()
    finally:
        for point in sysmount.mounts_under(run_dir):
            sysmount.umount(point, sysmount.MNT_DETACH)
    assert (rootfs / "precious").read_text() == "container data"
