"""The reconciler's decisions (pure): slots filled, restart policies (condition, delay, max
attempts, window), scale down, stop-first updates `parallelism` at a time, removal, reaping and
history."""

from __future__ import annotations

from steelcup.services.model import Condition, RestartPolicy, TaskState
from steelcup.services.reconcile import NS, Desired, TaskView, plan

R, S, F, C = TaskState.RUNNING, TaskState.SHUTDOWN, TaskState.FAILED, TaskState.COMPLETE
NOW = 1_000 * NS


def task(id: str, slot: int, state: TaskState = R, *, desired: TaskState = R,
         gen: int = 1, ended_s: float = 0, gone: bool = False) -> TaskView:
    return TaskView(id=id, slot=slot, generation=gen, desired=desired, state=state,
                    ended_ns=int(ended_s * NS), container_gone=gone)


def desired(replicas: int = 3, *, gen: int = 1, parallelism: int = 1,
            **restart: object) -> Desired:
    return Desired(slots=tuple(range(1, replicas + 1)), generation=gen,
                   restart=RestartPolicy(**restart),  # type: ignore[arg-type]
                   parallelism=parallelism)


def test_empty_service_starts_every_slot() -> None:
    assert plan(desired(3), [], NOW).start == [1, 2, 3]


def test_running_tasks_need_nothing() -> None:
    decided = plan(desired(2), [task("a", 1), task("b", 2)], NOW)
    assert (decided.start, decided.shut, decided.remove, decided.reap) == ([], [], [], [])
    assert decided.wake_at_ns is None


def test_failed_task_is_replaced_after_its_delay() -> None:
    failed = task("a", 1, F, ended_s=999)
    early = plan(desired(1, delay_s=5.0), [failed], NOW)
    assert early.start == [] and early.wake_at_ns == 1004 * NS
    due = plan(desired(1, delay_s=5.0), [failed], 1004 * NS)
    assert due.start == [1] and due.shut == ["a"]


def test_conditions() -> None:
    done = task("a", 1, C, ended_s=1)
    failed = task("b", 1, F, ended_s=1)
    assert plan(desired(1, condition=Condition.NONE, delay_s=0), [failed], NOW).start == []
    on_failure = desired(1, condition=Condition.ON_FAILURE, delay_s=0)
    assert plan(on_failure, [done], NOW).start == []
    assert plan(on_failure, [failed], NOW).start == [1]
    assert plan(desired(1, delay_s=0), [done], NOW).start == [1]  # any


def test_max_attempts_within_window() -> None:
    history = [task("a", 1, F, desired=S, ended_s=100), task("b", 1, F, desired=S, ended_s=990),
               task("c", 1, F, ended_s=995, gone=False)]
    # two restarts so far (b, c), two allowed: no third
    assert plan(desired(1, delay_s=0, max_attempts=2), history, NOW).start == []
    # a window of 60 s counts only b and c's ends: one restart so far
    windowed = desired(1, delay_s=0, max_attempts=2, window_s=60.0)
    assert plan(windowed, history, NOW).start == [1]


def test_scale_down_removes_the_slots_above() -> None:
    tasks = [task("a", 1), task("b", 2), task("c", 3)]
    decided = plan(desired(1), tasks, NOW)
    assert sorted(decided.remove) == ["b", "c"] and decided.start == []
    gone = [task("b", 2, S, desired=TaskState.REMOVE, gone=True)]
    assert plan(desired(1), [task("a", 1), *gone], NOW).forget == ["b"]


def test_removed_service_removes_then_forgets_everything() -> None:
    tasks = [task("a", 1), task("b", 2, S, desired=TaskState.REMOVE, gone=False),
             task("c", 3, S, desired=TaskState.REMOVE, gone=True)]
    decided = plan(None, tasks, NOW)
    assert decided.remove == ["a"] and decided.reap == ["b"] and decided.forget == ["c"]


def test_update_is_stop_first_one_slot_at_a_time() -> None:
    old = [task("a", 1), task("b", 2), task("c", 3)]
    first = plan(desired(3, gen=2), old, NOW)
    assert first.shut == ["a"] and first.start == []
    stopping = [task("a", 1, R, desired=S), task("b", 2), task("c", 3)]
    assert plan(desired(3, gen=2), stopping, NOW).shut == []  # slot 1 still in flight
    stopped = [task("a", 1, S, desired=S, ended_s=999), task("b", 2), task("c", 3)]
    assert plan(desired(3, gen=2), stopped, NOW).start == [1]
    assert plan(desired(3, gen=2), stopped, NOW).shut == []  # slot 1's new task first
    starting = [*stopped, task("d", 1, TaskState.STARTING, gen=2)]
    assert plan(desired(3, gen=2), starting, NOW).shut == []
    done = [*stopped, task("d", 1, R, gen=2)]
    assert plan(desired(3, gen=2), done, NOW).shut == ["b"]
    assert sorted(plan(desired(3, gen=2, parallelism=0), old, NOW).shut) == ["a", "b", "c"]


def test_containers_of_replaced_tasks_are_reaped_current_ones_kept() -> None:
    tasks = [task("a", 1, F, desired=S, ended_s=1, gone=False),
             task("b", 1, C, ended_s=2, gone=False)]
    decided = plan(desired(1, condition=Condition.NONE), tasks, NOW)
    assert decided.reap == ["a"]  # b is still its slot's task: its logs stay readable


def test_history_keeps_the_newest() -> None:
    old = [task(f"h{i}", 1, F, desired=S, ended_s=i, gone=True) for i in range(8)]
    decided = plan(desired(1), [*old, task("now", 1)], NOW, history=5)
    assert sorted(decided.forget) == ["h0", "h1", "h2"]


def test_global_service_has_one_slot_zero() -> None:
    assert plan(Desired(slots=(0,), generation=1), [], NOW).start == [0]


def test_start_first_update_keeps_the_old_task_until_the_new_one_runs() -> None:
    want = Desired(slots=(1, 2), generation=2, start_first=True)
    old = [task("a", 1), task("b", 2)]
    first = plan(want, old, NOW)
    assert first.start == [1] and first.shut == []  # a keeps serving
    starting = [*old, task("c", 1, TaskState.STARTING, gen=2)]
    assert plan(want, starting, NOW).shut == [] and plan(want, starting, NOW).start == []
    running = [*old, task("c", 1, R, gen=2)]
    decided = plan(want, running, NOW)
    assert decided.shut == ["a"] and decided.start == [2]  # then the next slot


def test_update_delay_between_batches() -> None:
    want = Desired(slots=(1, 2), generation=2, update_delay_s=10.0)
    done_first = [task("a", 1, S, desired=S, ended_s=990), TaskView(
        id="c", slot=1, generation=2, desired=R, state=R, since_ns=995 * NS), task("b", 2)]
    early = plan(want, done_first, NOW)
    assert early.shut == [] and early.wake_at_ns == 1005 * NS
    assert plan(want, done_first, 1005 * NS).shut == ["b"]
