"""The orchestrator against the fake VM source: each task is a container started through the
runtime; exits, removals and unhealthy verdicts (runtime events) get tasks replaced per the
restart policy; scaling and removal; a restarted orchestrator resumes from the store."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from steelcup.errors import NotFound
from steelcup.image.config import HealthConfig
from steelcup.runtime.containers import Runtime
from steelcup.runtime.model import ContainerConfig, ContainerRecord
from steelcup.services.manager import ServiceManager
from steelcup.services.model import (
    Condition,
    FailureAction,
    FailurePolicy,
    Mode,
    RestartPolicy,
    RollbackPolicy,
    ServicePlan,
    ServiceRecord,
    TaskRecord,
    TaskState,
    UpdateState,
)
from steelcup.services.orchestrator import WAITING_HEALTHY, Orchestrator
from steelcup.services.store import ServiceStore
from steelcup.state.db import open_db
from tests.unit.image.tarutil import make_tar
from tests.unit.runtime.fakevm import FakeProcess, FakeVms
from tests.unit.runtime.support import make_runtime, plain_dirs
from tests.unit.runtime.test_manager import eventually as _eventually

__all__ = ["plain_dirs"]  # the fixture (from runtime.support), for every test here
pytestmark = pytest.mark.usefixtures("plain_dirs")

T = TypeVar("T")
Body = Callable[[Runtime, FakeVms, ServiceManager, Orchestrator], Awaitable[T]]


async def eventually(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """test_manager's, with room for a loaded host (CI next to other work): each step here
    goes through the runtime's threads; a passing run takes well under a second."""
    await _eventually(predicate, timeout_s)


def make(db: sqlite3.Connection, runtime: Runtime) -> tuple[ServiceManager, Orchestrator]:
    store = ServiceStore(db)
    manager = ServiceManager(store, runtime.events)
    orchestrator = Orchestrator(manager, store, runtime, runtime.create)
    orchestrator.start()
    return manager, orchestrator


def run(tmp_path: Path, body: Body[T]) -> T:
    async def main() -> T:
        vms = FakeVms()
        db = open_db(tmp_path)
        runtime = make_runtime(tmp_path, db, vms=vms.source())
        manager, orchestrator = make(db, runtime)
        try:
            return await asyncio.wait_for(body(runtime, vms, manager, orchestrator), 60)
        finally:
            # Bounded: a teardown that hangs fails here, naming itself, not the suite's timeout.
            await asyncio.wait_for(orchestrator.close(), 30)
            await asyncio.wait_for(runtime.shutdown(), 30)

    return asyncio.run(main())


def service(manager: ServiceManager, replicas: int = 2, name: str = "web",
            **restart: Any) -> ServiceRecord:
    template = ContainerConfig(image="base:1", image_id="", cmd=("serve",),
                               labels=(("app", "demo"),))
    restart.setdefault("delay_s", 0.0)
    plan = ServicePlan(mode=Mode.REPLICATED, replicas=replicas, template=template,
                       restart=RestartPolicy(**restart), stop_grace_s=0)
    return manager.create("", name, spec_doc={"Name": name}, task_doc={}, plan=plan)


def live(orchestrator: Orchestrator, state: TaskState = TaskState.RUNNING
         ) -> list[TaskRecord]:
    return sorted((t for t in orchestrator.list(None)
                   if t.desired is TaskState.RUNNING and t.state is state),
                  key=lambda t: t.slot)


def container_of(runtime: Runtime, task: TaskRecord) -> ContainerRecord:
    return runtime.record(task.container_id)


async def running(orchestrator: Orchestrator, n: int) -> list[TaskRecord]:
    await eventually(lambda: len(live(orchestrator)) == n)
    return live(orchestrator)


