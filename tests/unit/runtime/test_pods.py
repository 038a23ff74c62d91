"""Pods in one VM (HostConfig.SteelcupPodSandbox / SteelcupPodOf): a member runs in its
sandbox's VM as a further container, with its root bound into the sandbox's share; it ends
with the sandbox, its root goes when it ends; only the operator may make pods (fake VMs)."""

from __future__ import annotations

import asyncio
import shutil
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from steelcup import sysmount
from steelcup.api import docker_codec as codec
from steelcup.errors import Conflict, Forbidden, InvalidArgument
from steelcup.guest.client import ProcessSpec
from steelcup.guest.protocol import Tag
from steelcup.image import rootfs
from steelcup.runtime.containers import POD_DIR, POD_TAG, Runtime
from steelcup.runtime.lifecycle import Op
from steelcup.runtime.model import ContainerConfig, ContainerRecord, Status
from steelcup.runtime.resources import Resources
from steelcup.state.db import open_db
from steelcup.volume.manager import VolumeManager
from tests.unit.runtime.fakevm import FakeVms
from tests.unit.runtime.support import make_runtime

Binds = dict[Path, Path]


@pytest.fixture
def binds(monkeypatch: pytest.MonkeyPatch) -> Iterator[Binds]:
    """Plain directories as roots; binds recorded (target -> source) instead of made."""
    made: Binds = {}

    def prepare(layers: Any, cdir: Path, disks: Any = None, size_bytes: int = 0,
                ids: Any = None) -> Path:
        (cdir / "rootfs").mkdir(exist_ok=True)
        return cdir / "rootfs"

    def unmount(path: Path, flags: int = 0) -> None:
        if made.pop(path, None) is None:
            raise OSError(22, "not a mount point")

    monkeypatch.setattr(rootfs, "prepare", prepare)
    monkeypatch.setattr(rootfs, "release", lambda cdir: None)
    monkeypatch.setattr(rootfs, "remove", lambda cdir: shutil.rmtree(cdir, ignore_errors=True))
    monkeypatch.setattr(sysmount, "bind", lambda source, target: made.__setitem__(target, source))
    monkeypatch.setattr(sysmount, "umount", unmount)
    yield made


def run(tmp_path: Path, body: Callable[[Runtime, FakeVms], Awaitable[None]]) -> None:
    async def main() -> None:
        fake = FakeVms()
        resources = Resources(volumes=VolumeManager(tmp_path / "vol"))
        runtime = make_runtime(tmp_path, open_db(tmp_path), resources, fake.source())
        try:
            await asyncio.wait_for(body(runtime, fake), 20)
        finally:
            await runtime.shutdown()

    asyncio.run(main())


def create(runtime: Runtime, name: str, **changes: Any) -> ContainerRecord:
    return runtime.create(ContainerConfig(image="base:1", image_id="", cmd=("serve",),
                                          network_mode="none", **changes), name)


def test_members_run_in_the_sandboxs_vm_each_as_its_own_container(
        tmp_path: Path, binds: Binds) -> None:
    async def body(runtime: Runtime, vms: FakeVms) -> None:
        sandbox = create(runtime, "infra", pod_sandbox=True)
        await runtime.start(sandbox.id)
        (vm,) = vms.machines
        pod = runtime.container_dir(sandbox.id) / POD_DIR
        share = [s for s in vm.request.shares if s.tag == POD_TAG]
        assert [(s.host_path, s.remap_devices) for s in share] == [(pod, True)]
        infra = await vms.next_process()
        web = create(runtime, "web", pod_of="infra", read_only=True, shm_size_bytes=1 << 20)
        assert web.config.pod_of == sandbox.id  # the full id, whatever named it
        await runtime.start(web.id)
        client = create(runtime, "client", pod_of=sandbox.id[:12])
        await runtime.start(client.id)
        assert len(vms.machines) == 1  # no VM of their own
        web_main, client_main = await vms.next_process(), await vms.next_process()
        assert (web_main.spec.container, client_main.spec.container) == (1, 2)
        assert infra.spec.container == 0
        assert vm.member_roots == [(1, POD_TAG, web.id, True), (2, POD_TAG, client.id, False)]
        assert binds == {pod / web.id: runtime.container_dir(web.id) / "rootfs",
                         pod / client.id: runtime.container_dir(client.id) / "rootfs"}
        shm = [dict(fields) for fields in vm.mounts]  # type: ignore[call-overload]
        assert [(m[Tag.TARGET], m[Tag.CONTAINER]) for m in shm] == [("/dev/shm", 1)]
        # an exec joins the member's namespaces, not the sandbox's
        await runtime.start_in(client.id, Op.EXEC, ProcessSpec(args=("sh",)))
        assert (await vms.next_process()).spec.container == 2
        # each exit is its own, and frees the member's root in the share
        web_main.exit(3)
        assert await runtime.waiter(web.id) == 3
        assert runtime.record(client.id).state.status is Status.RUNNING
        assert pod / web.id not in binds and not (pod / web.id).exists()
        assert not vm.closed
        # stopping the sandbox stops the VM and, with it, every member
        await runtime.stop(sandbox.id, timeout_s=0)
        assert vm.closed
        assert await runtime.waiter(client.id) == 128 + signal.SIGKILL
        assert runtime.record(client.id).state.error == ""
        assert binds == {}

    run(tmp_path, body)


