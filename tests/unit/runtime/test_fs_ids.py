"""A container whose files are stored with a VM id range (steelcup.idmap): the overlay shows
the image's files as the range's, and diff, export, commit and cp speak guest ids. Real
overlay and idmapped mounts (root needed; skips otherwise)."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from steelcup import sysmount, userns
from steelcup.idmap import IdRange
from steelcup.image import rootfs
from steelcup.image.config import ImageConfig
from steelcup.image.store import ImageStore
from steelcup.pool.source import VmSource
from steelcup.runtime import fs_archive, fs_changes, fs_commit, fs_paths
from steelcup.runtime.containers import Defaults, Runtime
from steelcup.runtime.events import EventBus
from steelcup.runtime.model import ContainerConfig
from steelcup.runtime.store import ContainerStore
from steelcup.state.db import open_db
from tests.unit.runtime.test_filesystem import BASE, _can_mount, _make_tar, _tar_names

B = 1_000_000_000
IDS = IdRange(B)


@dataclass
class Env:
    images: ImageStore
    runtime: Runtime

    def create(self, name: str) -> str:
        return self.runtime.create(ContainerConfig(image="base:1", image_id="",
                                                   cmd=("/bin/sh",)), name).id


@pytest.fixture
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if (os.geteuid() != 0 or not _can_mount(tmp_path_factory.mktemp("probe"))
            or not userns.supported()):
        pytest.skip("needs root, overlayfs and idmapped mounts")
    tmp = tmp_path_factory.mktemp("fsids")
    db = open_db(tmp)
    images = ImageStore(tmp / "images", db)
    images.import_rootfs(io.BytesIO(BASE), "base:1", ImageConfig(env=("PATH=/bin",)))
    runtime = Runtime(tmp / "rt", ContainerStore(db), images, cast(VmSource, None),
                      EventBus(), Defaults(ids=IDS))
    yield Env(images, runtime)
    for cdir in (tmp / "rt" / "containers").iterdir():
        rootfs.release(cdir)
    images.close()


def _guest_session(root: Path) -> None:
    """What the guest's root and its uid 1000 would leave (files stored as the range's)."""
    (root / "tmp/x").write_text("new")
    os.chown(root / "tmp/x", B + 1000, B + 1000)
    with open(root / "etc/passwd", "a") as f:
        f.write("app:x:1000:1000\n")
    os.chown(root / "var", B, B)  # a guest chown to its own root: no change in guest ids


def test_the_image_shows_as_the_ranges_and_tools_speak_guest_ids(env: Env) -> None:
    cid = env.create("c1")
    cdir = env.runtime.container_dir(cid)
    root = env.runtime.prepare_rootfs(env.runtime.record(cid))
    assert root.stat().st_uid == B and (root / "etc/passwd").stat().st_uid == B
    assert rootfs.ids_of(cdir) == IDS
    _guest_session(root)
    assert (rootfs.upper_dir(cdir) / "etc/passwd").stat().st_uid == B  # stored shifted
    rootfs.release(cdir)

    changes = asyncio.run(fs_changes.container_changes(env.runtime, "c1"))
    assert [c.path for c in changes] == ["/etc", "/etc/passwd", "/tmp", "/tmp/x"]  # not /var

    async def export() -> bytes:
        async with fs_paths.mounted_root(env.runtime, "c1") as root_fd:
            out = io.BytesIO()
            fs_commit.write_export(root_fd, out, fs_paths.stored_ids(env.runtime, cid))
            return out.getvalue()

    names = _tar_names(asyncio.run(export()))
    assert (names["etc/hosts"].uid, names["etc/passwd"].uid, names["tmp/x"].uid) == (0, 0, 1000)

    image = asyncio.run(fs_commit.commit(env.runtime, "c1", repo_tag="c:1",
                                         spool_dir=cdir.parent / "spool"))
    row = env.images._db.execute("SELECT blob_digest FROM image_layers WHERE diff_id = ?",
                                 (image.diff_ids[-1],)).fetchone()
    layer = _tar_names(env.images.blob_path(row[0]).read_bytes())
    assert (layer["tmp/x"].uid, layer["tmp/x"].gid, layer["etc/passwd"].uid) == (1000, 1000, 0)


def test_cp_in_stores_the_ranges_ids_and_cp_out_gives_guest_ids(env: Env) -> None:
    cid = env.create("c1")
    cdir = env.runtime.container_dir(cid)

    async def put(data: bytes, copy_uid_gid: bool) -> None:
        async with fs_paths.mounted_tree(env.runtime, "c1") as tree:
            fs_archive.extract_archive(tree, "/tmp", io.BytesIO(data), "c1",
                                       copy_uid_gid=copy_uid_gid)

    async def get(path: str) -> dict[str, tarfile.TarInfo]:
        async with fs_paths.mounted_tree(env.runtime, "c1") as tree:
            out = io.BytesIO()
            fs_archive.write_archive(tree, fs_archive.locate(tree, path, "c1"), out)
            return _tar_names(out.getvalue())

    plain = _make_tar([("file", "plain", b"p")])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("owned")
        info.uid = info.gid = 1000
        tar.addfile(info, io.BytesIO(b""))
    asyncio.run(put(plain, False))
    asyncio.run(put(buf.getvalue(), True))
    upper = rootfs.mount_layer(cdir)
    assert (upper / "tmp/plain").stat().st_uid == B  # docker cp: root's, the guest's root
    assert (upper / "tmp/owned").stat().st_uid == B + 1000
    rootfs.release(cdir)
    got = asyncio.run(get("/tmp"))
    assert (got["tmp/plain"].uid, got["tmp/owned"].uid) == (0, 1000)


def test_a_container_made_without_a_range_is_shifted_into_it(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.mkdir()
    if os.geteuid() != 0 or not _can_mount(probe) or not userns.supported():
        pytest.skip("needs root, overlayfs and idmapped mounts")
    layer = tmp_path / "layer"
    (layer / "etc").mkdir(parents=True)
    cdir = tmp_path / "c"
    try:
        root = rootfs.prepare([layer], cdir)  # as an older daemon: guest ids as they are
        (root / "etc/f").write_text("x")
        os.chown(root / "etc/f", 1000, 1000)
        rootfs.release(cdir)
        assert rootfs.ids_of(cdir) is None
        view = tmp_path / "view"
        view.mkdir()
        userns.idmapped_bind(layer, view, IDS.ns_map())
        root = rootfs.prepare([view], cdir, ids=IDS)
        assert (root / "etc/f").stat().st_uid == B + 1000
        assert rootfs.ids_of(cdir) == IDS
    finally:
        rootfs.release(cdir)
        if sysmount.is_mountpoint(tmp_path / "view"):
            sysmount.umount(tmp_path / "view", sysmount.MNT_DETACH)