def test_each_task_runs_in_a_container_of_its_own(tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms, manager: ServiceManager,
                   orch: Orchestrator) -> None:
        svc = service(manager, 2)
        tasks = await running(orch, 2)
        assert [t.slot for t in tasks] == [1, 2]
        for task in tasks:
            record = container_of(rt, task)
            assert record.state.running
            assert record.name == f"web.{task.slot}.{task.id}"
            labels = dict(record.config.labels)
            assert labels["com.docker.swarm.service.id"] == svc.id
            assert labels["com.docker.swarm.task.id"] == task.id
            assert labels["app"] == "demo"
            assert record.config.restart_policy == "no"  # restarts are new tasks
        assert len(vms.machines) == 2

    run(tmp_path, body)


def test_an_exited_task_is_replaced_per_its_policy(tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms, manager: ServiceManager,
                   orch: Orchestrator) -> None:
        service(manager, 1)
        [first] = await running(orch, 1)
        process: FakeProcess = vms.machines[0].processes[0]
        process.exit(3)
        await eventually(lambda: any(t.id != first.id for t in live(orch)))
        old = orch.get(first.id)
        assert old.state is TaskState.FAILED and old.err == "task: non-zero exit (3)"
        assert old.desired is TaskState.SHUTDOWN
        [second] = live(orch)
        assert second.slot == 1 and second.container_id != first.container_id
        await eventually(lambda: not any(r.id == first.container_id for r in rt.list()))

    run(tmp_path, body)


def test_condition_none_leaves_an_ended_task(tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms, manager: ServiceManager,
                   orch: Orchestrator) -> None:
        service(manager, 1, condition=Condition.NONE)
        [first] = await running(orch, 1)
        vms.machines[0].processes[0].exit(0)
        await eventually(lambda: orch.get(first.id).state is TaskState.COMPLETE)
        await asyncio.sleep(0.2)
        assert [t.id for t in orch.list(None)] == [first.id]
        assert not container_of(rt, first).state.running  # kept: its logs stay readable

    run(tmp_path, body)


def test_a_removed_container_is_replaced(tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms, manager: ServiceManager,
                   orch: Orchestrator) -> None:
        service(manager, 2)
        tasks = await running(orch, 2)
        await rt.remove(tasks[0].container_id, force=True)  # docker rm -f
        await eventually(lambda: len(live(orch)) == 2
                         and tasks[0].id not in {t.id for t in live(orch)})
        assert orch.get(tasks[0].id).state is TaskState.FAILED

    run(tmp_path, body)


def test_an_unhealthy_task_is_stopped_and_replaced(tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms, manager: ServiceManager,
                   orch: Orchestrator) -> None:
        service(manager, 1)
        [first] = await running(orch, 1)
        rt.publish_event(container_of(rt, first), "health_status: unhealthy")
        await eventually(lambda: any(t.id != first.id for t in live(orch)))
        assert orch.get(first.id).err == "unhealthy container"
        assert orch.get(first.id).state is TaskState.FAILED

    run(tmp_path, body)


def test_max_attempts_stop_the_replacing(tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms, manager: ServiceManager,
                   orch: Orchestrator) -> None:
        service(manager, 1, max_attempts=1)
        seen: set[str] = set()
        for _ in range(2):  # the first run and its one restart
            await eventually(lambda: any(t.id not in seen for t in live(orch)))
            [task] = live(orch)
            seen.add(task.id)
            vms.machines[-1].processes[0].exit(1)
        await eventually(lambda: all(t.state.terminal for t in orch.list(None)))
        await asyncio.sleep(0.2)
        assert len(orch.list(None)) == 2 and not live(orch)

    run(tmp_path, body)


def test_scale_and_remove(tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms, manager: ServiceManager,
                   orch: Orchestrator) -> None:
        svc = service(manager, 3)
        await running(orch, 3)
        plan = svc.plan
        svc = manager.update(svc.id, svc.version, spec_doc=svc.spec_doc, task_doc={},
                             plan=replace(plan, replicas=1), force_changed=False)
        await eventually(lambda: len(orch.list(None)) == 1 and len(rt.list()) == 1)
        assert live(orch)[0].slot == 1
        manager.remove(svc.id)
        await eventually(lambda: not orch.list(None) and not rt.list())

    run(tmp_path, body)


