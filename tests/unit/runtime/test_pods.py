"""Pods in one VM (HostConfig.SteelcupPodSandbox / SteelcupPodOf): a member runs in its
sandbox's VM as a further container, with its root bound into the sandbox's share; it ends
with the sandbox, its root goes when it ends; only the operator may make pods (fake VMs)."""

from __future__ import annotations

import asyncio
import os
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
                ids: Any = None, guest_overlay: bool = False) -> Path:
        (cdir / "rootfs").mkdir(exist_ok=True)
        return cdir / "rootfs"

    def unmount(path: Path, flags: int = 0) -> None:
        if flags & sysmount.UMOUNT_NOFOLLOW:  # as umount2: the last component is not followed
            path = Path(os.path.realpath(path.parent)) / path.name
        elif str(path).startswith("/proc/self/fd/"):  # by a dir's fd: the path it names
            path = Path(os.path.realpath(path))
        if made.pop(path, None) is None:
            raise OSError(22, "not a mount point")

    monkeypatch.setattr(rootfs, "prepare", prepare)
    monkeypatch.setattr(rootfs, "release", lambda cdir: None)
    monkeypatch.setattr(rootfs, "remove", lambda cdir: shutil.rmtree(cdir, ignore_errors=True))
    def bind_at(source: Path, dir_fd: int, name: str, **_flags: bool) -> None:
        made[Path(os.readlink(f"/proc/self/fd/{dir_fd}")) / name] = source

    monkeypatch.setattr(sysmount, "bind",
                        lambda source, target, **_flags: made.__setitem__(target, source))
    monkeypatch.setattr(sysmount, "bind_at", bind_at)
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


def test_a_member_needs_its_sandbox_running(tmp_path: Path, binds: Binds) -> None:
    async def body(runtime: Runtime, vms: FakeVms) -> None:
        sandbox = create(runtime, "infra", pod_sandbox=True)
        member = create(runtime, "web", pod_of="infra")
        with pytest.raises(Conflict, match="sandbox container .* is not running"):
            await runtime.start(member.id)
        assert vms.machines == [] and binds == {}
        await runtime.start(sandbox.id)
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
    mounts = sandbox_dir / POD_DIR / "m1.mounts"
    (mounts / "0").mkdir(parents=True)
    (mounts / "1").write_text("")
    binds[mounts / "0"] = tmp_path / "a-volume"
    binds[mounts / "1"] = tmp_path / "a-file"
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


