"""The container manager's lifecycle against a fake VM source (no QEMU, no mounts): restart
back-off, `--rm` ordering, failed starts of `--rm` containers, kill/stop/wait races,
pause/unpause, removal during start, half-failed removal."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from steelcup.errors import Conflict, ProcessStartError, SteelcupError, VmLaunchError
from steelcup.guest.client import ProcessSpec
from steelcup.runtime.containers import Runtime
from steelcup.runtime.lifecycle import Op
from steelcup.runtime.model import ContainerConfig, ContainerRecord, Status
from steelcup.runtime.resources import Resources
from steelcup.state.db import open_db
from tests.unit.runtime.fakevm import FakeProcess, FakeVms
from tests.unit.runtime.support import make_runtime

pytestmark = pytest.mark.usefixtures("plain_dirs")  # conftest: roots are plain dirs

T = TypeVar("T")


def run(tmp_path: Path, body: Callable[[Runtime, FakeVms], Awaitable[T]],
        vms: FakeVms | None = None, resources: Resources | None = None) -> T:
    async def main() -> T:
        fake = vms or FakeVms()
        runtime = make_runtime(tmp_path, open_db(tmp_path), resources, fake.source())
        try:
            return await asyncio.wait_for(body(runtime, fake), 20)
        finally:
            await runtime.shutdown()

    return asyncio.run(main())


def create(runtime: Runtime, name: str = "web", **changes: Any) -> ContainerRecord:
    config = ContainerConfig(image="base:1", image_id="", cmd=("serve",), **changes)
    return runtime.create(config, name)


def events(runtime: Runtime) -> asyncio.Queue[dict[str, Any]]:
    return runtime.events.subscribe()


def actions(queue: asyncio.Queue[dict[str, Any]]) -> list[str]:
    out = []
    while not queue.empty():
        out.append(str(queue.get_nowait()["Action"]))
    return out


async def eventually(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """For what happens after the answer a client waits for (a removed container's dir is
    deleted after `wait --condition removed` returned)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.01)


async def started(runtime: Runtime, vms: FakeVms, ref: str = "web") -> FakeProcess:
    assert await runtime.start(ref)
    return await vms.next_process()


def test_a_run_ends_with_its_exit_code(tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms) -> None:
        create(rt)
        wait = rt.waiter("web", "next-exit")
        process = await started(rt, vms)
        assert rt.record("web").state.status is Status.RUNNING
        assert not await rt.start("web")  # already running: 304
        process.exit(3)
        assert await wait == 3
        state = rt.record("web").state
        assert (state.status, state.exit_code, state.pid) == (Status.EXITED, 3, 0)
        assert vms.machines[0].closed

    run(tmp_path, body)


def test_restart_policy_backs_off_and_a_stop_ends_it(tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms) -> None:
        create(rt, restart_policy="always")
        process = await started(rt, vms)
        gaps = []
        for _ in range(3):
            process.exit(1)
            ended = time.monotonic()
            await asyncio.sleep(0)
            process = await vms.next_process()
            gaps.append(time.monotonic() - ended)
        assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4, gaps  # doubling
        assert rt.record("web").restart_count == 3
        process.exit(1)
        # the exit is relayed, then the policy schedules a restart
        await eventually(lambda: rt.record("web").state.status is Status.RESTARTING)
        with pytest.raises(Conflict, match="is restarting, wait until the container is running"):
            rt.check("web", Op.EXEC)
        assert await rt.stop("web")  # cancels the pending restart
        state = rt.record("web").state
        assert (state.status, state.manually_stopped) == (Status.EXITED, True)
        await asyncio.sleep(1.0)  # longer than the back-off: nothing starts
        assert vms.started.empty() and rt.record("web").state.status is Status.EXITED

    run(tmp_path, body)


def test_on_failure_stops_after_its_retries(tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms) -> None:
        create(rt, restart_policy="on-failure", restart_max_retries=2)
        wait_exit = rt.waiter("web", "next-exit")
        process = await started(rt, vms)
        process.exit(0 + 1)
        await wait_exit
        for _ in range(2):
            process = await vms.next_process()
            process.exit(1)
        await asyncio.sleep(0.5)
        record = rt.record("web")
        assert (record.state.status, record.restart_count) == (Status.EXITED, 2)
        assert vms.started.empty()

    run(tmp_path, body)


def test_rm_container_is_removed_after_its_exit(tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms) -> None:
        record = create(rt, auto_remove=True)
        queue = events(rt)
        removed = rt.waiter("web", "removed")
        process = await started(rt, vms)
        process.write(b"bye\n")
        process.exit(7)
        assert await removed == 7
        assert rt.list() == [] and rt.store.load_all() == []
        await eventually(lambda: not rt.container_dir(record.id).exists())
        assert actions(queue) == ["start", "die", "destroy"]

    run(tmp_path, body)


