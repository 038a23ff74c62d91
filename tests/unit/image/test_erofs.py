"""An image's erofs (--rootfs-cache block): made from its layers merged, mounted back here to
check it (needs root, mkfs.erofs, and a host kernel with erofs and overlayfs; skips otherwise);
and the background maker's bookkeeping."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from steelcup.image import erofs, erofs_files
from steelcup.runtime import stand_ins
from steelcup.runtime.fs_changes import is_opaque


def _usable() -> bool:
    if os.geteuid() != 0 or shutil.which("mkfs.erofs") is None:
        return False
    return "erofs" in Path("/proc/filesystems").read_text()


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    """A mount point; whatever is mounted there is unmounted afterwards."""
    if not _usable():
        pytest.skip("needs root, mkfs.erofs (erofs-utils) and erofs in the host kernel")
    point = tmp_path / "mnt"
    point.mkdir()
    yield point
    subprocess.run(["umount", str(point)], capture_output=True)


def _layers(base: Path) -> list[Path]:
    """Two layers: the upper one changes a file, deletes one (a whiteout) and replaces a
    directory (opaque)."""
    low, up = base / "low", base / "up"
    for d in (low / "etc", low / "gone", low / "opaque" / "old", up / "etc", up / "opaque"):
        d.mkdir(parents=True)
    (low / "etc" / "f").write_text("low")
    (low / "etc" / "deleted").write_text("x")
    (low / "opaque" / "old" / "x").write_text("x")
    (low / "bin").write_bytes(b"\x7fELF")
    os.chown(low / "bin", 1234, 5678)
    os.chmod(low / "bin", 0o4755)  # after chown, which clears set-user-ID
    os.utime(low / "bin", (1_000_000_000, 1_000_000_000))
    os.setxattr(low / "bin", "user.kept", b"yes")
    (up / "etc" / "f").write_text("up")
    os.mknod(up / "etc" / "deleted", stat.S_IFCHR, 0)  # overlayfs' whiteout
    os.setxattr(up / "opaque", "trusted.overlay.opaque", b"y")
    (up / "opaque" / "new").write_text("new")
    return [low, up]


def test_an_image_is_its_layers_merged_at_one_apparent_size(tmp_path: Path,
                                                              mounted: Path) -> None:
    out = tmp_path / "store" / erofs.image_path(Path(), "sha256:ab").name
    erofs.build(_layers(tmp_path), out, tmp_path / "scratch")
    assert out.stat().st_size == erofs.CAPACITY_BYTES
    assert out.stat().st_blocks * 512 < 16 << 20  # sparse
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with open(out, "rb") as f:  # dropped from the page cache: what guests read shows later
        assert not any(b & 1 for b in erofs_files.cached_pages(f.fileno(), 1 << 20))
    subprocess.run(["mount", "-t", "erofs", "-o", "ro,loop", str(out), str(mounted)],
                   check=True)
    assert (mounted / "etc" / "f").read_text() == "up"
    assert not (mounted / "etc" / "deleted").exists()
    assert sorted(p.name for p in (mounted / "opaque").iterdir()) == ["new"]
    st = (mounted / "bin").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)) == (
        0o4755, 1234, 5678, 1_000_000_000)
    assert os.getxattr(mounted / "bin", "user.kept") == b"yes"
    assert not [n for n in os.listxattr(mounted / "opaque") if n.startswith("trusted.overlay")]
    assert not list((tmp_path / "scratch").iterdir())  # its merged view is gone


def test_the_maker_makes_each_image_once_and_forgets_removed_ones(tmp_path: Path,
                                                                 mounted: Path) -> None:
    del mounted
    images = erofs.ErofsImages(tmp_path / "erofs", tmp_path / "scratch")
    try:
        layers = _layers(tmp_path)
        future = images.ensure("sha256:aa", lambda: layers)
        assert future is not None
        future.result(timeout=120)
        assert images.ready("sha256:aa") == erofs.image_path(tmp_path / "erofs", "sha256:aa")
        assert images.ensure("sha256:aa", lambda: layers) is None  # made already
        broken = images.ensure("sha256:bb", lambda: [tmp_path / "missing"])
        assert broken is not None
        broken.result(timeout=120)  # logged, not raised
        assert images.ready("sha256:bb") is None
        assert images.ensure("sha256:bb", lambda: layers) is None  # not retried
        images.prune({"sha256:cc"})
        assert images.ready("sha256:aa") is None
        # removed: deleted at once, or once made when removed while being made
        images.ensure("sha256:aa", lambda: layers).result(timeout=120)  # type: ignore[union-attr]
        images.forget("sha256:aa")
        assert images.ready("sha256:aa") is None
        gate, begun = threading.Event(), threading.Event()

        def held_layers() -> list[Path]:
            begun.set()
            gate.wait(30)
            return layers

        slow = images.ensure("sha256:dd", held_layers)
        assert slow is not None
        assert images.ensure("sha256:dd", held_layers) is slow  # one build, one future
        assert begun.wait(30)
        # removed before its build began: never made
        queued = images.ensure("sha256:ff", lambda: layers)
        images.forget("sha256:ff")
        assert queued is not None and queued.cancelled()
        images.forget("sha256:dd")
        gate.set()
        slow.result(timeout=120)
        assert images.ready("sha256:dd") is None
        # removed while being made and back before it was made: it is kept
        gate.clear()
        begun.clear()
        again = images.ensure("sha256:ee", held_layers)
        assert begun.wait(30)
        images.forget("sha256:ee")
        assert images.ensure("sha256:ee", held_layers) is again
        gate.set()
        again.result(timeout=120)  # type: ignore[union-attr]
        assert images.ready("sha256:ee") is not None
        assert images.ready("sha256:ff") is None
        images.forget("sha256:bb")  # a failed one may be made again if it comes back
        assert images.ensure("sha256:bb", lambda: layers) is not None
    finally:
        images.close()


def test_whiteout_stand_ins_become_whiteouts_and_nothing_else_changes(tmp_path: Path) -> None:
    """What a guest's overlay left in its 9p upper: stand-ins (empty, sticky, marked) become
    character devices 0:0; a marked file that is not empty, a FIFO's stand-in and a symlink
    stay as they are."""
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    upper = tmp_path / "upper"
    (upper / "etc" / "deep").mkdir(parents=True)

    def marked(path: Path, kind: bytes, content: str = "") -> None:
        path.write_text(content)
        os.chmod(path, 0o1000)
        os.setxattr(path, stand_ins.STAND_IN_XATTR, kind)

    marked(upper / "etc" / "gone", stand_ins.WHITEOUT)
    marked(upper / "etc" / "deep" / "gone", stand_ins.WHITEOUT)
    marked(upper / "etc" / "full", stand_ins.WHITEOUT, "data")
    marked(upper / "etc" / "pipe", b"fifo")
    (upper / "link").symlink_to("etc/gone")
    # A hostile guest's directory symlink out of the layer: nothing beyond it is touched.
    outside = tmp_path / "outside"
    outside.mkdir()
    marked(outside / "host-file", stand_ins.WHITEOUT)
    (upper / "escape").symlink_to(outside)
    assert stand_ins.realize_whiteouts(upper) == 2
    assert stat.S_ISREG((outside / "host-file").lstat().st_mode)
    for path in (upper / "etc" / "gone", upper / "etc" / "deep" / "gone"):
        st = path.lstat()
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert (upper / "etc" / "full").read_text() == "data"
    assert stat.S_ISREG((upper / "etc" / "pipe").lstat().st_mode)
    assert (upper / "link").is_symlink()
    assert stand_ins.realize_whiteouts(upper) == 0
    assert not [p for p in upper.rglob(".steelcup-*")]


def test_a_userxattr_overlays_opaque_mark_counts(tmp_path: Path) -> None:
    plain, marked = tmp_path / "plain", tmp_path / "marked"
    plain.mkdir()
    marked.mkdir()
    os.setxattr(marked, "user.overlay.opaque", b"y")
    assert not is_opaque(str(plain)) and is_opaque(str(marked))


def test_a_made_images_hot_paths_are_the_files_read_since(tmp_path: Path, mounted: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`ErofsImages.hot_paths`: nothing right after the build; then the file a guest read
    (through the host's page cache, as QEMU reads); the layout read once per image."""
    del mounted
    images = erofs.ErofsImages(tmp_path / "erofs", tmp_path / "scratch")
    try:
        images.ensure("sha256:aa", lambda: _layers(tmp_path)).result(  # type: ignore[union-attr]
            timeout=120)
        image = images.ready("sha256:aa")
        assert image is not None
        reads: list[Path] = []
        quiet = erofs.read_layout_quietly
        monkeypatch.setattr(erofs, "read_layout_quietly",
                            lambda path: reads.append(path) or quiet(path))
        assert images.hot_paths(image, 1 << 30) == []
        with open(image, "rb") as f:
            layout = erofs_files.read_layout(f)
            erofs_files.drop_cached(f.fileno())  # what that read cached
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
            up = next(file for file in layout.files if file.path == "opaque/new")
            for offset, length in up.extents:
                os.pread(f.fileno(), length, offset)
        assert "opaque/new" in images.hot_paths(image, 1 << 30)
        assert reads == [image]  # kept since
    finally:
        images.close()