def test_a_members_binds_and_volumes_are_bound_into_the_pod_share_and_go_with_it(
        tmp_path: Path, binds: Binds) -> None:
    """The kubelet's mounts: a directory read-only, a single file, a volume and a tmpfs; each
    source is bound at pod/<id>.mounts/<n> on the host and the guest binds it from there."""
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("t")
    log = tmp_path / "termination-log"
    log.write_text("")

    async def body(runtime: Runtime, vms: FakeVms) -> None:
        sandbox = create(runtime, "infra", pod_sandbox=True)
        await runtime.start(sandbox.id)
        (vm,) = vms.machines
        await vms.next_process()
        member = create(runtime, "app", pod_of="infra",
                        binds=(f"{sa}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
                               f"{log}:/dev/termination-log", "cache:/cache"),
                        tmpfs=(("/scratch", ""),))
        await runtime.start(member.id)
        main = await vms.next_process()
        assert len(vms.machines) == 1 and main.spec.container == 1
        pod = runtime.container_dir(sandbox.id) / POD_DIR
        mdir = pod / f"{member.id}.mounts"
        sent = [dict(fields) for fields in vm.mounts]  # type: ignore[call-overload]
        by_target = {m[Tag.TARGET]: m for m in sent}
        assert {m[Tag.CONTAINER] for m in sent} == {1}
        token = by_target["/var/run/secrets/kubernetes.io/serviceaccount"]
        assert (token[Tag.FSTYPE], token[Tag.SOURCE], token[Tag.READONLY]) == ("bind", POD_TAG, 1)
        term = by_target["/dev/termination-log"]
        assert (term[Tag.FSTYPE], term[Tag.READONLY]) == ("bind", 0)
        assert by_target["/scratch"][Tag.FSTYPE] == "tmpfs"
        bound = {mdir / m[Tag.SUBDIR].split("/", 1)[1]: m[Tag.TARGET] for m in sent
                 if m[Tag.FSTYPE] == "bind"}
        assert all(m[Tag.SUBDIR].startswith(f"{member.id}.mounts/") for m in sent
                   if m[Tag.FSTYPE] == "bind")
        assert len(bound) == 3 and set(bound) <= set(binds)
        sources = {bound[point]: binds[point] for point in bound}
        assert sources["/var/run/secrets/kubernetes.io/serviceaccount"] == sa
        # the file is bound first on the container's files share, then from there
        point = sources["/dev/termination-log"]
        assert point.parent.name == "files" and point in binds  # (by the held-open file's fd)
        at = {target: point for point, target in bound.items()}
        assert at["/dev/termination-log"].is_file() and at["/cache"].is_dir()
        assert not vm.request.shares or all(s.tag != "files" for s in vm.request.shares)
        main.exit(0)
        assert await runtime.waiter(member.id) == 0
        assert not mdir.exists() and not any(p in binds for p in bound)
        # a member started again gets its mounts afresh; the sandbox's end takes them too
        await runtime.start(member.id)
        await vms.next_process()
        assert mdir.is_dir()
        await runtime.stop(sandbox.id, timeout_s=0)
        assert await runtime.waiter(member.id) == 128 + signal.SIGKILL
        assert not mdir.exists() and binds == {}

    run(tmp_path, body)


def test_a_members_mounts_dir_the_guest_made_is_never_followed(tmp_path: Path) -> None:
    """The guest's root can write in the pod share: a symlink where the host puts a
    member's mounts dir, or in it, is removed, never followed."""
    from steelcup.runtime import podmounts

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("x")
    pod = tmp_path / "pod"
    pod.mkdir()
    trap = podmounts.mounts_dir(pod, "m1")
    trap.symlink_to(outside)
    podmounts.unbind(trap)
    assert not trap.exists() and not trap.is_symlink()
    assert (outside / "precious").read_text() == "x"
    trap.mkdir()
    (trap / "0").symlink_to(outside / "precious")
    podmounts.unbind(trap)
    assert not trap.exists() and (outside / "precious").read_text() == "x"
    podmounts.unbind(trap)  # idempotent


def test_a_members_root_entry_the_guest_made_a_symlink_is_never_followed(
        tmp_path: Path, binds: Binds) -> None:
    """Where a member's root was bound, the guest's root may leave a symlink (to a host mount
    point, say): unbinding removes the symlink and unmounts nothing else, and the member's next
    bind is on a fresh directory in the share."""
    from steelcup.runtime import podmounts

    outside = tmp_path / "outside"
    outside.mkdir()
    binds[outside] = tmp_path / "host-device"  # a mount of the host's
    pod = tmp_path / "pod"
    pod.mkdir()
    (pod / "m1").symlink_to(outside)
    podmounts.unbind_root(pod, "m1")
    assert not (pod / "m1").is_symlink() and outside in binds
    (pod / "m1").symlink_to(outside)
    (pod / "planted").symlink_to(outside)
    podmounts.unbind_all(pod)
    assert list(pod.iterdir()) == [] and outside in binds
    (pod / "m1").symlink_to(outside)
    root = tmp_path / "member-root"
    root.mkdir()
    podmounts.bind_root(root, pod, "m1")
    assert (pod / "m1").is_dir() and not (pod / "m1").is_symlink()
    assert binds == {outside: tmp_path / "host-device", pod / "m1": root}
    podmounts.unbind_root(pod, "m1")
    podmounts.unbind_root(pod, "m1")  # idempotent
    podmounts.unbind_root(tmp_path / "no-share", "m1")
    assert binds == {outside: tmp_path / "host-device"} and list(pod.iterdir()) == []