@pytest.mark.parametrize("failure", ["not-found", "daemon"])
def test_failed_start_of_rm_container_leaves_nothing(tmp_path: Path, failure: str) -> None:
    """dockerd's rule (issue 21): the error surfaces with its exit status (127 not found, 125
    the daemon failed), the container is removed, `wait --condition removed` returns."""
    vms = FakeVms()
    if failure == "not-found":
        vms.missing.add("serve")
    else:
        vms.fail_with = VmLaunchError("the VM did not boot")

    async def body(rt: Runtime, vms: FakeVms) -> None:
        record = create(rt, auto_remove=True)
        removed = rt.waiter(record.id, "removed")
        with pytest.raises(SteelcupError) as caught:
            await rt.start(record.id)
        if failure == "not-found":
            assert isinstance(caught.value, ProcessStartError)
            assert 'exec: "serve": executable file not found in $PATH' in str(caught.value)
        assert await removed == (127 if failure == "not-found" else 125)
        assert rt.list() == [] and rt.store.load_all() == []
        assert not rt.container_dir(record.id).exists()

    run(tmp_path, body, vms)


def test_failed_start_keeps_a_plain_container_created(tmp_path: Path) -> None:
    vms = FakeVms(missing={"serve"})

    async def body(rt: Runtime, vms: FakeVms) -> None:
        create(rt)
        with pytest.raises(ProcessStartError):
            await rt.start("web")
        state = rt.record("web").state
        assert (state.status, state.exit_code) == (Status.CREATED, 127)

    run(tmp_path, body, vms)


@pytest.mark.parametrize("obeys_sigterm", [True, False])
def test_stop_kill_and_wait_race_to_one_exit(tmp_path: Path, obeys_sigterm: bool) -> None:
    vms = FakeVms(ignored=set() if obeys_sigterm else {signal.SIGTERM})

    async def body(rt: Runtime, vms: FakeVms) -> None:
        create(rt, restart_policy="always")
        process = await started(rt, vms)
        wait = asyncio.ensure_future(rt.waiter("web"))
        stop = asyncio.ensure_future(rt.stop("web", timeout_s=1))
        # the kill comes once stop's SIGTERM is in (a fixed sleep raced a loaded machine)
        await eventually(lambda: bool(process.signals))
        kill = asyncio.ensure_future(rt.kill("web", "SIGKILL"))
        results = await asyncio.gather(wait, stop, kill, return_exceptions=True)
        code = results[0]
        assert results[1] is True
        # the kill lands on a running process or finds it gone already
        assert results[2] is None or isinstance(results[2], Conflict), results[2]
        assert code == (143 if obeys_sigterm else 137)
        state = rt.record("web").state
        assert (state.status, state.exit_code, state.manually_stopped) == (
            Status.EXITED, code, True)
        assert process.signals[0] == signal.SIGTERM
        await asyncio.sleep(0.3)
        assert vms.started.empty()  # a manual stop is not restarted
        assert not await rt.stop("web")  # stopped already: 304
        with pytest.raises(Conflict, match="Cannot kill container: .* is not running"):
            await rt.kill("web")

    run(tmp_path, body, vms)


def test_pause_and_unpause(tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms) -> None:
        create(rt)
        with pytest.raises(Conflict, match="is not running"):
            await rt.pause("web")
        process = await started(rt, vms)
        machine = vms.machines[0]
        await rt.pause("web")
        assert machine.paused and rt.record("web").state.status is Status.PAUSED
        with pytest.raises(Conflict, match="is already paused"):
            await rt.pause("web")
        with pytest.raises(Conflict, match="unpause the container before exec"):
            rt.check("web", Op.EXEC)
        with pytest.raises(Conflict, match="cannot start a paused container"):
            await rt.start("web")
        with pytest.raises(Conflict, match="container is paused and must be unpaused first"):
            await rt.remove("web")
        await rt.unpause("web")
        assert not machine.paused and rt.record("web").state.status is Status.RUNNING
        with pytest.raises(Conflict, match="is not paused"):
            await rt.unpause("web")
        await rt.pause("web")
        assert await rt.stop("web", timeout_s=5)  # resumes the VM first (the fake checks)
        assert process.signals == [signal.SIGTERM]
        assert rt.record("web").state.status is Status.EXITED

    run(tmp_path, body)


