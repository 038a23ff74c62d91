"""Which containers get a block root (--rootfs-cache block): an image's erofs is started when
a tenant gets the image (import here; pull, load, build and commit alike), so a container
created once it is made has a block root; one created before keeps a 9p root and starts the
making if nothing did; a removed image's goes with it. Pods, checkpointable containers and
host-directory roots never do. The erofs maker is a stand-in (its real builds:
tests/unit/image/test_erofs.py)."""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import cast

from steelcup.guest.protocol import RootfsCache
from steelcup.image.erofs import ErofsImages
from steelcup.runtime.containers import Defaults, Runtime
from steelcup.runtime.model import ContainerConfig
from steelcup.state.db import open_db
from tests.unit.image.tarutil import make_tar
from tests.unit.runtime.support import make_runtime


class FakeErofs:
    """What the runtime asks of `ErofsImages`: which images it was asked to make."""

    def __init__(self, made: Path) -> None:
        self.made = made
        self.asked: list[str] = []
        self.done: set[str] = set()
        self.forgotten: list[str] = []

    def ready(self, image_id: str) -> Path | None:
        return self.made if image_id in self.done else None

    def ensure(self, image_id: str, layer_dirs: Callable[[], list[Path]]) -> Future[None] | None:
        assert layer_dirs(), "the maker gets the image's layer directories"
        self.asked.append(image_id)
        return None

    def forget(self, image_id: str) -> None:
        self.forgotten.append(image_id)


def _block_runtime(tmp_path: Path) -> tuple[Runtime, FakeErofs]:
    runtime = make_runtime(tmp_path, open_db(tmp_path))
    runtime.defaults = Defaults(rootfs_cache=RootfsCache.BLOCK)
    erofs = FakeErofs(tmp_path / "made.erofs")
    runtime.erofs = cast(ErofsImages, erofs)
    runtime.images.on_added = runtime.image_added  # as the daemon wires them
    runtime.images.on_deleted = erofs.forget
    return runtime, erofs


def _config(**changes: object) -> ContainerConfig:
    return ContainerConfig(image="app:1", image_id="", cmd=("true",), **changes)  # type: ignore[arg-type]


def test_an_images_erofs_is_started_when_it_arrives(tmp_path: Path) -> None:
    runtime, erofs = _block_runtime(tmp_path)
    image = runtime.images.import_rootfs(io.BytesIO(make_tar([("dir", "etc")])), "app:1")
    assert erofs.asked == [image.id]
    # not made yet: the container keeps a 9p root, and asks again (the maker dedupes)
    assert not runtime.create(_config(), "early").config.block_root
    assert erofs.asked == [image.id, image.id]
    erofs.done.add(image.id)
    assert runtime.create(_config(), "later").config.block_root
    assert not runtime.create(_config(checkpointable=True), "ram").config.block_root


def test_a_daemon_in_another_mode_makes_no_erofs(tmp_path: Path) -> None:
    runtime, erofs = _block_runtime(tmp_path)
    runtime.defaults = Defaults(rootfs_cache=RootfsCache.LOOSE)
    runtime.images.import_rootfs(io.BytesIO(make_tar([("dir", "etc")])), "app:1")
    assert erofs.asked == []
    assert not runtime.create(_config(), "loose").config.block_root


def test_a_removed_images_erofs_goes_with_it(tmp_path: Path) -> None:
    runtime, erofs = _block_runtime(tmp_path)
    image = runtime.images.import_rootfs(io.BytesIO(make_tar([("dir", "etc")])), "app:1")
    runtime.images.remove("app:1")
    assert erofs.forgotten == [image.id]
