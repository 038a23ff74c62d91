"""Container checkpoints, the parts without a VM (docs/checkpoints.md): the on-disk store, the
refusals of settings that keep a 9p share mounted, and the runtime's rules for a
--checkpointable container (fake VM source; tests/vm/test_checkpoints.py runs real ones)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from steelcup.errors import Conflict, InvalidArgument, NotFound, VmLaunchError
from steelcup.guest.protocol import RootfsCache
from steelcup.runtime import checkpoints
from steelcup.runtime.checkpoints import Checkpoint
from steelcup.runtime.containers import Runtime
from steelcup.runtime.lifecycle import Op, Refusal, transition
from steelcup.runtime.model import ContainerConfig, Status
from steelcup.runtime.swarmfiles import SwarmFile
from steelcup.state.db import open_db
from steelcup.vm.saved import SavedNic, SavedShare, SavedVm
from tests.unit.runtime.fakevm import FakeVms
from tests.unit.runtime.support import logged, make_runtime

pytestmark = pytest.mark.usefixtures("plain_dirs")  # conftest: roots are plain dirs

VM = SavedVm(mem_mib=2048, cpus=1, max_cpus=4, accel="tcg", tcg_tb_mib=32, tsc_khz=2_000_000,
             tsc_clock=True, balloon=True, balloon_grows=False, ram_object=True,
             cmdline_extra=("init_on_alloc=0",),
             shares=(SavedShare("rootfs", False, True), SavedShare("vol0", True, False)),
             nics=(SavedNic("52:54:00:00:00:01", True),), nic_vnet_hdr=True, limit_mib=256)


def checkpoint(name: str, created: str = "2026-01-01T00:00:00Z") -> Checkpoint:
    return Checkpoint(name=name, created=created, process_id=3, pid=1, logged_bytes=1234, vm=VM)


def make(cdir: Path, cp: Checkpoint, state: bytes = b"stream") -> Checkpoint:
    tmp = checkpoints.begin(cdir, cp.name)
    (tmp / checkpoints.STATE_FILE).write_bytes(state)
    return checkpoints.commit(tmp, cp)


def test_a_committed_checkpoint_loads_lists_and_goes(tmp_path: Path) -> None:
    done = make(tmp_path, checkpoint("cp1"))
    assert done.state_bytes == len(b"stream")
    assert checkpoints.load(tmp_path, "cp1") == done
    make(tmp_path, checkpoint("cp0", created="2026-01-02T00:00:00Z"))
    assert [c.name for c in checkpoints.list_all(tmp_path)] == ["cp1", "cp0"]  # oldest first
    assert checkpoints.state_path(tmp_path, "cp1").read_bytes() == b"stream"
    with pytest.raises(Conflict, match="already exists"):
        checkpoints.begin(tmp_path, "cp1")
    checkpoints.remove(tmp_path, "cp1")
    with pytest.raises(NotFound):
        checkpoints.load(tmp_path, "cp1")
    with pytest.raises(NotFound):
        checkpoints.remove(tmp_path, "cp1")


def test_a_container_keeps_a_bounded_number_of_checkpoints(tmp_path: Path) -> None:
    for i in range(checkpoints.MAX_PER_CONTAINER):
        make(tmp_path, checkpoint(f"cp{i}"))
    with pytest.raises(Conflict, match="remove one first"):
        checkpoints.begin(tmp_path, "one-more")
    checkpoints.remove(tmp_path, "cp0")
    make(tmp_path, checkpoint("one-more"))


def test_an_unfinished_checkpoint_is_not_listed_and_is_replaced(tmp_path: Path) -> None:
    tmp = checkpoints.begin(tmp_path, "cp1")
    (tmp / checkpoints.STATE_FILE).write_bytes(b"half")
    assert checkpoints.list_all(tmp_path) == []
    with pytest.raises(NotFound):
        checkpoints.load(tmp_path, "cp1")
    assert make(tmp_path, checkpoint("cp1"), b"whole").state_bytes == 5  # begins afresh


def test_names_follow_docker_and_impossible_ones_are_missing(tmp_path: Path) -> None:
    for bad in ("", "a", "-x", ".hidden", "a/b", "..", "x" * 129, "sp ace"):
        with pytest.raises(InvalidArgument, match="invalid checkpoint name"):
            checkpoints.check_name(bad)
        with pytest.raises(NotFound):
            checkpoints.load(tmp_path, bad)
    for good in ("cp1", "Before.Upgrade_2", "x" * 128):
        assert checkpoints.check_name(good) == good


def test_an_unreadable_record_is_a_clear_error(tmp_path: Path) -> None:
    make(tmp_path, checkpoint("cp1"))
    (tmp_path / "checkpoints" / "cp1" / checkpoints.RECORD_FILE).write_text('{"format": 9}')
    with pytest.raises(InvalidArgument, match="checkpoint cp1 cannot be read"):
        checkpoints.load(tmp_path, "cp1")
    assert checkpoints.list_all(tmp_path) == []


def test_settings_that_mount_9p_shares_are_refused_with_the_reason() -> None:
    base = ContainerConfig(image="i", image_id="", checkpointable=True)
    checkpoints.check_config(base)  # fine as it is
    tmpfs = {"kind": "tmpfs", "target": "/scratch"}
    checkpoints.check_config(ContainerConfig(**{**base.__dict__, "mount_plans": (tmpfs,)}))
    for kind in ("volume", "bind"):
        plans = (tmpfs, {"kind": kind, "target": "/data"})
        with pytest.raises(InvalidArgument, match=r"volumes or bind mounts \(/data\).*9p"):
            checkpoints.check_config(ContainerConfig(**{**base.__dict__,
                                                        "mount_plans": plans}))
    # secrets are copied into the guest's RAM (a copied MOUNT): allowed
    secret = SwarmFile(kind="secret", object_id="o", object_name="s", target="/run/secrets/s")
    checkpoints.check_config(ContainerConfig(**{**base.__dict__, "swarm_files": (secret,)}))
    with pytest.raises(InvalidArgument, match="pod"):
        checkpoints.check_config(ContainerConfig(**{**base.__dict__, "pod_sandbox": True}))
    plain = ContainerConfig(image="i", image_id="",
                            mount_plans=({"kind": "volume", "target": "/d"},))
    checkpoints.check_config(plain)  # not checkpointable: anything goes


def test_only_a_running_container_can_be_checkpointed() -> None:
    assert transition(Status.RUNNING, Op.CHECKPOINT) is Status.RUNNING
    for status in (Status.CREATED, Status.EXITED, Status.PAUSED, Status.RESTARTING,
                   Status.REMOVING, Status.DEAD):
        assert isinstance(transition(status, Op.CHECKPOINT), Refusal)


# -- the runtime, with fake VMs ------------------------------------------------------------

def run(tmp_path: Path, body: Callable[[Runtime, FakeVms], Awaitable[None]]) -> None:
    async def main() -> None:
        fake = FakeVms()
        runtime = make_runtime(tmp_path, open_db(tmp_path), vms=fake.source())
        try:
            await asyncio.wait_for(body(runtime, fake), 20)
        finally:
            await runtime.shutdown()

    asyncio.run(main())


def config(checkpointable: bool) -> ContainerConfig:
    return ContainerConfig(image="base:1", image_id="", cmd=("serve",),
                           checkpointable=checkpointable)


def test_a_checkpointable_root_is_copied_into_guest_ram_and_held_there(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms) -> None:
        record = runtime.create(config(True), "ram")
        await runtime.start(record.id)
        assert vms.machines[0].root_cache is RootfsCache.RAM
        # The host's copy is stale while it runs: file access is refused, not misleading.
        with pytest.raises(Conflict, match="held in its VM's memory"):
            async with runtime.holding_files(record.id, Op.FILES):
                pass
        assert runtime.checkpoints(record.id) == []
        with pytest.raises(NotFound):
            await runtime.checkpoint_remove(record.id, "nosuch")
        await runtime.stop(record.id, 0)
        with pytest.raises(NotFound, match="no checkpoint"):
            await runtime.start(record.id, "nosuch")
        assert runtime.record(record.id).state.status is Status.EXITED

    run(tmp_path, body)


def test_a_plain_container_cannot_be_checkpointed_and_says_why(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms) -> None:
        record = runtime.create(config(False), "plain")
        with pytest.raises(Conflict, match="is not running"):
            await runtime.checkpoint_create(record.id, "cp1")
        await runtime.start(record.id)
        assert vms.machines[0].root_cache is RootfsCache.NONE
        with pytest.raises(InvalidArgument, match="--checkpointable.*9p share"):
            await runtime.checkpoint_create(record.id, "cp1")
        with pytest.raises(InvalidArgument, match="invalid checkpoint name"):
            await runtime.checkpoint_create(record.id, "../x")
        assert runtime.record(record.id).state.status is Status.RUNNING
        removed = runtime.create(ContainerConfig(**{**config(True).__dict__,
                                                    "auto_remove": True}), "rm")
        await runtime.start(removed.id)
        with pytest.raises(InvalidArgument, match="--leave-running"):
            await runtime.checkpoint_create(removed.id, "cp1")

    run(tmp_path, body)


def checkpointing(tmp_path: Path, body: Callable[[Runtime, FakeVms], Awaitable[None]]) -> None:
    async def with_restorer(runtime: Runtime, vms: FakeVms) -> None:
        runtime.restorer = vms.restore
        await body(runtime, vms)

    run(tmp_path, with_restorer)


def test_a_checkpoint_exits_the_container_and_start_runs_it_on(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms) -> None:
        record = runtime.create(config(True), "web")
        await runtime.start(record.id)
        first = await vms.next_process()
        first.write(b"before\n")
        await logged(runtime, record.id, b"before")
        made = await runtime.checkpoint_create(record.id, "cp1")
        assert made.logged_bytes == len(b"before\n") and made.process_id == first.id
        state = runtime.record(record.id).state
        assert (state.status, state.exit_code, state.manually_stopped) == (Status.EXITED, 137,
                                                                          True)
        assert vms.machines[0].closed and vms.machines[0].reattached == 0
        assert [c.name for c in runtime.checkpoints(record.id)] == ["cp1"]

        await runtime.start(record.id, "cp1")
        restored = vms.machines[-1]
        assert restored.restored_from is not None and restored.restored_from.parent.name == "cp1"
        # Clock and entropy fixed, the main process re-attached with the bytes logged.
        assert restored.fixups == [(True, 32)]
        assert restored.resumes == [(first.id, len(b"before\n"))]
        resumed = await vms.next_process()
        assert runtime.record(record.id).state.pid == first.pid
        resumed.write(b"after\n")
        await logged(runtime, record.id, b"after")
        with pytest.raises(Conflict, match="already exists"):
            await runtime.checkpoint_create(record.id, "cp1")
        assert runtime.record(record.id).state.status is Status.RUNNING
        resumed.exit(0)
        assert await runtime.waiter(record.id) == 0

    checkpointing(tmp_path, body)


def test_leave_running_and_a_failed_checkpoint_run_on(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms) -> None:
        record = runtime.create(config(True), "web")
        await runtime.start(record.id)
        first = await vms.next_process()
        first.write(b"one\n")
        await logged(runtime, record.id, b"one")
        machine = vms.machines[0]
        await runtime.checkpoint_create(record.id, "cp1", leave_running=True)
        assert machine.reattached == 1 and machine.resumes == [(first.id, 4)]
        assert runtime.record(record.id).state.status is Status.RUNNING
        second = await vms.next_process()
        second.write(b"two\n")
        await logged(runtime, record.id, b"two")

        machine.checkpoint_error = VmLaunchError("saving VM state failed: blocked")
        with pytest.raises(VmLaunchError, match="blocked"):
            await runtime.checkpoint_create(record.id, "cp2")
        assert machine.reattached == 2 and machine.resumes[-1] == (first.id, 8)
        assert [c.name for c in runtime.checkpoints(record.id)] == ["cp1"]
        assert not list((runtime.container_dir(record.id) / "checkpoints").glob(".*"))
        third = await vms.next_process()
        third.write(b"three\n")
        await logged(runtime, record.id, b"three")
        assert runtime.record(record.id).state.status is Status.RUNNING

    checkpointing(tmp_path, body)


# -- suspend and resume ----------------------------------------------------------------------

def test_suspend_ends_the_vm_and_resume_runs_it_on(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms) -> None:
        record = runtime.create(config(True), "web")
        with pytest.raises(Conflict, match="is not running"):
            await runtime.suspend(record.id)
        assert await runtime.resume(record.id) is False  # not suspended: nothing to do
        await runtime.start(record.id)
        first = await vms.next_process()
        first.write(b"before\n")
        await logged(runtime, record.id, b"before")
        assert await runtime.suspend(record.id) is True
        assert await runtime.suspend(record.id) is False  # already
        state = runtime.record(record.id).state
        assert state.suspended and state.status is Status.EXITED and vms.machines[0].closed
        cdir = runtime.container_dir(record.id)
        assert (cdir / checkpoints.SUSPEND_DIR / checkpoints.SUSPEND_NAME /
                checkpoints.STATE_FILE).exists()
        assert runtime.checkpoints(record.id) == []  # not one of the user's checkpoints

        assert await runtime.resume(record.id) is True
        restored = vms.machines[-1]
        assert restored.restored_from is not None
        assert restored.restored_from.parent.parent.name == checkpoints.SUSPEND_DIR
        assert restored.resumes == [(first.id, len(b"before\n"))]
        state = runtime.record(record.id).state
        assert state.status is Status.RUNNING and not state.suspended
        assert not (cdir / checkpoints.SUSPEND_DIR).exists()  # dropped once it ran on
        resumed = await vms.next_process()
        resumed.write(b"after\n")
        await logged(runtime, record.id, b"after")

        # start and exec's resume_if_suspended run a suspended container on as resume does.
        await runtime.suspend(record.id)
        with pytest.raises(Conflict, match="is suspended.*resume it first"):
            await runtime.pause(record.id)
        assert await runtime.start(record.id) is True
        assert not runtime.record(record.id).state.suspended
        await vms.next_process()
        await runtime.suspend(record.id)
        await runtime.resume_if_suspended(record.id)
        assert runtime.record(record.id).state.status is Status.RUNNING

    checkpointing(tmp_path, body)


def test_a_suspend_right_after_a_resume_keeps_its_own_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The resume drops the old saved state under the container's lock: a suspend asked for
    as soon as the container runs again waits for that, and what it saves is not deleted by
    the resume that came before (here the drop is made slow, as a busy disk makes it)."""
    drop = checkpoints.drop_suspended

    def slow_drop(cdir: Path) -> None:
        time.sleep(0.3)
        drop(cdir)

    monkeypatch.setattr(checkpoints, "drop_suspended", slow_drop)

    async def body(runtime: Runtime, vms: FakeVms) -> None:
        record = runtime.create(config(True), "web")
        await runtime.start(record.id)
        await vms.next_process()
        assert await runtime.suspend(record.id)
        resuming = asyncio.create_task(runtime.resume(record.id))
        for _ in range(500):  # running again, the resume not yet done
            if runtime.record(record.id).state.status is Status.RUNNING:
                break
            await asyncio.sleep(0.01)
        assert not resuming.done()
        assert await runtime.suspend(record.id)
        assert await resuming
        state = runtime.container_dir(record.id) / checkpoints.SUSPEND_DIR
        assert (state / checkpoints.SUSPEND_NAME / checkpoints.STATE_FILE).exists()
        assert await runtime.resume(record.id)  # runs on from the second suspend
        assert runtime.record(record.id).state.status is Status.RUNNING

    checkpointing(tmp_path, body)