def test_an_update_replaces_outdated_tasks(tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms, manager: ServiceManager,
                   orch: Orchestrator) -> None:
        svc = service(manager, 2)
        old = {t.id for t in await running(orch, 2)}
        plan = replace(svc.plan, template=replace(svc.plan.template, env=("V=2",)))
        manager.update(svc.id, svc.version, spec_doc=svc.spec_doc, task_doc={}, plan=plan,
                       force_changed=False)
        await eventually(lambda: len(live(orch)) == 2
                         and not old & {t.id for t in live(orch)}, timeout_s=10)
        assert all(t.generation == 2 for t in live(orch))
        assert all("V=2" in container_of(rt, t).config.env for t in live(orch))

    run(tmp_path, body)


def test_a_restarted_orchestrator_resumes(tmp_path: Path) -> None:
    async def main() -> None:
        vms = FakeVms()
        db = open_db(tmp_path)
        runtime = make_runtime(tmp_path, db, vms=vms.source())
        manager, orch = make(db, runtime)
        try:
            service(manager, 2)
            tasks = await running(orch, 2)
            await orch.close()
            # While no orchestrator ran: one container exited, the other kept running.
            [machine] = [m for m in vms.machines
                         if m.request.name == tasks[0].container_id[:12]]
            machine.processes[0].exit(1)
            await eventually(lambda: not container_of(runtime, tasks[0]).state.running)
            manager, orch = make(db, runtime)  # from the store, as a new daemon would
            await eventually(lambda: len(live(orch)) == 2
                             and tasks[0].id not in {t.id for t in live(orch)})
            assert tasks[1].id in {t.id for t in live(orch)}  # kept, not replaced
            assert orch.get(tasks[0].id).state is TaskState.FAILED
        finally:
            await orch.close()
            await runtime.shutdown()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_a_missing_image_is_pulled_for_the_tenant_else_the_task_is_rejected(
        tmp_path: Path) -> None:
    async def main() -> None:
        vms = FakeVms()
        db = open_db(tmp_path)
        runtime = make_runtime(tmp_path, db, vms=vms.source())
        pulled: list[tuple[str, str]] = []

        async def pull(ref: str, tenant: str) -> None:  # a registry that has only fresh:1
            pulled.append((ref, tenant))
            if ref != "fresh:1":
                raise NotFound("manifest unknown")
            runtime.images.import_rootfs(io.BytesIO(make_tar([("dir", "bin")])), ref)

        store = ServiceStore(db)
        manager = ServiceManager(store, runtime.events)
        orch = Orchestrator(manager, store, runtime, runtime.create, pull_image=pull)
        orch.start()
        try:
            plan = ServicePlan(mode=Mode.REPLICATED, replicas=1,
                               template=ContainerConfig(image="fresh:1", image_id="",
                                                        cmd=("serve",)),
                               restart=RestartPolicy(condition=Condition.NONE))
            manager.create("", "fresh", spec_doc={}, task_doc={}, plan=plan)
            await running(orch, 1)
            assert pulled == [("fresh:1", "")]
            manager.create("", "lost", spec_doc={}, task_doc={}, plan=replace(
                plan, template=replace(plan.template, image="nowhere:1")))
            await eventually(lambda: any(t.state is TaskState.REJECTED
                                         for t in orch.list(None)))
            [rejected] = [t for t in orch.list(None) if t.state is TaskState.REJECTED]
            assert rejected.err == "pulling nowhere:1: manifest unknown"
        finally:
            await orch.close()
            await runtime.shutdown()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_a_start_first_update_runs_both_then_the_new_one(tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms, manager: ServiceManager,
                   orch: Orchestrator) -> None:
        svc = service(manager, 1)
        [old] = await running(orch, 1)
        plan = replace(svc.plan, update_start_first=True,
                       template=replace(svc.plan.template, env=("V=2",)))
        vms.start_gate = asyncio.Event()  # the new task's process waits to start
        manager.update(svc.id, svc.version, spec_doc=svc.spec_doc, task_doc={}, plan=plan,
                       force_changed=False)
        await eventually(lambda: len(orch.list(None)) == 2)
        await asyncio.sleep(0.1)
        assert container_of(rt, orch.get(old.id)).state.running  # still serving
        vms.start_gate.set()
        await eventually(lambda: orch.get(old.id).state is TaskState.SHUTDOWN)
        [new] = live(orch)
        assert new.generation == 2 and "V=2" in container_of(rt, new).config.env

    run(tmp_path, body)


