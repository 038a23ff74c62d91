"""The orchestrator: owns every service's tasks and carries out the reconciler's decisions
(`reconcile.plan`) with the runtime — a task's container is created and started exactly as a
`docker create` + `start` would (through the caller's admission: sizes and quotas), stopped,
and removed.

Driven by events, not polling: the runtime's container events (`EventBus.listen`) update
the tasks whose containers they name (exit, removal, an unhealthy verdict), a service change
wakes it, and the only timer is the next restart delay's end. After a daemon restart,
`resume` reconciles the tasks with what the runtime has: a container a live restore kept
running keeps its task; a task whose container is gone or exited has ended.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import Any

from steelcup.errors import Conflict, NotFound, SteelcupError
from steelcup.runtime.containers import Runtime
from steelcup.runtime.healthcheck import HealthStatus, probe
from steelcup.runtime.logs import parse_time_ns
from steelcup.runtime.model import ContainerConfig, ContainerRecord
from steelcup.services import dormancy, reconcile, rollout
from steelcup.services.manager import ServiceManager, now_rfc3339
from steelcup.services.model import (
    Mode,
    ServiceRecord,
    TaskRecord,
    TaskState,
    UpdateState,
    new_object_id,
)
from steelcup.services.pull import PullImage, has_image
from steelcup.services.refs import resolve_id
from steelcup.services.store import ServiceStore

log = logging.getLogger(__name__)

# (config, name) -> the created container: the API's admission (size class, quotas)
CreateContainer = Callable[[ContainerConfig, str | None], ContainerRecord]

UNHEALTHY = "unhealthy container"
WAITING_HEALTHY = "started, waiting for its health check to pass"


def awaits_health(record: ContainerRecord) -> bool:
    """Whether the container has a health check it has not passed yet: its task stays
    starting until it does (as swarmkit's), so an update does not go on and the service's
    virtual IP does not send it connections before it serves."""
    health = record.state.health
    return probe(record.config.healthcheck) is not None and (
        health is None or health.status is not HealthStatus.HEALTHY)


async def _nothing(task: TaskRecord) -> None:
    return None


def task_name(service: ServiceRecord, task: TaskRecord) -> str:
    """docker's task name: SERVICE.SLOT (a global service's: SERVICE.NODEID)."""
    return f"{service.name}.{task.slot if task.slot else task.node_id}"


def task_labels(service: ServiceRecord, task: TaskRecord) -> dict[str, str]:
    """The labels docker puts on a task's container (besides the ContainerSpec's own)."""
    name = task_name(service, task)
    return {"com.docker.swarm.node.id": task.node_id,
            "com.docker.swarm.service.id": service.id,
            "com.docker.swarm.service.name": service.name,
            "com.docker.swarm.task": "",
            "com.docker.swarm.task.id": task.id,
            "com.docker.swarm.task.name": f"{name}.{task.id}"}


def task_config(service: ServiceRecord, task: TaskRecord) -> ContainerConfig:
    """The task's container: the service's template as its tenant's, with docker's labels;
    restarts are the orchestrator's (a new task), never the container's own."""
    template = service.plan.template
    labels = {**dict(template.labels), **task_labels(service, task)}
    return replace(template, tenant=service.tenant, labels=tuple(sorted(labels.items())),
                   restart_policy="no", restart_max_retries=0, auto_remove=False)


class Orchestrator:
    def __init__(self, manager: ServiceManager, store: ServiceStore, runtime: Runtime,
                 create_container: CreateContainer,
                 clock_ns: Callable[[], int] = time.time_ns,
                 pull_image: PullImage | None = None) -> None:
        self.manager = manager
        self.pull_image = pull_image  # None: a missing image rejects the task
        self.store = store
        self.runtime = runtime
        self.create_container = create_container
        self.clock_ns = clock_ns
        self.tasks: dict[str, TaskRecord] = {t.id: t for t in store.load_tasks()}
        self._by_container = {t.container_id: t.id for t in self.tasks.values()
                              if t.container_id}
        self._wake = asyncio.Event()
        self._acting: set[str] = set()  # tasks with a launch, stop or reap in flight
        self._effects: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._closed = False
        # The service addressing layer's hooks: told of every task change, and awaited before
        # a task's container is stopped (it leaves the service's virtual IP first).
        self.task_changed: Callable[[TaskRecord], None] = lambda task: None
        self.before_stop: Callable[[TaskRecord], Awaitable[None]] = _nothing
        manager.on_change(self._wake.set)
        runtime.events.listen(self.observe)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Reconcile the stored tasks with the runtime (`resume`), then run the loop."""
        self.resume()
        self._loop = asyncio.create_task(self._run(), name="orchestrator")

    async def close(self) -> None:
        """Stop deciding (before the runtime shuts down: its stops are not task failures)."""
        self._closed = True
        pending = [t for t in (self._loop, *self._effects) if t is not None]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def resume(self) -> None:
        """After a daemon restart: each unfinished task as its container is now."""
        for task in builtins.list(self.tasks.values()):
            if task.state.terminal:
                continue
            record = self._container(task.container_id)
            if record is None:
                self._end(task, why="No such container: the daemon stopped before the task's "
                          "container was made" if not task.container_id else
                          f"No such container: {task.container_id}")
                continue
            verdict = dormancy.after_restart(task.state, record.state.running,
                                             record.state.suspended)
            if verdict is dormancy.AfterRestart.SUSPENDED:
                continue  # as it was: a connection to its service resumes it
            if verdict is dormancy.AfterRestart.RUNNING:
                if awaits_health(record):
                    if task.state is not TaskState.STARTING:
                        self._set(task, state=TaskState.STARTING, message=WAITING_HEALTHY)
                elif task.state is not TaskState.RUNNING:
                    self._set(task, state=TaskState.RUNNING, message="started")
            elif verdict is dormancy.AfterRestart.NEVER_STARTED:
                self._end(task, why="the daemon stopped while the task was starting")
            else:
                self._ended(task, record.state.exit_code)

    # -- what clients read -------------------------------------------------------------------

    def list(self, tenant: str | None) -> builtins.list[TaskRecord]:
        return [t for t in self.tasks.values() if tenant is None or t.tenant == tenant]

    def get(self, task_id: str) -> TaskRecord:
        try:
            return self.tasks[task_id]
        except KeyError:
            raise NotFound(f"task {task_id} not found") from None

    def resolve(self, ref: str, tenant: str | None) -> str:
        """A task by full id or unique id prefix, among `tenant`'s (None: all)."""
        return resolve_id([t.id for t in self.list(tenant)], ref, "task")

    # -- runtime events ----------------------------------------------------------------------

    def observe(self, event: dict[str, Any]) -> None:
        """The event bus's listener (inside `publish`: quick, never raises)."""
        if self._closed or event.get("Type") != "container":
            return
        container_id = event["Actor"]["ID"]
        task = self.tasks.get(self._by_container.get(container_id, ""))
        if task is None:
            return
        action = str(event["Action"])
        if action == "die":
            code = int(event["Actor"]["Attributes"].get("exitCode", "0") or 0)
            if not task.state.terminal:
                self._ended(task, code)
        elif action == "destroy":
            self._by_container.pop(container_id, None)
            if not task.state.terminal:
                self._end(task, why=f"No such container: {container_id}")
        elif action == "health_status: unhealthy":
            if task.desired is TaskState.RUNNING and not task.state.terminal:
                task = self._set(task, unhealthy=True)
                self._spawn(task.id, self._stop_container(task.id))
        elif action in ("suspend", "resume"):
            # Its task runs on (a suspend is no exit); its service's addressing looks again:
            # a suspended replica is no backend, and a service whose replicas all sleep wakes
            # on a connection (services/waker.py).
            self.task_changed(task)
        elif action == "health_status: healthy":
            if (task.state is TaskState.STARTING and task.desired is TaskState.RUNNING
                    and task.id not in self._acting):
                self._set(task, state=TaskState.RUNNING, message="started")
            else:
                self.task_changed(task)  # serving again: back behind the virtual IP
        else:
            return
        self._wake.set()

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                wake_at = self.reconcile_once()
            except Exception:  # a bug must not stop every service's reconciliation
                log.exception("the service orchestrator failed; trying again")
                wake_at = self.clock_ns() + reconcile.NS
            timeout = None if wake_at is None else max(0.0, (wake_at - self.clock_ns()) / 1e9)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def reconcile_once(self) -> int | None:
        """One pass over every service (and the tasks of removed ones); when to look again."""
        now = self.clock_ns()
        by_service: dict[str, builtins.list[TaskRecord]] = {}
        for task in self.tasks.values():
            by_service.setdefault(task.service_id, []).append(task)
        wake_at: int | None = None
        changed = False
        for service_id in {*self.manager.services, *by_service}:
            service = self.manager.services.get(service_id)
            tasks = by_service.get(service_id, [])
            views = [self._view(t) for t in tasks]
            # The update's verdict first: a failure it acts on (pause, rollback) must stop
            # the replacing before this pass goes on to the next slot.
            judged_wake = self._judge(service, self._desired(service), views, now)
            service = self.manager.services.get(service_id)
            decided = reconcile.plan(self._desired(service), views, now,
                                     history=self.manager.swarm.history_limit)
            changed |= self._apply(service, decided)
            for when in (decided.wake_at_ns, judged_wake):
                if when is not None:
                    wake_at = min(wake_at or when, when)
        if changed:
            self._wake.set()  # look again at once: a decision may allow the next one
        return wake_at

    def _judge(self, service: ServiceRecord | None, desired: reconcile.Desired | None,
               views: builtins.list[reconcile.TaskView], now: int) -> int | None:
        """How the service's rolling update stands (rollout.judge), told to the manager;
        when to judge again."""
        status = service.update_status if service is not None else None
        if service is None or desired is None or status is None:
            return None
        policy = (service.plan.rollback.failure
                  if status.state is UpdateState.ROLLBACK_STARTED else service.plan.failure)
        verdict, wake_at = rollout.judge(status.state, policy, desired, views,
                                         now, parse_time_ns(status.started_at))
        if verdict is None:
            return wake_at
        log.info("service %s (%s): %s", service.id[:12], service.name, verdict.message)
        if verdict.rollback:
            try:
                self.manager.rollback(service.id, None, verdict.message)
                return None
            except SteelcupError:  # nothing to go back to: stop where it is
                verdict = rollout.Verdict(UpdateState.PAUSED, verdict.message.replace(
                    "rolled back", "paused") + " (no previous spec to roll back to)")
        done = verdict.state in (UpdateState.COMPLETED, UpdateState.ROLLBACK_COMPLETED)
        self.manager.set_update_status(service.id, replace(
            status, state=verdict.state, message=verdict.message,
            completed_at=now_rfc3339() if done else ""))
        return None

    def _desired(self, service: ServiceRecord | None) -> reconcile.Desired | None:
        if service is None:
            return None
        plan = service.plan
        slots = (0,) if plan.mode is Mode.GLOBAL else tuple(range(1, plan.replicas + 1))
        state = service.update_status.state if service.update_status is not None else None
        # A rollback replaces tasks per the RollbackConfig of the spec it goes back to (as
        # swarmkit); an update per its UpdateConfig.
        if state in (UpdateState.ROLLBACK_STARTED, UpdateState.ROLLBACK_PAUSED):
            parallelism, start_first, delay_s = (plan.rollback.parallelism,
                                                 plan.rollback.start_first,
                                                 plan.rollback.delay_s)
        else:
            parallelism, start_first, delay_s = (plan.parallelism, plan.update_start_first,
                                                 plan.update_delay_s)
        return reconcile.Desired(slots=slots, generation=service.generation,
                                 restart=plan.restart, parallelism=parallelism,
                                 start_first=start_first, update_delay_s=delay_s,
                                 paused=state in (UpdateState.PAUSED,
                                                  UpdateState.ROLLBACK_PAUSED))

    def _view(self, task: TaskRecord) -> reconcile.TaskView:
        return reconcile.TaskView(
            id=task.id, slot=task.slot, generation=task.generation, desired=task.desired,
            state=task.state, ended_ns=task.ended_ns,
            container_gone=self._container(task.container_id) is None,
            since_ns=parse_time_ns(task.state_at) if task.state_at else 0)

    def _apply(self, service: ServiceRecord | None, decided: reconcile.Plan) -> bool:
        for task_id in decided.forget:
            self.tasks.pop(task_id, None)
            self.store.delete_task(task_id)
        for task_id in decided.reap:
            if task_id not in self._acting:
                self._spawn(task_id, self._reap(task_id))
        for desired, ids in ((TaskState.SHUTDOWN, decided.shut),
                             (TaskState.REMOVE, decided.remove)):
            for task_id in ids:
                self._shut(self.tasks[task_id], desired)
        if service is not None:
            for slot in decided.start:
                self._launch(service, slot)
        return bool(decided.forget or decided.shut or decided.remove or decided.start)

    # -- effects -----------------------------------------------------------------------------

    def _spawn(self, task_id: str, effect: Coroutine[Any, Any, None]) -> None:
        self._acting.add(task_id)

        async def run() -> None:
            try:
                await effect
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug: the task fails (and is replaced), not stuck
                log.exception("task %s: the orchestrator's action failed", task_id)
                task = self.tasks.get(task_id)
                if task is not None and not task.state.terminal:
                    self._end(task, why=f"internal error: {exc!r}")
            finally:
                self._acting.discard(task_id)
                self._wake.set()

        job = asyncio.create_task(run(), name=f"task-{task_id[:12]}")
        self._effects.add(job)
        job.add_done_callback(self._effects.discard)
        # cancelled before it ran (the orchestrator closing): `effect` was never awaited
        job.add_done_callback(lambda _job: effect.close())

    def _launch(self, service: ServiceRecord, slot: int) -> None:
        now = now_rfc3339()
        task = TaskRecord(id=new_object_id(), service_id=service.id, tenant=service.tenant,
                          slot=slot, node_id=self.manager.swarm.node_id,
                          generation=service.generation, task_doc=service.task_doc,
                          created_at=now, updated_at=now, state_at=now,
                          message="created")
        self.tasks[task.id] = task
        self.store.save_task(task)
        self._spawn(task.id, self._create_and_start(service, task.id))

    async def _create_and_start(self, service: ServiceRecord, task_id: str) -> None:
        task = self._set(self.tasks[task_id], state=TaskState.PREPARING, message="preparing")
        name = f"{task_name(service, task)}.{task.id}"
        image = service.plan.template.image
        if self.pull_image is not None and not has_image(self.runtime.images, image,
                                                         service.tenant):
            task = self._set(task, message=f"pulling {image}")
            try:
                await self.pull_image(image, service.tenant)
            except SteelcupError as exc:
                self._end(task, why=f"pulling {image}: {exc}", state=TaskState.REJECTED)
                return
        try:
            record = self.create_container(task_config(service, task), name)
        except SteelcupError as exc:  # no such image, over a quota, bad settings
            self._end(task, why=str(exc), state=TaskState.REJECTED)
            return
        self._by_container[record.id] = task.id
        task = self._set(task, container_id=record.id, state=TaskState.STARTING,
                         message="starting")
        if task.desired is TaskState.RUNNING:
            try:
                await self.runtime.start(record.id)
            except SteelcupError as exc:
                task = self.tasks.get(task_id, task)
                if not task.state.terminal:
                    self._end(task, why=str(exc))
                return
        task = self.tasks.get(task_id, task)
        if task.state is TaskState.STARTING:
            started = self._container(record.id)
            if task.desired is not TaskState.RUNNING:  # shut down while it was starting
                await self._stop_container(task_id)
            elif started is not None and awaits_health(started):
                self._set(task, message=WAITING_HEALTHY)  # running once healthy (observe)
            else:
                self._set(task, state=TaskState.RUNNING, message="started")

    def _shut(self, task: TaskRecord, desired: TaskState) -> None:
        task = self._set(task, desired=desired)
        if task.state.terminal or task.id in self._acting:
            return  # terminal: nothing runs; acting: the launch sees the new desired state
        self._spawn(task.id, self._stop_container(task.id))

    async def _stop_container(self, task_id: str) -> None:
        task = self.tasks.get(task_id)
        if task is None:
            return
        await self.before_stop(task)
        record = self._container(task.container_id)
        # A suspended replica is stopped without running it on (its saved VM is dropped).
        if record is not None and (record.state.running or record.state.suspended):
            grace = self.manager.services[task.service_id].plan.stop_grace_s \
                if task.service_id in self.manager.services else None
            with contextlib.suppress(NotFound, Conflict):  # Conflict: being removed
                await self.runtime.stop(record.id, grace)
        task = self.tasks.get(task_id)
        if task is not None and not task.state.terminal:  # no die event came (not running)
            code = record.state.exit_code if record is not None else None
            self._ended(task, code)

    async def _reap(self, task_id: str) -> None:
        task = self.tasks.get(task_id)
        if task is not None and task.container_id:
            with contextlib.suppress(NotFound, Conflict):  # Conflict: a removal in progress
                await self.runtime.remove(task.container_id, force=True)

    # -- task records ------------------------------------------------------------------------

    def container(self, container_id: str) -> ContainerRecord | None:
        """A task's container as the runtime has it now (None: gone)."""
        return self._container(container_id)

    def _container(self, container_id: str) -> ContainerRecord | None:
        if not container_id:
            return None
        try:
            return self.runtime.record(container_id)
        except NotFound:
            return None

    def _set(self, task: TaskRecord, **changes: Any) -> TaskRecord:
        now = now_rfc3339()
        if "state" in changes:
            changes["state_at"] = now
        current = self.tasks.get(task.id)
        if current is None:  # forgotten meanwhile: nothing to keep
            return task.bump(updated_at=now, **changes)
        task = current.bump(updated_at=now, **changes)
        self.tasks[task.id] = task
        self.store.save_task(task)
        self.task_changed(task)
        return task

    def _ended(self, task: TaskRecord, exit_code: int | None) -> None:
        """The task's container stopped (with `exit_code`)."""
        task = self.tasks.get(task.id, task)
        if task.desired is not TaskState.RUNNING:
            self._set(task, state=TaskState.SHUTDOWN, message="shutdown",
                      exit_code=exit_code, ended_ns=self.clock_ns())
        elif task.unhealthy:
            self._end(task, why=UNHEALTHY, exit_code=exit_code)
        elif exit_code:
            self._end(task, why=f"task: non-zero exit ({exit_code})", exit_code=exit_code)
        else:
            self._set(task, state=TaskState.COMPLETE, message="finished", exit_code=exit_code,
                      ended_ns=self.clock_ns())

    def _end(self, task: TaskRecord, *, why: str, state: TaskState = TaskState.FAILED,
             exit_code: int | None = None) -> None:
        task = self.tasks.get(task.id, task)
        if task.desired is not TaskState.RUNNING:
            state = TaskState.SHUTDOWN
        self._set(task, state=state, err=why, exit_code=exit_code, ended_ns=self.clock_ns(),
                  message="shutdown" if state is TaskState.SHUTDOWN else task.message)
