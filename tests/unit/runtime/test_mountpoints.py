"""Mount points made on the host for a read-only root: created without following symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from steelcup.runtime.mountpoints import make_mount_points


def test_missing_targets_are_made_and_existing_ones_kept(tmp_path: Path) -> None:
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "keep").write_text("x")
    make_mount_points(tmp_path, ["/srv/data/deep", "/scratch", "/srv"])
    assert (tmp_path / "srv" / "data" / "deep").is_dir()
    assert (tmp_path / "scratch").is_dir()
    assert (tmp_path / "srv" / "keep").read_text() == "x"
    assert (tmp_path / "scratch").stat().st_mode & 0o777 == 0o755


def test_a_symlink_in_the_image_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "data")
    os.symlink("/", root / "abs")
    (root / "file").write_text("")
    make_mount_points(root, ["/data/x", "/abs/tmp/y", "/file/z", "/../escape"])
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "escape").exists()
    assert (root / "file").is_file()


def test_owner_is_given_to_what_it_makes(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    make_mount_points(tmp_path, ["/a/b"], owner=100000)
    assert (tmp_path / "a").stat().st_uid == 100000
    assert (tmp_path / "a" / "b").stat().st_gid == 100000


def test_a_single_file_binds_mount_point_is_an_empty_file(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hosts").write_text("kept")
    (rootfs / "lnk").symlink_to(tmp_path)
    make_mount_points(rootfs, [], files=["/dev/termination-log", "/etc/hosts", "/lnk/x",
                                         "/a/.."])
    assert (rootfs / "dev" / "termination-log").read_text() == ""
    assert (rootfs / "etc" / "hosts").read_text() == "kept"
    assert not (tmp_path / "x").exists() and not (rootfs / "a").exists()
