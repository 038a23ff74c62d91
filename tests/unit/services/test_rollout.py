"""How a rolling update stands (pure): failures beyond the ratio trigger the failure action
(pause, rollback, or continue), a rollback pauses or continues per its RollbackConfig, and
an update whose slots all run a new task for `Monitor` is completed."""

from __future__ import annotations

from steelcup.services.model import FailureAction, FailurePolicy, TaskState, UpdateState
from steelcup.services.reconcile import NS, Desired, TaskView
from steelcup.services.rollout import judge

R, F, S = TaskState.RUNNING, TaskState.FAILED, TaskState.SHUTDOWN
NOW = 1_000 * NS
WANT = Desired(slots=(1, 2), generation=2)


def task(id: str, slot: int, state: TaskState = R, *, gen: int = 2,
         desired: TaskState = R, since_s: float = 900) -> TaskView:
    return TaskView(id=id, slot=slot, generation=gen, desired=desired, state=state,
                    since_ns=int(since_s * NS))


def test_completed_once_every_slot_ran_a_new_task_for_monitor() -> None:
    tasks = [task("a", 1), task("b", 2, since_s=998)]
    verdict, wake = judge(UpdateState.UPDATING, FailurePolicy(monitor_s=5), WANT, tasks, NOW)
    assert verdict is None and wake == 1003 * NS
    verdict, _ = judge(UpdateState.UPDATING, FailurePolicy(monitor_s=5), WANT, tasks,
                       1003 * NS)
    assert verdict is not None and verdict.state is UpdateState.COMPLETED


def test_not_done_while_an_old_task_runs() -> None:
    tasks = [task("a", 1), task("old", 2, gen=1)]
    assert judge(UpdateState.UPDATING, FailurePolicy(), WANT, tasks, NOW) == (None, None)


def test_failure_actions() -> None:
    tasks = [task("a", 1), task("b", 2, F, desired=S), task("c", 2)]
    pause, _ = judge(UpdateState.UPDATING, FailurePolicy(), WANT, tasks, NOW)
    assert pause is not None and pause.state is UpdateState.PAUSED
    assert pause.message == "update paused due to failure or early termination of task b"
    back, _ = judge(UpdateState.UPDATING, FailurePolicy(FailureAction.ROLLBACK), WANT,
                    tasks, NOW)
    assert back is not None and back.rollback and back.state is UpdateState.ROLLBACK_STARTED
    go_on, _ = judge(UpdateState.UPDATING, FailurePolicy(FailureAction.CONTINUE), WANT,
                     tasks, NOW)
    assert go_on is not None and go_on.state is UpdateState.COMPLETED
    tolerated, _ = judge(UpdateState.UPDATING, FailurePolicy(max_failure_ratio=0.5), WANT,
                         tasks, NOW)  # 1 failed of 3 new
    assert tolerated is not None and tolerated.state is UpdateState.COMPLETED
    stuck, _ = judge(UpdateState.ROLLBACK_STARTED, FailurePolicy(), WANT, tasks, NOW)
    assert stuck is not None and stuck.state is UpdateState.ROLLBACK_PAUSED
    assert stuck.message == "rollback paused due to failure or early termination of task b"
    # RollbackConfig.FailureAction continue: the rollback goes on to its end
    onward, _ = judge(UpdateState.ROLLBACK_STARTED, FailurePolicy(FailureAction.CONTINUE),
                      WANT, tasks, NOW)
    assert onward is not None and onward.state is UpdateState.ROLLBACK_COMPLETED


def test_nothing_to_judge_when_no_update_is_in_progress() -> None:
    assert judge(UpdateState.COMPLETED, FailurePolicy(), WANT, [], NOW) == (None, None)
    assert judge(UpdateState.PAUSED, FailurePolicy(), WANT, [], NOW) == (None, None)


def test_paused_update_replaces_nothing_more() -> None:
    from steelcup.services.reconcile import plan
    paused = Desired(slots=(1, 2), generation=2, paused=True)
    assert plan(paused, [task("a", 1, gen=1), task("b", 2, gen=1)], NOW).shut == []


def test_failures_from_before_the_update_do_not_count() -> None:
    """A rollback goes back to a generation that may have failed long ago."""
    old_failure = TaskView(id="x", slot=1, generation=2, desired=S, state=F,
                           ended_ns=500 * NS)
    tasks = [old_failure, task("a", 1, since_s=990), task("b", 2, since_s=990)]
    verdict, _ = judge(UpdateState.ROLLBACK_STARTED, FailurePolicy(monitor_s=1), WANT, tasks,
                       NOW, started_ns=980 * NS)
    assert verdict is not None and verdict.state is UpdateState.ROLLBACK_COMPLETED
