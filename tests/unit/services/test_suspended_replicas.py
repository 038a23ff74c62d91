"""A service's suspended replicas with the orchestrator and the fake VM source: a suspend is
no task failure (no replacement), nor is a daemon restart while suspended; the health monitor
does not probe a suspended replica; scaling down, updates and removal end suspended replicas
without resuming them."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from steelcup.image.config import HealthConfig
from steelcup.runtime.health import HealthMonitor
from steelcup.runtime.model import ContainerConfig
from steelcup.services.manager import ServiceManager
from steelcup.services.model import (
    Mode,
    RestartPolicy,
    ServicePlan,
    ServiceRecord,
    TaskState,
)
from steelcup.state.db import open_db
from tests.unit.runtime.fakevm import FakeVms
from tests.unit.runtime.support import make_runtime
from tests.unit.services.test_orchestrator import eventually, live, make, running


def sleepy(manager: ServiceManager, replicas: int = 1,
           health: HealthConfig | None = None) -> ServiceRecord:
    template = ContainerConfig(image="base:1", image_id="", cmd=("serve",),
                               checkpointable=True, auto_suspend_s=60, healthcheck=health)
    plan = ServicePlan(mode=Mode.REPLICATED, replicas=replicas, template=template,
                       restart=RestartPolicy(delay_s=0.0), stop_grace_s=0)
    return manager.create("", "web", spec_doc={"Name": "web"}, task_doc={}, plan=plan)


def test_a_suspended_replica_keeps_its_task_also_across_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        vms = FakeVms()
        db = open_db(tmp_path)
        runtime = make_runtime(tmp_path, db, vms=vms.source())
        runtime.restorer = vms.restore
        manager, orch = make(db, runtime)
        try:
            sleepy(manager, 2)
            tasks = await running(orch, 2)
            await runtime.suspend(tasks[0].container_id)
            assert runtime.record(tasks[0].container_id).state.suspended
            await asyncio.sleep(0.3)  # time for a wrong replacement to show
            assert {t.id for t in orch.list(None)} == {t.id for t in tasks}
            assert orch.get(tasks[0].id).state is TaskState.RUNNING
            await orch.close()
            manager, orch = make(db, runtime)  # from the store, as a new daemon would
            await asyncio.sleep(0.3)
            assert {t.id for t in live(orch)} == {t.id for t in tasks}
            assert runtime.record(tasks[0].container_id).state.suspended  # not resumed
            # it runs on when resumed, still the same task
            await runtime.resume(tasks[0].container_id)
            assert runtime.record(tasks[0].container_id).state.running
            assert {t.id for t in live(orch)} == {t.id for t in tasks}
        finally:
            await orch.close()
            await runtime.shutdown()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_scaling_updates_and_removal_end_suspended_replicas(tmp_path: Path) -> None:
    async def main() -> None:
        vms = FakeVms()
        db = open_db(tmp_path)
        runtime = make_runtime(tmp_path, db, vms=vms.source())
        runtime.restorer = vms.restore
        manager, orch = make(db, runtime)
        try:
            svc = sleepy(manager, 2)
            tasks = await running(orch, 2)
            for task in tasks:
                await runtime.suspend(task.container_id)
            machines = len(vms.machines)
            svc = manager.update(svc.id, svc.version, spec_doc=svc.spec_doc, task_doc={},
                                 plan=replace(svc.plan, replicas=1), force_changed=False)
            await eventually(lambda: len(orch.list(None)) == 1 and len(runtime.list()) == 1)
            assert len(vms.machines) == machines  # slot 2 went without being resumed
            [kept] = orch.list(None)
            assert kept.id == tasks[0].id and runtime.record(kept.container_id).state.suspended
            # an update replaces the suspended replica with a running one
            plan = replace(svc.plan, template=replace(svc.plan.template, env=("V=2",)))
            svc = manager.update(svc.id, svc.version, spec_doc=svc.spec_doc, task_doc={},
                                 plan=plan, force_changed=False)
            await eventually(lambda: len(live(orch)) == 1 and live(orch)[0].generation == 2)
            [new] = live(orch)
            assert runtime.record(new.container_id).state.running
            await eventually(lambda: len(runtime.list()) == 1)
            await runtime.suspend(new.container_id)
            manager.remove(svc.id)
            await eventually(lambda: not orch.list(None) and not runtime.list())
        finally:
            await orch.close()
            await runtime.shutdown()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_suspended_replica_is_not_probed(tmp_path: Path) -> None:
    async def main() -> None:
        vms = FakeVms()
        db = open_db(tmp_path)
        runtime = make_runtime(tmp_path, db, vms=vms.source())
        runtime.restorer = vms.restore
        health = HealthMonitor.attach(runtime)
        manager, orch = make(db, runtime)
        try:
            sleepy(manager, 1, HealthConfig(test=("CMD", "true"), interval_ns=3_600_000_000_000))
            await eventually(lambda: len(orch.list(None)) == 1
                             and bool(orch.list(None)[0].container_id))
            [task] = orch.list(None)
            await eventually(lambda: health.probing(task.container_id))
            await eventually(lambda: runtime.record(task.container_id).state.running)
            await runtime.suspend(task.container_id)
            assert not health.probing(task.container_id)
            await runtime.resume(task.container_id)
            assert health.probing(task.container_id)  # probed again once it runs
            assert [t.id for t in orch.list(None)] == [task.id]
        finally:
            health.close()
            await orch.close()
            await runtime.shutdown()

    asyncio.run(asyncio.wait_for(main(), 30))
