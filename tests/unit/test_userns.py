"""User namespaces and idmapped mounts against the real kernel (root only; skips otherwise)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from steelcup import sysmount, userns
from steelcup.idmap import IdRange

B = 1_000_000_000
IDS = IdRange(B)

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not userns.supported(),
                                reason="needs root and idmapped mounts")


@pytest.fixture
def mounted() -> Iterator[tuple[Path, Path]]:
    # not below pytest's 0700 tmp dirs: the uids of the range must reach it
    base = Path(tempfile.mkdtemp(prefix="scup-userns-"))
    base.chmod(0o755)
    src, view = base / "src", base / "view"
    src.mkdir()
    view.mkdir()
    yield src, view
    if sysmount.is_mountpoint(view):
        sysmount.umount(view, sysmount.MNT_DETACH)
    shutil.rmtree(base)


def _as(uid: int, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                           *argv], capture_output=True, text=True, timeout=30)


def test_layers_seen_through_the_qemu_map_are_the_ranges(mounted: tuple[Path, Path]) -> None:
    src, view = mounted
    (src / "f").write_text("x")
    os.chown(src / "f", 1000, 1000)
    userns.idmapped_bind(src, view, IDS.ns_map())
    assert (view.stat().st_uid, (view / "f").stat().st_uid) == (B, B + 1000)
    assert {"nosuid", "nodev"} <= _options(view)


def test_a_bind_seen_through_the_bind_map_never_makes_host_root_files(
        mounted: tuple[Path, Path]) -> None:
    src, view = mounted
    src.chmod(0o777)
    (src / "users").write_text("u")
    os.chown(src / "users", 1000, 1000)
    (src / "roots").write_text("r")
    userns.idmapped_bind(src, view, IDS.bind_map())
    assert (view / "users").stat().st_uid == B + 1000  # QEMU's 1000: the user's own id
    assert (view / "roots").stat().st_uid not in range(B, B + 65536)  # nobody to QEMU
    assert _as(B, "touch", str(view / "by-guest-root")).returncode == 0
    assert _as(B + 1000, "touch", str(view / "by-guest-user")).returncode == 0
    assert (src / "by-guest-root").stat().st_uid == B  # the guest's root: never host root
    assert (src / "by-guest-user").stat().st_uid == 1000


def test_shift_tree_restores_every_owner_and_keeps_set_id_bits(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "suid").write_text("x")
    os.chown(tree / "d" / "suid", 0, 0)
    (tree / "d" / "suid").chmod(0o4755)
    (tree / "link").symlink_to("d/suid")
    os.chown(tree / "link", 5, 5, follow_symlinks=False)
    assert userns.shift_tree(tree, None, IDS) == 4  # the root, d, suid, link
    st = (tree / "d" / "suid").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (B, B, 0o4755)
    assert (tree / "link").lstat().st_uid == B + 5
    assert userns.shift_tree(tree, IDS, None) == 4
    assert (tree / "d" / "suid").stat().st_uid == 0 and (tree / "link").lstat().st_uid == 5
    assert userns.shift_tree(tree, None, None) == 0


def _options(path: Path) -> set[str]:
    target = os.fsencode(os.path.realpath(path))
    for line in Path("/proc/self/mountinfo").read_bytes().splitlines():
        fields = line.split()
        if fields[4] == target:
            return set(fields[5].decode().split(","))
    raise AssertionError(f"{path} is not a mount point")