def test_stop_and_kill_end_a_suspended_container_without_resuming_it(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms) -> None:
        for end in ("stop", "kill"):
            record = runtime.create(config(True), end)
            await runtime.start(record.id)
            await vms.next_process()
            await runtime.suspend(record.id)
            machines = len(vms.machines)
            if end == "stop":
                assert await runtime.stop(record.id, 10) is True
            else:
                await runtime.kill(record.id)
            state = runtime.record(record.id).state
            assert (state.status, state.suspended, state.manually_stopped) == (
                Status.EXITED, False, True)
            assert len(vms.machines) == machines  # no VM was started to end it
            assert not (runtime.container_dir(record.id) / checkpoints.SUSPEND_DIR).exists()
            assert await runtime.resume(record.id) is False
        kept = runtime.create(config(True), "kept")
        await runtime.start(kept.id)
        await vms.next_process()
        await runtime.suspend(kept.id)
        with pytest.raises(Conflict, match="suspended: stop the container"):
            await runtime.remove(kept.id)
        await runtime.remove(kept.id, force=True)
        assert not runtime.container_dir(kept.id).exists()

    checkpointing(tmp_path, body)


def test_wait_on_a_suspended_container_waits_for_its_run_to_end(tmp_path: Path) -> None:
    """`docker wait` of a suspended container (running, to its clients) returns when it is
    stopped without resuming, or when its process exits once resumed; not at once."""
    async def body(runtime: Runtime, vms: FakeVms) -> None:
        record = runtime.create(config(True), "waited")
        await runtime.start(record.id)
        await vms.next_process()
        await runtime.suspend(record.id)
        waiting = asyncio.ensure_future(runtime.waiter(record.id))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        assert await runtime.stop(record.id, 10) is True
        assert await asyncio.wait_for(waiting, 5) == runtime.record(record.id).state.exit_code
        await runtime.start(record.id)
        await vms.next_process()
        await runtime.suspend(record.id)
        waiting = asyncio.ensure_future(runtime.waiter(record.id))
        assert await runtime.resume(record.id) is True
        resumed = await vms.next_process()  # the same guest process on the new link
        await asyncio.sleep(0.05)
        assert not waiting.done()
        resumed.exit(3)
        assert await asyncio.wait_for(waiting, 5) == 3

    checkpointing(tmp_path, body)


