"""The lifecycle table, exhaustively: every status × every operation has the outcome docker's
daemon gives (next status, not modified, or its 409 message)."""

from __future__ import annotations

import pytest

from steelcup.errors import Conflict
from steelcup.runtime.lifecycle import (
    NOT_MODIFIED,
    TABLE,
    NotModified,
    Op,
    Outcome,
    Refusal,
    allows,
    transition,
)
from steelcup.runtime.model import Status

C, R, P, RS, RM, X, D = (Status.CREATED, Status.RUNNING, Status.PAUSED, Status.RESTARTING,
                         Status.REMOVING, Status.EXITED, Status.DEAD)
NM = NOT_MODIFIED
ID = "c0ffee"
NOT_RUNNING = f"Container {ID} is not running"
RESTARTING = f"Container {ID} is restarting, wait until the container is running"
IN_PROGRESS = "removal of container web is already in progress"
MARKED = "container is marked for removal and cannot be started"
IMPOSSIBLE = "this cannot happen"
RM_RUNNING = ('cannot remove container "/web": container is running: stop the container '
              "before removing or force remove")
RM_PAUSED = 'cannot remove container "/web": container is paused and must be unpaused first'
RM_RESTARTING = ('cannot remove container "/web": container is restarting: stop the container '
                 "before removing or force remove")
KILL_NOT_RUNNING = f"Cannot kill container: {ID}: Container {ID} is not running"
NOT_PAUSED = f"Container {ID} is not paused"
UPDATE_REMOVED = (f'Cannot update container {ID}: container is marked for removal and cannot '
                  'be "update"')

# Expected outcome per operation, in the order of STATES.
STATES = (C, R, P, RS, RM, X, D)
EXPECTED: dict[Op, tuple[Status | NotModified | str, ...]] = {
    Op.START: (C, NM, "cannot start a paused container, try unpause instead", RS, MARKED, X,
               MARKED),
    Op.STOP: (NM, R, P, X, IN_PROGRESS, NM, NM),
    Op.KILL: (KILL_NOT_RUNNING, R, P, X, IN_PROGRESS, KILL_NOT_RUNNING, KILL_NOT_RUNNING),
    Op.PAUSE: (NOT_RUNNING, P, f"Container {ID} is already paused", RESTARTING, IN_PROGRESS,
               NOT_RUNNING, NOT_RUNNING),
    Op.UNPAUSE: (NOT_PAUSED, NOT_PAUSED, R, NOT_PAUSED, IN_PROGRESS, NOT_PAUSED, NOT_PAUSED),
    Op.RESTART: (C, R, P, RS, MARKED, X, MARKED),
    Op.REMOVE: (RM, RM_RUNNING, RM_PAUSED, RM_RESTARTING, IN_PROGRESS, RM, RM),
    Op.REMOVE_FORCE: (RM, RM, RM, RM, IN_PROGRESS, RM, RM),
    Op.WAIT: (C, R, P, RS, RM, X, D),
    Op.EXEC: (NOT_RUNNING, R, f"Container {ID} is paused, unpause the container before exec",
              RESTARTING, IN_PROGRESS, NOT_RUNNING, NOT_RUNNING),
    Op.TOP: (NOT_RUNNING, R, f"Container {ID} is paused, unpause the container first",
             RESTARTING, NOT_RUNNING, NOT_RUNNING, NOT_RUNNING),
    Op.ATTACH: (C, R, P, RS, "cannot attach to a removing container", X,
                "cannot attach to a dead container"),
    Op.RESIZE: (NOT_RUNNING, R, P, NOT_RUNNING, NOT_RUNNING, NOT_RUNNING, NOT_RUNNING),
    Op.UPDATE: (C, R, P, RS, UPDATE_REMOVED, X, UPDATE_REMOVED),
    Op.RENAME: (C, R, P, RS, IN_PROGRESS, X, D),
    Op.COMMIT: (C, R, P, RS, f"You cannot commit container {ID} which is being removed", X,
                f"You cannot commit container {ID} which is Dead"),
    Op.EXPORT: (C, R, P, RS, f"You cannot export container {ID} which is being removed", X,
                f"You cannot export container {ID} which is Dead"),
    Op.FILES: (C, R, P, RS, f"You cannot access the files of container {ID} which is being "
               "removed", X, f"You cannot access the files of container {ID} which is Dead"),
    Op.CHECKPOINT: (NOT_RUNNING, R, f"Container {ID} is paused, unpause the container before "
                    "checkpoint", RESTARTING, IN_PROGRESS, NOT_RUNNING, NOT_RUNNING),
    Op.STARTED: (R, IMPOSSIBLE, IMPOSSIBLE, R, MARKED, R, IMPOSSIBLE),
    Op.START_FAILED: (C, IMPOSSIBLE, IMPOSSIBLE, X, RM, X, IMPOSSIBLE),
    Op.EXITED: (IMPOSSIBLE, X, X, IMPOSSIBLE, RM, IMPOSSIBLE, IMPOSSIBLE),
    Op.RESTART_DUE: (IMPOSSIBLE, IMPOSSIBLE, IMPOSSIBLE, IMPOSSIBLE, IN_PROGRESS, RS,
                     IMPOSSIBLE),
    Op.REMOVAL_FAILED: (IMPOSSIBLE, IMPOSSIBLE, IMPOSSIBLE, IMPOSSIBLE, D, IMPOSSIBLE,
                        IMPOSSIBLE),
    Op.DAEMON_LOST: (C, X, X, X, D, X, D),
}


def test_every_operation_has_an_expected_row() -> None:
    assert set(EXPECTED) == set(Op) == set(TABLE)
    assert all(len(row) == len(Status) for row in EXPECTED.values())
    assert all(set(row) == set(Status) for row in TABLE.values())


def _message(outcome: Outcome, status: Status) -> str:
    assert isinstance(outcome, Refusal)
    error = outcome.error(id=ID, name="web", ref="web", status=status)
    assert isinstance(error, Conflict)
    return str(error)


@pytest.mark.parametrize("status", STATES, ids=[s.value for s in STATES])
@pytest.mark.parametrize("op", list(Op), ids=[o.value for o in Op])
def test_transition(status: Status, op: Op) -> None:
    want = EXPECTED[op][STATES.index(status)]
    got = transition(status, op)
    if isinstance(want, str):
        message = _message(got, status)
        assert message == want or (want == IMPOSSIBLE and IMPOSSIBLE in message), message
        assert not allows(status, op)
    else:
        assert got is want
        assert allows(status, op)


def test_a_client_operation_never_leaves_a_container_without_a_way_out() -> None:
    """Whatever the status, a forced removal is possible unless one is already under way."""
    for status in STATES:
        assert allows(status, Op.REMOVE_FORCE) == (status is not RM)
