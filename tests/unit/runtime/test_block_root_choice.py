"""Which containers get a block root (--rootfs-cache block): an image's erofs is started when
a tenant gets the image (import here; pull, load, build and commit alike), so a container
created once it is made has a block root; the API's create waits (bounded) for one being made;
one created before keeps a 9p root and starts the making if nothing did (but a build step's);
a removed image's goes with it. Pods, checkpointable containers and
host-directory roots never do. The erofs maker is a stand-in (its real builds:
tests/unit/image/test_erofs.py)."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import cast

from steelcup.guest.protocol import RootfsCache
from steelcup.image.erofs import ErofsImages
from steelcup.runtime.containers import Defaults, Runtime
from steelcup.runtime.model import BUILD_STEP_LABEL, ContainerConfig
from steelcup.state.db import open_db
from tests.unit.image.tarutil import make_tar
from tests.unit.runtime.support import make_runtime


class FakeErofs:
    """What the runtime asks of `ErofsImages`: which images it was asked to make."""

    def __init__(self, made: Path) -> None:
        self.made = made
        self.asked: list[str] = []
        self.asked_by: list[tuple[str, bool]] = []  # (owner, urgent) of each ask
        self.done: set[str] = set()
        self.forgotten: list[str] = []
        self.building: dict[str, Future[None]] = {}

    def ready(self, image_id: str) -> Path | None:
        return self.made if image_id in self.done else None

    def ensure(self, image_id: str, layer_dirs: Callable[[], list[Path]], *, owner: str = "",
               urgent: bool = False) -> Future[None] | None:
        assert layer_dirs(), "the maker gets the image's layer directories"
        self.asked.append(image_id)
        self.asked_by.append((owner, urgent))
        if image_id in self.done:
            return None
        return self.building.setdefault(image_id, Future())

    def finish(self, image_id: str) -> None:
        """The build of `image_id` ends, made."""
        self.done.add(image_id)
        self.building.pop(image_id).set_result(None)

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


def test_a_create_waits_for_the_erofs_being_made_and_gets_a_block_root(tmp_path: Path) -> None:
    """The image's first container right after its import: the create waits for the build
    under way (here one that ends 0.2 s later, in another thread) and has a block root."""
    runtime, erofs = _block_runtime(tmp_path)
    image = runtime.images.import_rootfs(io.BytesIO(make_tar([("dir", "etc")])), "app:1")
    threading.Timer(0.2, erofs.finish, (image.id,)).start()
    began = time.monotonic()
    asyncio.run(runtime.wait_for_root_disk(_config(), timeout_s=30))
    assert time.monotonic() - began < 20, "returned when the build ended, not at the bound"
    assert runtime.create(_config(), "first").config.block_root
    asyncio.run(runtime.wait_for_root_disk(_config(), timeout_s=30))  # made: at once


def test_builds_are_queued_for_their_tenant_and_a_waited_for_one_is_urgent(
        tmp_path: Path) -> None:
    """The maker is told whose image it makes (it takes tenants in turn) and that a create
    waits for it (it goes first); a create that does not wait does not hurry it."""
    runtime, erofs = _block_runtime(tmp_path)
    image = runtime.images.import_rootfs(io.BytesIO(make_tar([("dir", "etc")])), "app:1",
                                         tenant="alice")
    assert erofs.asked_by == [("alice", False)]
    mine = _config(tenant="alice")
    asyncio.run(runtime.wait_for_root_disk(mine, timeout_s=0.05))
    assert erofs.asked_by[-1] == ("alice", True)
    assert not runtime.create(mine, "early").config.block_root
    assert erofs.asked_by[-1] == ("alice", False)
    erofs.finish(image.id)


def test_a_daemon_new_to_block_roots_queues_the_images_it_had(tmp_path: Path) -> None:
    """An upgrade from loose roots: the images the daemon had are queued at its start, in
    the operator's line; a made one is not made again."""
    runtime, erofs = _block_runtime(tmp_path)
    runtime.defaults = Defaults(rootfs_cache=RootfsCache.LOOSE)
    runtime.queue_root_disks()
    ids = [runtime.images.import_rootfs(io.BytesIO(make_tar([("dir", name)])), f"{name}:1",
                                        tenant=name).id for name in ("alice", "bob")]
    assert erofs.asked == []
    runtime.defaults = Defaults(rootfs_cache=RootfsCache.BLOCK)
    erofs.done.add(ids[1])
    runtime.queue_root_disks()
    every = {image.id for image in runtime.images.list()}
    assert set(ids) <= every and sorted(erofs.asked) == sorted(every)
    assert set(erofs.asked_by) == {("", False)}
    assert set(erofs.building) == every - {ids[1]}


def test_a_create_waits_no_longer_than_its_bound_and_the_build_goes_on(tmp_path: Path) -> None:
    runtime, erofs = _block_runtime(tmp_path)
    image = runtime.images.import_rootfs(io.BytesIO(make_tar([("dir", "etc")])), "app:1")
    asyncio.run(runtime.wait_for_root_disk(_config(), timeout_s=0.05))
    building = erofs.building[image.id]
    assert not building.cancelled(), "the wait's end leaves the build alone"
    assert not runtime.create(_config(), "early").config.block_root
    erofs.finish(image.id)
    assert runtime.create(_config(), "later").config.block_root


def test_a_create_with_nothing_to_wait_for_does_not_start_a_build(tmp_path: Path) -> None:
    """Unknown image (create says so), a checkpointable container, a daemon in another mode:
    nothing is made or waited for."""
    runtime, erofs = _block_runtime(tmp_path)
    missing = ContainerConfig(image="missing:1", image_id="", cmd=("true",))
    asyncio.run(runtime.wait_for_root_disk(missing, timeout_s=30))
    runtime.images.import_rootfs(io.BytesIO(make_tar([("dir", "etc")])), "app:1")
    asked = list(erofs.asked)
    asyncio.run(runtime.wait_for_root_disk(_config(checkpointable=True), timeout_s=30))
    runtime.defaults = Defaults(rootfs_cache=RootfsCache.LOOSE)
    asyncio.run(runtime.wait_for_root_disk(_config(), timeout_s=30))
    assert erofs.asked == asked


def test_a_build_steps_container_makes_no_erofs_of_its_image(tmp_path: Path) -> None:
    """A build step's image is most often an intermediate one: its container stays on 9p
    and starts no making."""
    runtime, erofs = _block_runtime(tmp_path)
    image = runtime.images.import_rootfs(io.BytesIO(make_tar([("dir", "etc")])), "app:1")
    asked = list(erofs.asked)
    step = runtime.create(_config(labels=(BUILD_STEP_LABEL,)), None)
    assert not step.config.block_root and erofs.asked == asked
    erofs.finish(image.id)  # a made one serves a step's container too
    assert runtime.create(_config(labels=(BUILD_STEP_LABEL,)), None).config.block_root
