"""The reconciler's decisions, pure: from a service's desired state and its tasks as they are,
what to do now (start a task in a slot, shut one down, remove one, reap a container, forget a
record) and when to look again. `orchestrator.py` carries the decisions out.

Rules (swarmkit's, on one node):
- one task per slot whose desired state is running; a slot with none gets a new task once no
  older task of the slot is still stopping (an update is stop-first);
- a task that ended by itself (its container exited, was removed, or was stopped for failing
  its health check) is replaced per the restart policy: condition any / on-failure (only a
  failed or rejected task) / none, after `delay` from its end, at most `max_attempts`
  restarts counted within `window` (0: over the slot's whole life);
- a task of another generation (the service's image, env, ... changed, or a rollback went
  back to an earlier generation) is replaced,
  `parallelism` slots at a time (0: all), the next batch once the slot's new task runs and
  `update_delay` after that: stop-first (the old task is shut down, then the new one starts)
  or start-first (the new one starts, the old one is shut down once it runs);
- slots above the replica count, and every task of a removed service, are removed;
- a task that ended keeps its container (its logs) while it is its slot's task; once
  replaced or removed, its container goes (docker keeps those too; here they would count
  against a tenant's containers quota) and, of the tasks a slot replaced, the newest
  `history` records are kept (docker's TaskHistoryRetentionLimit), older ones forgotten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from steelcup.services.model import Condition, RestartPolicy, TaskState

NS = 1_000_000_000
HISTORY = 5


@dataclass(frozen=True)
class Desired:
    slots: tuple[int, ...]  # replicated: 1..replicas; global: (0,), one node
    generation: int
    restart: RestartPolicy = RestartPolicy()
    parallelism: int = 1
    start_first: bool = False  # UpdateConfig.Order start-first: the new task runs first
    update_delay_s: float = 0.0  # UpdateConfig.Delay: between one batch running and the next
    paused: bool = False  # the update was paused (its failure action): no more replacing


@dataclass(frozen=True)
class TaskView:
    id: str
    slot: int
    generation: int
    desired: TaskState
    state: TaskState
    ended_ns: int = 0
    container_gone: bool = True  # no container (never made, or removed)
    since_ns: int = 0  # when it reached its state


@dataclass
class Plan:
    start: list[int] = field(default_factory=list)  # slots that get a new task now
    shut: list[str] = field(default_factory=list)  # tasks whose desired state -> shutdown
    remove: list[str] = field(default_factory=list)  # tasks whose desired state -> remove
    reap: list[str] = field(default_factory=list)  # terminal tasks whose container goes
    forget: list[str] = field(default_factory=list)  # task records to delete
    wake_at_ns: int | None = None  # look again then (a restart delay ends)

    def wake(self, at_ns: int) -> None:
        self.wake_at_ns = at_ns if self.wake_at_ns is None else min(self.wake_at_ns, at_ns)


def plan(desired: Desired | None, tasks: Sequence[TaskView], now_ns: int,
         history: int = HISTORY) -> Plan:
    """What to do for one service (`desired` None: it was removed) and its `tasks`."""
    out = Plan()
    for task in tasks:
        if (task.state.terminal and not task.container_gone
                and task.desired is not TaskState.RUNNING):
            out.reap.append(task.id)
    if desired is None:
        for task in tasks:
            _remove(task, out)
        return out
    wanted = set(desired.slots)
    by_slot: dict[int, list[TaskView]] = {}
    for task in tasks:
        if task.slot not in wanted:
            _remove(task, out)
        else:
            by_slot.setdefault(task.slot, []).append(task)
    outdated: list[tuple[int, TaskView]] = []
    in_flight = 0
    updated_at_ns = 0  # when the last task of the current generation began to run
    for slot in desired.slots:
        slot_tasks = by_slot.get(slot, [])
        stopping = any(t.desired is not TaskState.RUNNING and not t.state.terminal
                       for t in slot_tasks)
        live = sorted((t for t in slot_tasks if t.desired is TaskState.RUNNING),
                      key=lambda t: (t.generation == desired.generation, t.since_ns, t.id))
        current = live[-1] if live else None
        if current is not None and current.generation == desired.generation and (
                current.state is TaskState.RUNNING):
            updated_at_ns = max(updated_at_ns, current.since_ns)
        if live[:-1]:  # one task per slot: the newest stays
            assert current is not None
            if (desired.start_first and current.generation == desired.generation
                    and not current.state.terminal and current.state is not TaskState.RUNNING):
                in_flight += 1  # start-first: the old one serves until the new one runs
                continue
            out.shut.extend(extra.id for extra in live[:-1])
        _prune_history(slot_tasks, current, history, out)
        if current is None:
            in_flight += 1  # stopping, or starting now: not running yet
            if not stopping:
                out.start.append(slot)
            continue
        if current.generation != desired.generation:
            outdated.append((slot, current))
        elif current.state.terminal:
            if _restart_due(desired.restart, current, slot_tasks, now_ns, out) and not stopping:
                out.shut.append(current.id)
                out.start.append(slot)
        elif current.state is not TaskState.RUNNING or stopping:
            in_flight += 1
    room = len(outdated) if desired.parallelism <= 0 else desired.parallelism - in_flight
    if desired.paused:
        room = 0
    next_batch_ns = updated_at_ns + int(desired.update_delay_s * NS) if updated_at_ns else 0
    if outdated and room > 0 and now_ns < next_batch_ns:
        out.wake(next_batch_ns)
        room = 0
    for slot, task in outdated[:max(room, 0)]:
        if desired.start_first and not task.state.terminal:
            out.start.append(slot)  # the old task is shut once the new one runs
        else:
            out.shut.append(task.id)
    return out


def _remove(task: TaskView, out: Plan) -> None:
    if task.desired is not TaskState.REMOVE:
        out.remove.append(task.id)
    elif task.state.terminal and task.container_gone:
        out.forget.append(task.id)


def _restart_due(policy: RestartPolicy, current: TaskView, slot_tasks: Sequence[TaskView],
                 now_ns: int, out: Plan) -> bool:
    """`current` ended by itself: whether the policy replaces it now (if later, when)."""
    if policy.condition is Condition.NONE:
        return False
    if policy.condition is Condition.ON_FAILURE and current.state not in (
            TaskState.FAILED, TaskState.REJECTED):
        return False
    if policy.max_attempts > 0:
        since = now_ns - int(policy.window_s * NS) if policy.window_s > 0 else 0
        ended = [t for t in slot_tasks if t.state in _ENDED_BY_ITSELF and t.ended_ns >= since]
        if len(ended) - 1 >= policy.max_attempts:  # the first run was no restart
            return False
    due = current.ended_ns + int(policy.delay_s * NS)
    if now_ns < due:
        out.wake(due)
        return False
    return True


_ENDED_BY_ITSELF = frozenset({TaskState.COMPLETE, TaskState.FAILED, TaskState.REJECTED})


def _prune_history(slot_tasks: Sequence[TaskView], current: TaskView | None, history: int,
                   out: Plan) -> None:
    old = sorted((t for t in slot_tasks if t is not current and t.state.terminal
                  and t.desired is not TaskState.RUNNING),
                 key=lambda t: t.ended_ns, reverse=True)
    for task in old[history:]:
        if task.container_gone:
            out.forget.append(task.id)