def test_an_update_whose_tasks_fail_is_rolled_back(tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms, manager: ServiceManager,
                   orch: Orchestrator) -> None:
        svc = service(manager, 2)
        before = await running(orch, 2)
        vms.missing.add("broken")  # the new command cannot start: exit 127, task failed
        bad = replace(svc.plan, template=replace(svc.plan.template, cmd=("broken",)),
                      failure=FailurePolicy(FailureAction.ROLLBACK, monitor_s=0.1))
        manager.update(svc.id, svc.version, spec_doc={"Name": "web", "v": 2}, task_doc={},
                       plan=bad, force_changed=False)
        await eventually(lambda: manager.get(svc.id).update_status is not None
                         and manager.get(svc.id).update_status.state  # type: ignore[union-attr]
                         is UpdateState.ROLLBACK_COMPLETED, timeout_s=10)
        after = manager.get(svc.id)
        assert after.spec_doc == {"Name": "web"} and after.previous_spec_doc is None
        assert after.plan.template.cmd == ("serve",)
        now = live(orch)
        assert [container_of(rt, t).config.cmd for t in now] == [("serve",), ("serve",)]
        assert now[1].id == before[1].id  # slot 2 was not updated yet: kept as it was
        assert after.update_status is not None and after.update_status.message == (
            "rollback completed")

    run(tmp_path, body)


def test_a_rollback_replaces_tasks_per_its_rollback_config(tmp_path: Path) -> None:
    """The spec rolled back to says how: RollbackConfig parallelism 0 (all at once) while its
    UpdateConfig's is 1; the update itself went one slot at a time."""
    async def body(rt: Runtime, vms: FakeVms, manager: ServiceManager,
                   orch: Orchestrator) -> None:
        plan = ServicePlan(mode=Mode.REPLICATED, replicas=2, template=ContainerConfig(
            image="base:1", image_id="", cmd=("serve",)), stop_grace_s=0,
            rollback=RollbackPolicy(parallelism=0, failure=FailurePolicy(monitor_s=0.1)))
        created = manager.create("", "web", spec_doc={"Name": "web"}, task_doc={}, plan=plan)
        await running(orch, 2)
        new = replace(created.plan, template=replace(created.plan.template, env=("V=2",)),
                      failure=FailurePolicy(monitor_s=0.1))
        vms.start_gate = asyncio.Event()
        svc = manager.update(created.id, created.version, spec_doc={"Name": "web", "v": 2},
                             task_doc={}, plan=new, force_changed=False)

        def starting(generation: int) -> int:
            return sum(1 for t in orch.list(None) if t.service_id == created.id
                       and t.generation == generation and t.desired is TaskState.RUNNING
                       and not t.state.terminal)
        await eventually(lambda: starting(2) == 1)
        await asyncio.sleep(0.2)
        assert starting(2) == 1  # UpdateConfig: one slot at a time
        vms.start_gate.set()
        await eventually(lambda: manager.get(svc.id).update_status is not None
                         and manager.get(svc.id).update_status.state  # type: ignore[union-attr]
                         is UpdateState.COMPLETED, timeout_s=10)
        vms.start_gate = asyncio.Event()
        manager.rollback(svc.id, manager.get(svc.id).version, "manually requested rollback")
        await eventually(lambda: starting(1) == 2)  # RollbackConfig: both slots at once
        vms.start_gate.set()
        await eventually(lambda: manager.get(svc.id).update_status is not None
                         and manager.get(svc.id).update_status.state  # type: ignore[union-attr]
                         is UpdateState.ROLLBACK_COMPLETED, timeout_s=10)

    run(tmp_path, body)