def test_only_a_checkpointable_long_lived_container_can_be_suspended(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms) -> None:
        plain = runtime.create(config(False), "plain")
        await runtime.start(plain.id)
        with pytest.raises(InvalidArgument, match="cannot be suspended.*--checkpointable"):
            await runtime.suspend(plain.id)
        removed = runtime.create(ContainerConfig(**{**config(True).__dict__,
                                                    "auto_remove": True}), "rm")
        await runtime.start(removed.id)
        with pytest.raises(InvalidArgument, match="--rm"):
            await runtime.suspend(removed.id)
        assert runtime.record(removed.id).state.status is Status.RUNNING

    checkpointing(tmp_path, body)


def test_a_suspended_record_reads_back_suspended() -> None:
    from steelcup.runtime.model import ContainerState

    state = ContainerState(status=Status.EXITED, suspended=True)
    assert ContainerState.from_json(state.to_json()).suspended is True
    old = state.to_json()
    del old["suspended"]  # a record written before suspend existed
    assert ContainerState.from_json(old).suspended is False


def test_auto_suspend_needs_a_checkpointable_container_without_rm() -> None:
    with pytest.raises(InvalidArgument, match="--auto-suspend needs --checkpointable"):
        checkpoints.check_config(ContainerConfig(image="b", image_id="", auto_suspend_s=30))
    with pytest.raises(InvalidArgument, match="--auto-suspend cannot be used with --rm"):
        checkpoints.check_config(ContainerConfig(image="b", image_id="", auto_suspend_s=30,
                                                 checkpointable=True, auto_remove=True))
    checkpoints.check_config(ContainerConfig(image="b", image_id="", auto_suspend_s=30,
                                             checkpointable=True))


