"""A block-root container's start (--rootfs-cache block): its VM gets the image's erofs as
its root disk, and SETUP_ROOT says STAGED when the warm cache staged that VM for the image.
If the guest refuses the staged lower after all (it has no such mount: the host and guest
disagree), the root is set up again unstaged and the container starts. Fake VMs; the real
guest's side: tests/vm/test_guest.py, test_block_root.py."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import cast

import pytest

from steelcup.guest.protocol import RootfsCache
from steelcup.image.erofs import ErofsImages
from steelcup.runtime.containers import Defaults
from steelcup.runtime.model import ContainerConfig
from steelcup.state.db import open_db
from tests.unit.image.tarutil import make_tar
from tests.unit.runtime.fakevm import FakeMachine, FakeVms
from tests.unit.runtime.support import make_runtime
from tests.unit.runtime.test_block_root_choice import FakeErofs

pytestmark = pytest.mark.usefixtures("plain_dirs")


def _start_one(tmp_path: Path, fake: FakeVms) -> FakeMachine:
    """Create and start a container of a block daemon whose image's erofs is made; its
    machine once the main process runs (the process then exits)."""
    async def main() -> FakeMachine:
        runtime = make_runtime(tmp_path, open_db(tmp_path), vms=fake.source())
        runtime.defaults = Defaults(rootfs_cache=RootfsCache.BLOCK, storage_bytes=1 << 30)
        erofs = FakeErofs(tmp_path / "made.erofs")
        runtime.erofs = cast(ErofsImages, erofs)
        image = runtime.images.import_rootfs(io.BytesIO(make_tar([("dir", "etc")])), "app:1")
        erofs.done.add(image.id)
        try:
            record = runtime.create(ContainerConfig(image="app:1", image_id="",
                                                    cmd=("serve",)), "web")
            assert record.config.block_root
            await runtime.start(record.id)
            process = await fake.next_process()
            assert runtime.record(record.id).state.running
            process.exit(0)
        finally:
            await runtime.shutdown()
        (machine,) = fake.machines
        assert machine.request.root_disk == erofs.made
        return machine

    return asyncio.run(asyncio.wait_for(main(), 20))


def test_a_vm_staged_for_the_image_sets_up_the_root_on_its_staged_lower(
        tmp_path: Path) -> None:
    machine = _start_one(tmp_path, FakeVms(staged=True))
    assert (machine.root_cache, machine.root_staged) == (RootfsCache.BLOCK, True)


def test_a_staged_lower_the_guest_refuses_is_mounted_afresh(tmp_path: Path) -> None:
    machine = _start_one(tmp_path, FakeVms(staged=True, refuse_staged=True))
    assert (machine.root_cache, machine.root_staged) == (RootfsCache.BLOCK, False)


def test_an_unstaged_vm_mounts_the_image_itself(tmp_path: Path) -> None:
    machine = _start_one(tmp_path, FakeVms())
    assert (machine.root_cache, machine.root_staged) == (RootfsCache.BLOCK, False)
