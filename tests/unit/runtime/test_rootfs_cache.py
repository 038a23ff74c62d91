"""--rootfs-cache: SETUP_ROOT gets the daemon's cache mode, and with loose the host syncs the
guest's root before its own access (cp, diff, commit, export) and drops the guest's caches
after a cp that may have written (fake VM source)."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from steelcup.errors import InvalidArgument
from steelcup.guest.client import GuestRequestError
from steelcup.guest.protocol import RootfsCache
from steelcup.runtime.containers import Defaults, Runtime
from steelcup.runtime.lifecycle import Op
from steelcup.runtime.model import ContainerConfig, ContainerRecord
from steelcup.state.db import open_db
from tests.unit.runtime.fakevm import FakeVms
from tests.unit.runtime.support import make_runtime

pytestmark = pytest.mark.usefixtures("plain_dirs")  # conftest: roots are plain dirs


def run(tmp_path: Path, cache: RootfsCache,
        body: Callable[[Runtime, FakeVms], Awaitable[None]]) -> None:
    async def main() -> None:
        fake = FakeVms()
        runtime = make_runtime(tmp_path, open_db(tmp_path), vms=fake.source())
        runtime.defaults = Defaults(rootfs_cache=cache)
        try:
            await asyncio.wait_for(body(runtime, fake), 20)
        finally:
            await runtime.shutdown()

    asyncio.run(main())


def create(runtime: Runtime, name: str) -> ContainerRecord:
    return runtime.create(ContainerConfig(image="base:1", image_id="", cmd=("serve",)), name)


async def hold(runtime: Runtime, ref: str, op: Op) -> None:
    async with runtime.holding_files(ref, op):
        pass


def test_loose_reaches_setup_root_and_syncs_around_file_access(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms) -> None:
        record = create(runtime, "web")
        await runtime.start(record.id)
        machine = vms.machines[0]
        assert machine.root_cache is RootfsCache.LOOSE
        await hold(runtime, record.id, Op.FILES)  # cp in or out: sync, then drop
        assert machine.syncs == [False, True]
        await hold(runtime, record.id, Op.EXPORT)  # reads only: sync
        await hold(runtime, record.id, Op.COMMIT)
        assert machine.syncs == [False, True, False, False]

    run(tmp_path, RootfsCache.LOOSE, body)


def test_none_never_asks_the_guest_to_sync(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms) -> None:
        record = create(runtime, "web")
        await runtime.start(record.id)
        await hold(runtime, record.id, Op.FILES)
        assert vms.machines[0].root_cache is RootfsCache.NONE
        assert vms.machines[0].syncs == []

    run(tmp_path, RootfsCache.NONE, body)


def test_a_paused_or_failing_guest_does_not_block_file_access(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms) -> None:
        record = create(runtime, "web")
        await runtime.start(record.id)
        machine = vms.machines[0]
        await runtime.pause(record.id)
        await hold(runtime, record.id, Op.FILES)  # a paused guest cannot answer
        assert machine.syncs == []
        await runtime.unpause(record.id)
        machine.sync_error = GuestRequestError("guest SYNC_ROOT failed: EIO",
                                               errno_value=errno.EIO)
        await hold(runtime, record.id, Op.FILES)  # logged; the access goes on

    run(tmp_path, RootfsCache.LOOSE, body)


def test_cache_mode_names() -> None:
    assert RootfsCache.from_name("loose") is RootfsCache.LOOSE
    assert RootfsCache.from_name("none") is RootfsCache.NONE
    assert RootfsCache.from_name("block") is RootfsCache.BLOCK
    with pytest.raises(InvalidArgument, match="none, loose or block"):
        RootfsCache.from_name("mmap")