def test_builds_go_waited_for_first_then_tenants_in_turn(tmp_path: Path,
                                                         mounted: Path) -> None:
    """While one build runs, alice queues three images and bob one; then a create waits for
    alice's last: it is made next, then bob's comes before alice's other two. A stop cancels
    the builds not begun."""
    del mounted
    layers = _layers(tmp_path)
    images = erofs.ErofsImages(tmp_path / "erofs", tmp_path / "scratch")
    order: list[str] = []
    gate, begun = threading.Event(), threading.Event()

    def source(name: str) -> Callable[[], list[Path]]:
        def layer_dirs() -> list[Path]:
            order.append(name)
            if name == "first":
                begun.set()
                gate.wait(30)
            return layers
        return layer_dirs

    try:
        first = images.ensure("sha256:01", source("first"), owner="carol")
        assert first is not None and begun.wait(30)
        futures = [images.ensure(f"sha256:a{i}", source(f"a{i}"), owner="alice")
                   for i in range(3)]
        futures.append(images.ensure("sha256:b0", source("b0"), owner="bob"))
        assert images.ensure("sha256:a2", source("a2"), owner="alice", urgent=True) \
            is futures[2]
        gate.set()
        for future in futures:
            assert future is not None
            future.result(timeout=120)
        assert order == ["first", "a2", "a0", "b0", "a1"]
        assert images.disk_bytes("sha256:b0") > 0 and images.disk_bytes("sha256:zz") == 0
        gate.clear()
        begun.clear()
        order.clear()
        held = images.ensure("sha256:02", source("first"))
        assert held is not None and begun.wait(30)
        queued = images.ensure("sha256:03", source("never"))
        threading.Timer(0.2, gate.set).start()
    finally:
        images.close()
    assert held.done() and not held.cancelled()
    assert queued is not None and queued.cancelled()
    assert order == ["first"]
    assert images.ensure("sha256:04", source("closed")) is None


def test_a_bug_in_one_making_leaves_the_maker_working(tmp_path: Path, mounted: Path) -> None:
    del mounted
    images = erofs.ErofsImages(tmp_path / "erofs", tmp_path / "scratch")

    def broken() -> list[Path]:
        raise RuntimeError("a bug")

    try:
        failed = images.ensure("sha256:aa", broken)
        assert failed is not None
        failed.result(timeout=60)
        assert images.ensure("sha256:aa", broken) is None  # logged, not retried
        made = images.ensure("sha256:bb", lambda: _layers(tmp_path))
        assert made is not None
        made.result(timeout=120)
        assert images.ready("sha256:bb") is not None
    finally:
        images.close()
