"""The container lifecycle as one table: for each status and operation, the next status or
docker's refusal (its daemon's words). Pure; the runtime applies it, the API maps refusals.

Operations are what a client asks (start, stop, ...) and what happens to a container (its
process started or exited, a restart policy fired, its removal failed). A client operation that
takes effect later (stop: the process exits afterwards) keeps the status; the event that
follows moves it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from steelcup.errors import Conflict
from steelcup.runtime.model import Status


class Op(enum.Enum):
    # asked by a client
    START = "start"
    STOP = "stop"
    KILL = "kill"
    PAUSE = "pause"
    UNPAUSE = "unpause"  # also the runtime's own resume before stop and kill
    RESTART = "restart"
    REMOVE = "remove"
    REMOVE_FORCE = "remove-force"
    WAIT = "wait"
    EXEC = "exec"
    TOP = "top"  # helper commands in the guest: top, stats
    ATTACH = "attach"
    RESIZE = "resize"
    UPDATE = "update"
    RENAME = "rename"
    COMMIT = "commit"
    EXPORT = "export"
    FILES = "files"  # cp, diff, sizes: the root filesystem, mounted while stopped
    CHECKPOINT = "checkpoint"  # save the running VM (docs/checkpoints.md)
    # what happens to a container
    STARTED = "started"  # its process runs
    START_FAILED = "start-failed"
    EXITED = "exited"  # its process ended (or its VM died)
    RESTART_DUE = "restart-due"  # its restart policy will start it again
    REMOVAL_FAILED = "removal-failed"  # half-removed: dead
    DAEMON_LOST = "daemon-lost"  # found by a new daemon: what ran died with the old one


@dataclass(frozen=True)
class Refusal:
    """Docker's message for an operation a status does not allow. The template may name
    `{id}` (full id), `{name}` (without '/'), `{ref}` (as the client gave it), `{status}`."""

    template: str

    def error(self, *, id: str, name: str, ref: str, status: Status) -> Conflict:
        return Conflict(self.template.format(id=id, name=name, ref=ref, status=status.value))


class NotModified(enum.Enum):
    """Allowed, and already so: start of a running container, stop of a stopped one (304)."""

    NOT_MODIFIED = "not-modified"


NOT_MODIFIED = NotModified.NOT_MODIFIED
Outcome = Status | NotModified | Refusal

C, R, P, RS, RM, X, D = (Status.CREATED, Status.RUNNING, Status.PAUSED, Status.RESTARTING,
                         Status.REMOVING, Status.EXITED, Status.DEAD)

NOT_RUNNING = Refusal("Container {id} is not running")
IS_RESTARTING = Refusal("Container {id} is restarting, wait until the container is running")
REMOVAL_IN_PROGRESS = Refusal("removal of container {ref} is already in progress")
MARKED_FOR_REMOVAL = Refusal("container is marked for removal and cannot be started")
# An event the runtime never reports in that status (the table stays total).
IMPOSSIBLE = Refusal("container {id} is {status}: this cannot happen in that state")


def _unchanged(*states: Status) -> dict[str, Outcome]:
    """Cells for `_row`: allowed in `states`, which it leaves as they are."""
    return {s.name: s for s in states}


def _row(default: Outcome, **cells: Outcome) -> dict[Status, Outcome]:
    """`default` in every status not named (by its enum name) in `cells`."""
    unknown = set(cells) - {s.name for s in Status}
    assert not unknown, unknown
    return {s: cells.get(s.name, default) for s in Status}


TABLE: dict[Op, dict[Status, Outcome]] = {
    Op.START: _row(
        C, EXITED=X, RESTARTING=RS, RUNNING=NOT_MODIFIED,
        PAUSED=Refusal("cannot start a paused container, try unpause instead"),
        REMOVING=MARKED_FOR_REMOVAL, DEAD=MARKED_FOR_REMOVAL),
    # a stop or kill of a restarting container cancels the pending restart: exited
    Op.STOP: _row(NOT_MODIFIED, RUNNING=R, PAUSED=P, RESTARTING=X,
                  REMOVING=REMOVAL_IN_PROGRESS),
    Op.KILL: _row(Refusal("Cannot kill container: {id}: Container {id} is not running"),
                  RUNNING=R, PAUSED=P, RESTARTING=X, REMOVING=REMOVAL_IN_PROGRESS),
    Op.PAUSE: _row(NOT_RUNNING, RUNNING=P, PAUSED=Refusal("Container {id} is already paused"),
                   RESTARTING=IS_RESTARTING, REMOVING=REMOVAL_IN_PROGRESS),
    Op.UNPAUSE: _row(Refusal("Container {id} is not paused"), PAUSED=R,
                     REMOVING=REMOVAL_IN_PROGRESS),
    Op.RESTART: _row(MARKED_FOR_REMOVAL, **_unchanged(C, R, P, RS, X)),
    Op.REMOVE: _row(
        RM, REMOVING=REMOVAL_IN_PROGRESS,
        RUNNING=Refusal('cannot remove container "/{name}": container is running: stop the '
                        "container before removing or force remove"),
        PAUSED=Refusal('cannot remove container "/{name}": container is paused and must be '
                       "unpaused first"),
        RESTARTING=Refusal('cannot remove container "/{name}": container is restarting: stop '
                           "the container before removing or force remove")),
    Op.REMOVE_FORCE: _row(RM, REMOVING=REMOVAL_IN_PROGRESS),
    Op.WAIT: _row(C, **_unchanged(*Status)),
    Op.EXEC: _row(NOT_RUNNING, RUNNING=R, RESTARTING=IS_RESTARTING,
                  PAUSED=Refusal("Container {id} is paused, unpause the container before exec"),
                  REMOVING=REMOVAL_IN_PROGRESS),
    Op.TOP: _row(NOT_RUNNING, RUNNING=R, RESTARTING=IS_RESTARTING,
                 PAUSED=Refusal("Container {id} is paused, unpause the container first")),
    Op.ATTACH: _row(Refusal("cannot attach to a {status} container"),
                    **_unchanged(C, R, P, RS, X)),
    Op.RESIZE: _row(NOT_RUNNING, RUNNING=R, PAUSED=P),
    Op.UPDATE: _row(
        Refusal('Cannot update container {id}: container is marked for removal and cannot '
                'be "update"'), **_unchanged(C, R, P, RS, X)),
    Op.RENAME: _row(REMOVAL_IN_PROGRESS, **_unchanged(C, R, P, RS, X, D)),
    Op.COMMIT: _row(Refusal("You cannot commit container {id} which is being removed"),
                    DEAD=Refusal("You cannot commit container {id} which is Dead"),
                    **_unchanged(C, R, P, RS, X)),
    Op.EXPORT: _row(Refusal("You cannot export container {id} which is being removed"),
                    DEAD=Refusal("You cannot export container {id} which is Dead"),
                    **_unchanged(C, R, P, RS, X)),
    Op.FILES: _row(Refusal("You cannot access the files of container {id} which is being "
                           "removed"),
                   DEAD=Refusal("You cannot access the files of container {id} which is Dead"),
                   **_unchanged(C, R, P, RS, X)),
    Op.CHECKPOINT: _row(NOT_RUNNING, RUNNING=R, RESTARTING=IS_RESTARTING,
                        PAUSED=Refusal("Container {id} is paused, unpause the container "
                                       "before checkpoint"),
                        REMOVING=REMOVAL_IN_PROGRESS),
    # A start that finds the container being removed meanwhile is abandoned.
    Op.STARTED: _row(IMPOSSIBLE, CREATED=R, EXITED=R, RESTARTING=R,
                     REMOVING=MARKED_FOR_REMOVAL),
    Op.START_FAILED: _row(IMPOSSIBLE, CREATED=C, EXITED=X, RESTARTING=X, REMOVING=RM),
    Op.EXITED: _row(IMPOSSIBLE, RUNNING=X, PAUSED=X, REMOVING=RM),
    Op.RESTART_DUE: _row(IMPOSSIBLE, EXITED=RS, REMOVING=REMOVAL_IN_PROGRESS),
    Op.REMOVAL_FAILED: _row(IMPOSSIBLE, REMOVING=D),
    Op.DAEMON_LOST: _row(X, CREATED=C, REMOVING=D, DEAD=D),
}


def transition(status: Status, op: Op) -> Outcome:
    """What `op` does to a container in `status`: its next status, NOT_MODIFIED, or the
    refusal the client gets."""
    return TABLE[op][status]


def allows(status: Status, op: Op) -> bool:
    return not isinstance(transition(status, op), Refusal)