def test_a_global_service_runs_one_task_on_the_one_node(tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms, manager: ServiceManager,
                   orch: Orchestrator) -> None:
        plan = ServicePlan(mode=Mode.GLOBAL, replicas=1,
                           template=ContainerConfig(image="base:1", image_id="", cmd=("a",)))
        manager.create("", "agent", spec_doc={}, task_doc={}, plan=plan)
        [task] = await running(orch, 1)
        node = manager.swarm.node_id
        assert task.slot == 0 and task.node_id == node
        assert container_of(rt, task).name == f"agent.{node}.{task.id}"

    run(tmp_path, body)


def checked_service(manager: ServiceManager, replicas: int = 1) -> ServiceRecord:
    template = ContainerConfig(image="base:1", image_id="", cmd=("serve",),
                               healthcheck=HealthConfig(test=("CMD", "true")))
    plan = ServicePlan(mode=Mode.REPLICATED, replicas=replicas, template=template,
                       restart=RestartPolicy(delay_s=0.0), stop_grace_s=0)
    return manager.create("", "web", spec_doc={"Name": "web"}, task_doc={}, plan=plan)


def test_a_task_with_a_health_check_runs_once_healthy(tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms, manager: ServiceManager,
                   orch: Orchestrator) -> None:
        checked_service(manager)
        await eventually(lambda: any(t.message == WAITING_HEALTHY
                                     for t in live(orch, TaskState.STARTING)))
        [task] = live(orch, TaskState.STARTING)
        assert container_of(rt, task).state.running
        rt.publish_event(container_of(rt, task), "health_status: healthy")
        await running(orch, 1)

    run(tmp_path, body)


async def launched(orch: Orchestrator, task_id: str) -> None:
    """Until the task's start is done and it waits for its health check. (Starting is set
    before the container's start returns; the fake's health event carries no state, so one
    published earlier would be lost where the real runtime's record says healthy.)"""
    await eventually(lambda: orch.get(task_id).message == WAITING_HEALTHY)


def test_a_start_first_update_keeps_the_old_task_until_the_new_is_healthy(
        tmp_path: Path) -> None:
    async def body(rt: Runtime, vms: FakeVms, manager: ServiceManager,
                   orch: Orchestrator) -> None:
        svc = checked_service(manager)
        await eventually(lambda: bool(live(orch, TaskState.STARTING)))
        [old] = live(orch, TaskState.STARTING)
        await launched(orch, old.id)
        rt.publish_event(container_of(rt, old), "health_status: healthy")
        await running(orch, 1)
        plan = replace(svc.plan, update_start_first=True,
                       template=replace(svc.plan.template, env=("V=2",)))
        stopped: list[str] = []

        async def before_stop(task: TaskRecord) -> None:
            stopped.append(task.id)
        orch.before_stop = before_stop
        manager.update(svc.id, svc.version, spec_doc=svc.spec_doc, task_doc={}, plan=plan,
                       force_changed=False)
        await eventually(lambda: bool(live(orch, TaskState.STARTING)))
        [new] = live(orch, TaskState.STARTING)
        await launched(orch, new.id)
        await asyncio.sleep(0.2)
        assert orch.get(old.id).state is TaskState.RUNNING  # the new one is not healthy yet
        assert stopped == []
        rt.publish_event(container_of(rt, new), "health_status: healthy")
        await eventually(lambda: orch.get(old.id).state is TaskState.SHUTDOWN)
        assert stopped == [old.id]  # told before its container stopped

    run(tmp_path, body)
