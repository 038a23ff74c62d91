"""A cron job and its runs as records (pure: no I/O), with their JSON forms for the store.

A cron's container is kept as the docker create body the CLI's `run` flags produce, so a job
container is made exactly as `POST /containers/create` makes one (one meaning for run flags).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from steelcup.cron.schedule import Concurrency, Schedule, parse_schedule
from steelcup.errors import InvalidArgument

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
LOG_LINES = 20  # the last lines of a run's output kept in its history entry
LOG_LINE_MAX = 1000  # characters of one kept line
HISTORY_MAX = 1000  # the largest --history-limit


def check_cron_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise InvalidArgument(f"invalid cron name {name!r}: 1-63 of [a-zA-Z0-9_.-], starting "
                              "with a letter or digit")
    return name


def iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def from_iso(text: str) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


@dataclass(frozen=True)
class CronSpec:
    """What the user asked for. `created` anchors `@every` schedules."""

    name: str
    schedule: str
    container: dict[str, Any]  # the POST /containers/create body
    created: datetime
    tenant: str = ""  # "" = the operator's own
    timezone: str = ""  # "" = UTC
    concurrency: Concurrency = Concurrency.ALLOW
    starting_deadline_s: float | None = None  # None: a late run always runs (once)
    keep_succeeded: int = 5
    keep_failed: int = 5

    def __post_init__(self) -> None:
        check_cron_name(self.name)
        self.parsed()  # refuse a bad schedule or zone at once
        if self.starting_deadline_s is not None and self.starting_deadline_s < 0:
            raise InvalidArgument("the starting deadline must not be negative")
        for what, value in (("succeeded", self.keep_succeeded), ("failed", self.keep_failed)):
            if not 0 <= value <= HISTORY_MAX:
                raise InvalidArgument(f"history limit of {what} runs must be 0 to "
                                      f"{HISTORY_MAX}, not {value}")

    @property
    def key(self) -> str:
        """The cron's name daemon-wide: NAME (the operator's), TENANT/NAME (a tenant's)."""
        return f"{self.tenant}/{self.name}" if self.tenant else self.name

    def parsed(self) -> Schedule:
        return parse_schedule(self.schedule, self.timezone, self.created)

    def to_json(self) -> dict[str, Any]:
        return {"Name": self.name, "Tenant": self.tenant, "Schedule": self.schedule,
                "Timezone": self.timezone, "Concurrency": self.concurrency.value,
                "StartingDeadlineSeconds": self.starting_deadline_s,
                "HistoryLimit": {"Succeeded": self.keep_succeeded, "Failed": self.keep_failed},
                "Created": iso(self.created), "Container": self.container}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CronSpec:
        limit = data.get("HistoryLimit") or {}
        created = from_iso(str(data["Created"]))
        assert created is not None
        return cls(name=str(data["Name"]), schedule=str(data["Schedule"]),
                   container=dict(data["Container"]), created=created,
                   tenant=str(data.get("Tenant", "")), timezone=str(data.get("Timezone", "")),
                   concurrency=Concurrency.parse(str(data.get("Concurrency", "allow"))),
                   starting_deadline_s=data.get("StartingDeadlineSeconds"),
                   keep_succeeded=int(limit.get("Succeeded", 5)),
                   keep_failed=int(limit.get("Failed", 5)))


@dataclass(frozen=True)
class CronState:
    """What changes as the cron lives: suspended or not, and up to when its fire times are
    decided (the next look at the schedule starts after `considered`)."""

    suspended: bool
    considered: datetime


class RunStatus(enum.Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # exit code 0
    FAILED = "failed"  # another exit code, or the container could not be made or started
    STOPPED = "stopped"  # stopped by the `replace` policy or `cron rm --force`
    MISSED = "missed"  # past its starting deadline, or superseded by a later fire time
    SKIPPED = "skipped"  # the `forbid` policy: an earlier run was still going

    @property
    def succeeded(self) -> bool:
        """Counted against the succeeded history limit (everything else ended: failed)."""
        return self is RunStatus.SUCCEEDED


@dataclass(frozen=True)
class CronRun:
    """One entry of a cron's history."""

    id: str
    cron: str  # the cron's key
    status: RunStatus
    scheduled: datetime | None = None  # the fire time; None for `cron run`
    manual: bool = False
    started: datetime | None = None
    finished: datetime | None = None
    exit_code: int | None = None
    container_id: str = ""
    error: str = ""
    missed: int = 0  # MISSED: how many fire times this entry stands for
    logs: tuple[str, ...] = field(default=())

    def ended(self, status: RunStatus, finished: datetime, *, exit_code: int | None = None,
              error: str = "", logs: tuple[str, ...] = ()) -> CronRun:
        return replace(self, status=status, finished=finished, exit_code=exit_code,
                       error=error or self.error, logs=logs or self.logs)

    def to_json(self) -> dict[str, Any]:
        return {"Id": self.id, "Cron": self.cron, "Status": self.status.value,
                "Scheduled": iso(self.scheduled), "Manual": self.manual,
                "Started": iso(self.started), "Finished": iso(self.finished),
                "ExitCode": self.exit_code, "ContainerId": self.container_id,
                "Error": self.error, "Missed": self.missed, "Logs": list(self.logs)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CronRun:
        code = data.get("ExitCode")
        return cls(id=str(data["Id"]), cron=str(data["Cron"]),
                   status=RunStatus(str(data["Status"])),
                   scheduled=from_iso(str(data.get("Scheduled", ""))),
                   manual=bool(data.get("Manual", False)),
                   started=from_iso(str(data.get("Started", ""))),
                   finished=from_iso(str(data.get("Finished", ""))),
                   exit_code=None if code is None else int(code),
                   container_id=str(data.get("ContainerId", "")),
                   error=str(data.get("Error", "")), missed=int(data.get("Missed", 0)),
                   logs=tuple(str(line) for line in data.get("Logs", ())))


def to_prune(runs: list[CronRun], keep_succeeded: int, keep_failed: int) -> list[str]:
    """Ids of the ended runs past the history limits (`runs` oldest first); running ones
    are always kept."""
    succeeded = [r.id for r in runs if r.status.succeeded]
    failed = [r.id for r in runs
              if r.status is not RunStatus.RUNNING and not r.status.succeeded]
    return (succeeded[:max(0, len(succeeded) - keep_succeeded)]
            + failed[:max(0, len(failed) - keep_failed)])


def tail_lines(text: str, count: int = LOG_LINES) -> tuple[str, ...]:
    """The last `count` lines of `text`, each cut to LOG_LINE_MAX characters."""
    lines = text.splitlines()[-count:] if count else []
    return tuple(line[:LOG_LINE_MAX] for line in lines)