def test_a_member_needs_its_sandbox_running_and_no_vm_devices_of_its_own(
        tmp_path: Path, binds: Binds) -> None:
    async def body(runtime: Runtime, vms: FakeVms) -> None:
        sandbox = create(runtime, "infra", pod_sandbox=True)
        member = create(runtime, "web", pod_of="infra")
        with pytest.raises(Conflict, match="sandbox container .* is not running"):
            await runtime.start(member.id)
        assert vms.machines == [] and binds == {}
        await runtime.start(sandbox.id)
        with_bind = create(runtime, "data", pod_of="infra",
                           binds=(f"{tmp_path}:/data",))
        with pytest.raises(InvalidArgument, match="volumes or bind mounts"):
            await runtime.start(with_bind.id)
        assert binds == {} and len(vms.machines) == 1 and not vms.machines[0].closed
        await runtime.start(member.id)
        with pytest.raises(Conflict, match="pause the pod's sandbox"):
            await runtime.pause(member.id)

    run(tmp_path, body)


def test_what_a_member_may_name_is_checked_at_create(tmp_path: Path, binds: Binds) -> None:
    runtime = make_runtime(tmp_path, open_db(tmp_path))
    plain = create(runtime, "plain")
    with pytest.raises(InvalidArgument, match="does not exist"):
        create(runtime, "m1", pod_of="nothing")
    with pytest.raises(InvalidArgument, match="not a pod sandbox"):
        create(runtime, "m2", pod_of=plain.id)
    create(runtime, "infra", pod_sandbox=True)
    with pytest.raises(InvalidArgument, match="sandbox or a member"):
        create(runtime, "m3", pod_of="infra", pod_sandbox=True)
    with pytest.raises(InvalidArgument, match="shares its sandbox's network"):
        create(runtime, "m4", pod_of="infra", port_bindings='{"80/tcp": [{"HostPort": "8080"}]}')
    for changes in ({"pod_sandbox": True}, {"pod_of": "infra"}):
        with pytest.raises(Forbidden, match="operator only"):
            create(runtime, "t", tenant="acme", **changes)
    assert sorted(r.name for r in runtime.list()) == ["infra", "plain"]


def test_the_codec_takes_the_pod_fields_and_shows_them() -> None:
    config = codec.decode_create({"Image": "x", "HostConfig": {"SteelcupPodSandbox": True}})
    assert config.pod_sandbox and not config.pod_of
    config = codec.decode_create({"Image": "x", "HostConfig": {"SteelcupPodOf": "abc"}})
    assert config.pod_of == "abc" and not config.pod_sandbox
    with pytest.raises(InvalidArgument, match="SteelcupPodOf"):
        codec.decode_create({"Image": "x", "HostConfig": {"SteelcupPodOf": 3}})


def test_a_sandboxs_removal_and_recovery_never_leave_a_members_root_bound(
        tmp_path: Path, binds: Binds) -> None:
    from steelcup.runtime import containers

    sandbox_dir = tmp_path / "sandbox"
    (sandbox_dir / POD_DIR / "m1").mkdir(parents=True)
    binds[sandbox_dir / POD_DIR / "m1"] = tmp_path / "member-root"
    containers._unbind_members_of(sandbox_dir)
    assert binds == {} and list((sandbox_dir / POD_DIR).iterdir()) == []
    containers._unbind_members_of(tmp_path / "plain")  # no share: nothing to do
    # a daemon that died with a member bound: the next one unbinds it before anything else
    db = open_db(tmp_path)
    runtime = make_runtime(tmp_path, db)
    record = create(runtime, "infra", pod_sandbox=True)
    left = runtime.container_dir(record.id) / POD_DIR / "m2"
    left.mkdir(parents=True)
    binds[left] = tmp_path / "member-root"
    make_runtime(tmp_path, db).recover()
    assert binds == {} and not left.exists()
