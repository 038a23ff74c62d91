"""The verdict on a rolling update in progress (pure): its new tasks failing beyond
`UpdateConfig.MaxFailureRatio` trigger its FailureAction (pause, or rollback to the previous
spec; continue ignores failures); once every slot runs a new task for `Monitor`, it is
completed. A rollback is judged the same way with its RollbackConfig's policy: it pauses on
failure (the default) or continues. `reconcile.plan` does the replacing; this only says how
the update stands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from steelcup.services.model import FailureAction, FailurePolicy, TaskState, UpdateState
from steelcup.services.reconcile import NS, Desired, TaskView

_FAILED = (TaskState.FAILED, TaskState.REJECTED)


@dataclass(frozen=True)
class Verdict:
    state: UpdateState
    message: str
    rollback: bool = False  # go back to the previous spec (the manager's `rollback`)


def judge(state: UpdateState, policy: FailurePolicy, desired: Desired,
          tasks: Sequence[TaskView], now_ns: int, started_ns: int = 0
          ) -> tuple[Verdict | None, int | None]:
    """The update's new state (None: unchanged) and when to judge again (None: at the
    next event). `started_ns`: when the update began (a rollback goes back to a generation
    whose earlier failures are not this update's)."""
    if not state.in_progress:
        return None, None
    rolling_back = state is UpdateState.ROLLBACK_STARTED
    new = [t for t in tasks if t.generation == desired.generation
           and (not t.state.terminal or t.ended_ns >= started_ns)]
    failed = [t for t in new if t.state in _FAILED]
    if failed and len(failed) / len(new) > policy.max_failure_ratio and (
            policy.action is not FailureAction.CONTINUE):
        why = f"failure or early termination of task {failed[0].id}"
        if rolling_back:
            return Verdict(UpdateState.ROLLBACK_PAUSED, f"rollback paused due to {why}"), None
        if policy.action is FailureAction.ROLLBACK:
            return Verdict(UpdateState.ROLLBACK_STARTED, f"update rolled back due to {why}",
                           rollback=True), None
        return Verdict(UpdateState.PAUSED, f"update paused due to {why}"), None
    running_since = []
    for slot in desired.slots:
        live = [t for t in tasks if t.slot == slot and t.desired is TaskState.RUNNING]
        if any(t.generation != desired.generation for t in live):
            return None, None  # an old task still runs here
        ready = [t.since_ns for t in live if t.state is TaskState.RUNNING]
        if not ready:
            return None, None
        running_since.append(max(ready))
    stable_at = max(running_since, default=now_ns) + int(policy.monitor_s * NS)
    if now_ns < stable_at:
        return None, stable_at
    if rolling_back:
        return Verdict(UpdateState.ROLLBACK_COMPLETED, "rollback completed"), None
    return Verdict(UpdateState.COMPLETED, "update completed"), None
