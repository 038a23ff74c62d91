"""Overlay rootfs: needs root and a kernel that lets us mount overlayfs; skips otherwise."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from steelcup import sysmount
from steelcup.image import rootfs


def _can_mount(tmp: Path) -> bool:
    for d in ("l", "u", "w", "m"):
        (tmp / d).mkdir()
    proc = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={tmp}/l,upperdir={tmp}/u,workdir={tmp}/w", str(tmp / "m")],
        capture_output=True,
    )
    if proc.returncode != 0:
        return False
    subprocess.run(["umount", str(tmp / "m")], check=True)
    return True


@pytest.fixture
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0 or not _can_mount(tmp_path_factory.mktemp("probe")):
        pytest.skip("mounting overlayfs is not permitted here")
    # a long base path makes absolute lowerdir options overflow a page: exercises the short links
    base = tmp_path_factory.mktemp("x" * 100)
    yield base
    for cdir in base.glob("c*"):
        rootfs.release(cdir)


def _layers(base: Path, n: int) -> list[Path]:
    dirs = []
    for i in range(n):
        d = base / "layers" / (f"{i:02d}" + "f" * 62)
        d.mkdir(parents=True)
        (d / f"only{i}").write_text(str(i))
        (d / "shared").write_text(str(i))
        dirs.append(d)
    return dirs


def test_thirty_layers_topmost_wins(workdir: Path) -> None:
    layers = _layers(workdir, 30)
    assert sum(len(str(d)) + 1 for d in layers) > 4096
    cdir = workdir / "c1"
    root = rootfs.prepare(layers, cdir)
    assert root == cdir / "rootfs"
    assert (root / "shared").read_text() == "29"
    assert all((root / f"only{i}").exists() for i in range(30))
    (root / "new").write_text("upper")
    assert (cdir / "upper/new").read_text() == "upper"
    assert not (layers[-1] / "new").exists()
    assert rootfs.prepare(layers, cdir) == root  # already mounted: no second mount
    rootfs.release(cdir)
    rootfs.release(cdir)  # idempotent
    assert not (root / "shared").exists()
    rootfs.remove(cdir)
    assert not cdir.exists()
    rootfs.remove(cdir)


def test_zero_layers(workdir: Path) -> None:
    cdir = workdir / "c2"
    root = rootfs.prepare([], cdir)
    assert list(root.iterdir()) == []
    (root / "f").write_text("x")
    rootfs.remove(cdir)
    assert not cdir.exists()


def test_busy_mount_released_lazily(workdir: Path) -> None:
    cdir = workdir / "c3"
    root = rootfs.prepare(_layers(workdir, 1), cdir)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        proc = subprocess.Popen(["sleep", "30"], cwd=root)
        try:
            rootfs.release(cdir)
            assert not sysmount.is_mountpoint(root)
        finally:
            proc.kill()
            proc.wait()
    finally:
        os.close(fd)
    rootfs.remove(cdir)


def test_whiteouts_and_opaque_dirs_through_overlay(workdir: Path) -> None:
    import io

    from steelcup.image.layers import apply_layer

    from .tarutil import make_tar

    lower, upper = workdir / "L1", workdir / "L2"
    lower.mkdir()
    upper.mkdir()
    apply_layer(io.BytesIO(make_tar([("file", "gone", b"x"), ("dir", "cache"),
                                     ("file", "cache/old", b"o"), ("file", "kept", b"k")])), lower)
    apply_layer(io.BytesIO(make_tar([("file", ".wh.gone", b""), ("dir", "cache"),
                                     ("file", "cache/.wh..wh..opq", b""),
                                     ("file", "cache/new", b"n")])), upper)
    root = rootfs.prepare([lower, upper], workdir / "c4")
    assert sorted(p.name for p in root.iterdir()) == ["cache", "kept"]
    assert sorted(p.name for p in (root / "cache").iterdir()) == ["new"]
    rootfs.remove(workdir / "c4")