def test_logs_follow_through_a_suspend_and_attach_resumes_it(tmp_path: Path) -> None:
    from steelcup.runtime.logs import LogFilter

    async def body(runtime: Runtime, vms: FakeVms) -> None:
        record = runtime.create(config(True), "web")
        await runtime.start(record.id)
        first = await vms.next_process()
        first.write(b"one\n")
        await logged(runtime, record.id, b"one")
        seen: list[bytes] = []

        async def follow() -> None:
            async for entry in runtime.follow_logs(record.id, follow=True, want=LogFilter()):
                seen.append(entry.data)

        follower = asyncio.create_task(follow())
        await runtime.suspend(record.id)
        await asyncio.sleep(0.5)  # several of the follower's polls while it is suspended
        assert not follower.done()  # a suspended container is still followed
        attached = runtime.attach(record.id, True, True)
        await runtime.resume_if_suspended(record.id)  # what the attach route does next
        resumed = await vms.next_process()
        resumed.write(b"two\n")
        assert await asyncio.wait_for(attached.subscriber.queue.get(), 5) == ("stdout",
                                                                              b"two\n")
        await logged(runtime, record.id, b"two")
        resumed.exit(0)
        await asyncio.wait_for(follower, 5)  # ends with the run, as for any container
        assert b"".join(seen) == b"one\ntwo\n"

    checkpointing(tmp_path, body)
