"""What --read-only, --shm-size and --link make a start ask of the guest (fake VM source)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from steelcup.errors import Conflict, InvalidArgument
from steelcup.guest.protocol import Tag
from steelcup.runtime.containers import Runtime
from steelcup.runtime.model import ContainerConfig, ContainerRecord
from steelcup.runtime.resources import Resources
from steelcup.state.db import open_db
from steelcup.volume.manager import VolumeManager
from tests.unit.runtime.fakevm import FakeMachine, FakeVms
from tests.unit.runtime.support import make_runtime

pytestmark = pytest.mark.usefixtures("plain_dirs")  # conftest: roots are plain dirs


def run(tmp_path: Path, body: Callable[[Runtime, FakeVms], Awaitable[None]]) -> None:
    async def main() -> None:
        fake = FakeVms()
        resources = Resources(volumes=VolumeManager(tmp_path / "vol"))  # tmpfs mounts only
        runtime = make_runtime(tmp_path, open_db(tmp_path), resources, fake.source())
        try:
            await asyncio.wait_for(body(runtime, fake), 20)
        finally:
            await runtime.shutdown()

    asyncio.run(main())


def create(runtime: Runtime, name: str, **changes: Any) -> ContainerRecord:
    return runtime.create(ContainerConfig(image="base:1", image_id="", cmd=("serve",),
                                          **changes), name)


def _mounts(machine: FakeMachine) -> list[dict[Tag, object]]:
    return [dict(fields) for fields in machine.mounts]  # type: ignore[call-overload]


def test_read_only_reaches_setup_root(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms) -> None:
        await runtime.start(create(runtime, "ro", read_only=True).id)
        await runtime.start(create(runtime, "rw").id)
        assert [m.root_readonly for m in vms.machines] == [True, False]

    run(tmp_path, body)


def test_shm_size_is_a_tmpfs_on_dev_shm_before_the_containers_own_mounts(
    tmp_path: Path
) -> None:
    async def body(runtime: Runtime, vms: FakeVms) -> None:
        await runtime.start(create(runtime, "shm", shm_size_bytes=128 << 20,
                                   tmpfs=(("/run", ""),)).id)
        await runtime.start(create(runtime, "plain").id)
        first, second = vms.machines
        mounts = _mounts(first)
        assert mounts[0] == {Tag.FSTYPE: "tmpfs", Tag.TARGET: "/dev/shm",
                             Tag.OPTIONS: f"size={128 << 20},mode=1777", Tag.READONLY: 0}
        assert [m[Tag.TARGET] for m in mounts] == ["/dev/shm", "/run"]
        assert _mounts(second) == []

    run(tmp_path, body)


def test_a_read_only_root_gets_its_mount_points_from_the_host(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms) -> None:
        record = create(runtime, "ro", read_only=True, tmpfs=(("/scratch/deep", ""),))
        await runtime.start(record.id)
        assert (runtime.container_dir(record.id) / "rootfs" / "scratch" / "deep").is_dir()

    run(tmp_path, body)


def test_a_link_to_a_missing_container_is_refused_at_create(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms) -> None:
        with pytest.raises(InvalidArgument, match="could not get container for nope: No such "
                                                  "container: nope"):
            create(runtime, "web", links=(("nope", "db"),))
        assert runtime.list() == []

    run(tmp_path, body)


def test_a_link_to_a_stopped_container_fails_the_start(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms) -> None:
        create(runtime, "db")
        web = create(runtime, "web", links=(("db", "database"),))
        with pytest.raises(Conflict, match="Cannot link to a non running container: /db AS "
                                           "/web/database"):
            await runtime.start(web.id)
        assert runtime.record("web").state.error.startswith("Cannot link to a non running")
        assert vms.machines == []  # refused before a VM was asked for

    run(tmp_path, body)


def test_sysctls_ulimits_and_pids_limit_reach_the_guest(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms) -> None:
        record = create(runtime, "lim", sysctls=(("kernel.shmmni", "8192"),
                                                 ("net.core.somaxconn", "1024")),
                        ulimits=(("nofile", 1024, 2048), ("core", -1, -1)), pids_limit=50)
        await runtime.start(record.id)
        await runtime.start(create(runtime, "plain").id)
        limited, plain = vms.machines
        assert limited.pids_max == 50 and plain.pids_max == 0
        assert limited.sysctls == ["kernel.shmmni=8192", "net.core.somaxconn=1024"]
        assert plain.sysctls == []
        main = limited.processes[0].spec
        assert main.rlimits == ("nofile=1024:2048", "core=-1:-1")
        assert plain.processes[0].spec.rlimits == ()

    run(tmp_path, body)
