"""Overlay rootfs: needs root and a kernel that lets us mount overlayfs; skips otherwise."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from steelcup import sysmount, userns
from steelcup.errors import ImageError, SteelcupError
from steelcup.idmap import IdRange
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


def _engine_root(base: Path) -> Path:
    host = base / "bundle-rootfs"
    (host / "etc").mkdir(parents=True)
    (host / "etc" / "motd").write_text("from the engine")
    os.chown(host / "etc" / "motd", 0, 0)
    return host


def _ids() -> IdRange | None:
    return IdRange(1_000_000_000) if userns.supported() else None


def _check_layered_root(host: Path, cdir: Path, layers: list[Path], ids: IdRange | None,
                        seen: Path) -> None:
    root = rootfs.prepare(layers, cdir, ids=ids)
    assert (root / "etc" / "motd").read_text() == "from the engine"
    if ids is not None:  # the VM's root (host id base) owns what host root owns
        assert (root / "etc" / "motd").stat().st_uid == ids.base
    (root / "etc" / "motd").write_text("the container's")
    (root / "new").write_text("x")
    assert (seen / "etc" / "motd").read_text() == "from the engine"
    assert not (seen / "new").exists()
    rootfs.remove(cdir)
    assert not cdir.exists()
    assert (seen / "etc" / "motd").read_text() == "from the engine"


def test_a_host_directory_is_the_lower_layer_and_is_never_written(workdir: Path) -> None:
    host = _engine_root(workdir)
    ids = _ids()
    cdir = workdir / "c-host"
    layers = rootfs.host_dir_layers(host, cdir, ids)
    assert layers == ([cdir / rootfs.HOST_LAYER / "0"] if ids else [host])
    _check_layered_root(host, cdir, layers, ids, host)


def test_an_engines_overlay_is_taken_apart_into_mapped_layers(workdir: Path) -> None:
    """podman's overlay driver mounts the root as an overlay, which cannot be idmapped: its
    upper and lower dirs are mapped one by one, in the same order."""
    ids = _ids()
    if ids is None:
        pytest.skip("no idmapped mounts here")
    lower = _engine_root(workdir / "image")
    upper = workdir / "engine" / "diff"
    work = workdir / "engine" / "work"
    merged = workdir / "engine" / "merged"
    for d in (upper, work, merged):
        d.mkdir(parents=True)
    (upper / "added-by-engine").write_text("top")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)],
                   check=True)
    try:
        cdir = workdir / "c-overlay"
        layers = rootfs.host_dir_layers(merged, cdir, ids)
        assert layers == [cdir / rootfs.HOST_LAYER / "1", cdir / rootfs.HOST_LAYER / "0"]
        root = rootfs.prepare(layers, cdir, ids=ids)
        assert (root / "added-by-engine").read_text() == "top"
        rootfs.release(cdir)
        _check_layered_root(merged, cdir, rootfs.host_dir_layers(merged, cdir, ids), ids,
                            merged)
    finally:
        sysmount.unmount_all(merged)


@pytest.mark.parametrize(("options", "layers"), [
    ("rw,lowerdir=/s/l/A:/s/l/B,upperdir=/s/c/diff,workdir=/s/c/work,uuid=on",
     ["/s/c/diff", "/s/l/A", "/s/l/B"]),
    ("rw,lowerdir+=/a,lowerdir+=/b", ["/a", "/b"]),
])
def test_overlay_options_give_the_layers_topmost_first(options: str, layers: list[str]) -> None:
    assert rootfs.overlay_layers(options) == layers


@pytest.mark.parametrize("options", ["rw,lowerdir=l/A:l/B,upperdir=c/diff", "rw",
                                     "rw,lowerdir=/a,datadir+=/d"])
def test_overlays_that_cannot_be_taken_apart_are_refused(options: str) -> None:
    with pytest.raises(ImageError):
        rootfs.overlay_layers(options)


def test_a_missing_host_directory_is_refused(workdir: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        rootfs.host_dir_layers(workdir / "absent", workdir / "c-absent")


def test_remove_refuses_to_delete_through_a_mounted_host_directory(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = workdir / "kept"
    host.mkdir()
    (host / "precious").write_text("keep")
    cdir = workdir / "c-guard"
    view = cdir / rootfs.HOST_LAYER / "0"
    view.mkdir(parents=True)
    sysmount.bind(host, view)
    monkeypatch.setattr(rootfs, "release", lambda _cdir: None)  # an unmount that did not happen
    try:
        with pytest.raises(SteelcupError, match="still mounted"):
            rootfs.remove(cdir)
    finally:
        sysmount.unmount_all(view)
    assert (host / "precious").read_text() == "keep"


def test_the_overlay_is_mounted_with_absolute_paths_when_they_fit() -> None:
    """mount(2) from the daemon (no `mount` process): the layers topmost first; a path the
    overlay's option parser would split, or data longer than a page, falls back to `mount`
    with short relative names."""
    from steelcup.image.rootfs import _direct_options
    lowers = [Path("/s/layers/a"), Path("/s/layers/b")]  # lowest first
    assert _direct_options(lowers, Path("/s/c/upper"), Path("/s/c/work")) == (
        "lowerdir=/s/layers/b:/s/layers/a,upperdir=/s/c/upper,workdir=/s/c/work")
    for odd in ("/s/a,b", "/s/a:b", "/s/a=b", "/s/a\\b"):
        assert _direct_options([Path(odd)], Path("/s/c/upper"), Path("/s/c/work")) is None
    many = [Path(f"/s/layers/{i:064x}") for i in range(60)]
    assert _direct_options(many, Path("/s/c/upper"), Path("/s/c/work")) is None