def test_removal_during_start_wins(tmp_path: Path) -> None:
    """A removal that begins while the VM boots: the start is abandoned (its VM closed), the
    removal completes, a second removal and a new start are refused meanwhile."""
    vms = FakeVms(start_gate=asyncio.Event())

    async def body(rt: Runtime, vms: FakeVms) -> None:
        record = create(rt)
        assert vms.start_gate is not None
        start = asyncio.ensure_future(rt.start("web"))
        while not vms.machines:
            await asyncio.sleep(0.01)
        removed = rt.waiter("web", "removed")
        remove = asyncio.ensure_future(rt.remove("web"))
        await asyncio.sleep(0.05)
        assert rt.record("web").state.status is Status.REMOVING
        assert [r.state.status for r in rt.list()] == [Status.REMOVING]
        with pytest.raises(Conflict, match="removal of container web is already in progress"):
            await rt.remove("web", force=True)
        with pytest.raises(Conflict, match="marked for removal and cannot be started"):
            await rt.start(record.id)
        vms.start_gate.set()
        with pytest.raises(Conflict, match="marked for removal and cannot be started"):
            await start
        await remove
        await removed
        assert vms.machines[0].closed
        assert rt.list() == [] and rt.store.load_all() == []

    run(tmp_path, body, vms)


def test_force_removal_of_a_running_container(tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms) -> None:
        record = create(rt, restart_policy="always")
        process = await started(rt, vms)
        with pytest.raises(Conflict, match="container is running: stop the container"):
            await rt.remove("web")
        removed = rt.waiter("web", "removed")
        queue = events(rt)
        await rt.remove("web", force=True)
        assert await removed == 137
        assert process.signals == [signal.SIGKILL]
        assert actions(queue) == ["kill", "die", "destroy"]
        assert rt.list() == [] and not rt.container_dir(record.id).exists()
        await asyncio.sleep(0.3)
        assert vms.started.empty()  # not restarted by its policy

    run(tmp_path, body)


def test_extra_processes_need_a_running_container(tmp_path: Path) -> None:
    spec = ProcessSpec(args=("ps",), env=(), cwd="/", uid=0, gid=0, groups=(), tty=False,
                       rows=24, cols=80, stdin=False, main=False)

    async def body(rt: Runtime, vms: FakeVms) -> None:
        create(rt)
        with pytest.raises(Conflict, match="is not running"):
            await rt.start_in("web", Op.EXEC, spec)
        await started(rt, vms)
        helper = await rt.start_in("web", Op.EXEC, spec)
        assert helper.pid and len(vms.machines[0].processes) == 2

    run(tmp_path, body)


class _FailingRelease(Resources):
    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    async def release_container(self, record: ContainerRecord, remove_volumes: bool) -> None:
        if self.failures:
            self.failures -= 1
            raise SteelcupError("the disk went away")


def test_a_removal_that_fails_half_way_leaves_it_dead(tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms) -> None:
        create(rt)
        with pytest.raises(SteelcupError, match="the disk went away"):
            await rt.remove("web")
        state = rt.record("web").state
        assert state.status is Status.DEAD and "the disk went away" in state.error
        assert rt.store.load_all()[0].state.status is Status.DEAD
        with pytest.raises(Conflict, match="marked for removal and cannot be started"):
            await rt.start("web")
        await rt.remove("web")  # dead containers can be removed again
        assert rt.list() == []

    run(tmp_path, body, resources=_FailingRelease())


def test_a_daemon_stopped_mid_removal_leaves_it_dead(tmp_path: Path) -> None:
    before = make_runtime(tmp_path, open_db(tmp_path))
    record = create(before)
    before.store.save(record.with_state(status=Status.REMOVING))
    after = make_runtime(tmp_path, open_db(tmp_path))
    after.recover()
    assert after.record("web").state.status is Status.DEAD


def test_kill_of_a_restarting_container_cancels_its_restart(tmp_path: Path) -> None:
    """As dockerd: the kill is accepted, the pending restart never comes."""
    async def body(rt: Runtime, vms: FakeVms) -> None:
        create(rt, restart_policy="always")
        process = await started(rt, vms)
        process.exit(1)
        await eventually(lambda: rt.record("web").state.status is Status.RESTARTING)
        await rt.kill("web")
        state = rt.record("web").state
        assert (state.status, state.manually_stopped) == (Status.EXITED, True)
        await asyncio.sleep(0.5)
        assert vms.started.empty()

    run(tmp_path, body)


def test_force_removal_of_a_paused_container_thaws_it_first(tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms) -> None:
        create(rt)
        process = await started(rt, vms)
        await rt.pause("web")
        await rt.remove("web", force=True)  # the fake refuses a signal to a frozen VM
        assert process.signals == [signal.SIGKILL] and rt.list() == []

    run(tmp_path, body)
