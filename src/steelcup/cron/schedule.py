"""When a cron job is due (pure: no clock, no I/O; the caller passes the times).

A schedule is a standard 5-field cron spec (`*/5 * * * *`, lists, ranges, month and day
names), an `@hourly`-style macro, or `@every DURATION` (`@every 10s`, `@every 1h30m`), read in
a time zone (UTC unless named). The arithmetic of cron specs is croniter's; `@every` fires at
the cron's creation time plus whole intervals.

`due` says what to do at a moment: the latest fire time that has passed since the last one
considered runs (late, if no more than the starting deadline late), every earlier one is
missed. So a daemon that was down for a day runs at most one late run, never a burst.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from steelcup.errors import InvalidArgument

MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
EVERY = "@every"
MIN_EVERY_S = 1.0
# Fire times `due` walks past before it stops counting missed ones one by one (a daemon down
# for a year with `@every 1s` would otherwise walk 31 million of them).
MAX_COUNTED = 10_000

_EVERY_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_EVERY_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_every(text: str) -> float:
    """`10s`, `5m`, `1h30m`, `1.5h`, `2d` -> seconds (at least one second)."""
    body = text.strip().lower()
    total, pos = 0.0, 0
    for match in _EVERY_PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _EVERY_UNIT_S[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise InvalidArgument(f"invalid duration {text!r} for @every: expected e.g. 10s, 5m, "
                              "1h30m (units ms, s, m, h, d)")
    if total < MIN_EVERY_S:
        raise InvalidArgument(f"@every {text}: the interval must be at least "
                              f"{MIN_EVERY_S:g}s")
    return total


def zone(name: str) -> tzinfo:
    """The time zone `name` (IANA, e.g. Europe/Paris); UTC for ""."""
    if not name or name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(f"unknown time zone {name!r} (an IANA name such as "
                              "Europe/Paris or America/New_York)") from None


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule. `anchor` is when an `@every` schedule counts its intervals from."""

    spec: str
    timezone: str = ""
    every_s: float | None = None
    anchor: datetime = datetime(1970, 1, 1, tzinfo=UTC)

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after `moment` (aware, in UTC)."""
        if self.every_s is not None:
            elapsed = (moment - self.anchor).total_seconds()
            steps = max(0, math.floor(elapsed / self.every_s) + 1)
            fire = self.anchor + timedelta(seconds=steps * self.every_s)
            while fire <= moment:  # float rounding at an exact multiple
                steps += 1
                fire = self.anchor + timedelta(seconds=steps * self.every_s)
            return fire
        local = moment.astimezone(zone(self.timezone))
        found: datetime = croniter(self.spec, local).get_next(datetime)
        return found.astimezone(UTC)

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last fire time at or before `moment`."""
        if self.every_s is not None:
            steps = math.floor((moment - self.anchor).total_seconds() / self.every_s)
            return self.anchor + timedelta(seconds=steps * self.every_s)
        # 5-field specs fire on whole minutes: a second past `moment` finds one at `moment`
        local = (moment + timedelta(seconds=1)).astimezone(zone(self.timezone))
        fire: datetime = croniter(self.spec, local).get_prev(datetime)
        return fire.astimezone(UTC)

    def count_between(self, start: datetime, end: datetime) -> int:
        """How many fire times lie in (start, end]: exact for `@every`; for cron specs,
        counted up to MAX_COUNTED and said to be one more beyond that."""
        every_s = self.every_s
        if every_s is not None:
            def steps(moment: datetime) -> int:
                return math.floor((moment - self.anchor).total_seconds() / every_s)
            return max(0, steps(end) - max(steps(start), -1))
        count, fire = 0, self.next_after(start)
        while fire <= end and count <= MAX_COUNTED:
            count, fire = count + 1, self.next_after(fire)
        return count


def parse_schedule(spec: str, timezone: str = "",
                   anchor: datetime = datetime(1970, 1, 1, tzinfo=UTC)) -> Schedule:
    """A schedule from its words; InvalidArgument saying what is accepted if it is not one."""
    text = " ".join(spec.split())
    zone(timezone)  # an unknown zone is refused whatever the spec
    if text.lower().startswith(EVERY + " ") or text.lower() == EVERY:
        return Schedule(text, timezone, parse_every(text[len(EVERY):]), anchor)
    if text.lower() in MACROS:
        return Schedule(text.lower(), timezone)
    if text.startswith("@"):
        raise InvalidArgument(f"unknown schedule macro {text.split()[0]!r} (one of "
                              f"{', '.join(MACROS)}, or @every DURATION)")
    if len(text.split()) != 5 or not croniter.is_valid(text):
        raise InvalidArgument(f"invalid schedule {spec!r}: expected 5 fields (minute hour "
                              "day-of-month month day-of-week, e.g. '*/5 * * * *' or "
                              "'0 3 * * mon-fri'), a macro such as @hourly, or @every 10s")
    return Schedule(text, timezone)


class Concurrency(enum.Enum):
    """What a scheduled run does while an earlier run of its cron is still going."""

    ALLOW = "allow"  # runs side by side
    FORBID = "forbid"  # the new run is skipped
    REPLACE = "replace"  # the running one is stopped, the new one runs

    @classmethod
    def parse(cls, text: str) -> Concurrency:
        try:
            return cls(text.strip().lower() or "allow")
        except ValueError:
            raise InvalidArgument(f"invalid concurrency policy {text!r}: one of allow, forbid, "
                                  "replace") from None


class Action(enum.Enum):
    START = "start"
    SKIP = "skip"
    REPLACE = "replace"  # stop the active runs, then start


def on_due(policy: Concurrency, active: int) -> Action:
    """What a scheduled run that falls due does with `active` runs of its cron still going."""
    if active == 0 or policy is Concurrency.ALLOW:
        return Action.START
    return Action.SKIP if policy is Concurrency.FORBID else Action.REPLACE


@dataclass(frozen=True)
class Due:
    """What `due` decided at one moment."""

    run: datetime | None  # the fire time to run now (late by now - run), or None
    missed: int  # fire times that passed and will not run (the deadline, or superseded)
    last_missed: datetime | None  # the latest of those (what the history records)
    next_fire: datetime  # the first fire time after now: when to look again


def due(schedule: Schedule, last: datetime, now: datetime,
        starting_deadline_s: float | None) -> Due:
    """Decide the fire times in (last, now]: the latest runs if it is at most
    `starting_deadline_s` late (or there is no deadline), all earlier ones are missed."""
    count = 0
    previous: datetime | None = None
    latest: datetime | None = None
    fire = schedule.next_after(last)
    while fire <= now and count < MAX_COUNTED:
        previous, latest, count = latest, fire, count + 1
        fire = schedule.next_after(fire)
    if fire <= now:  # a long time down: jump to the end instead of walking there
        latest = schedule.latest_at_or_before(now)
        previous = schedule.latest_at_or_before(latest - timedelta(microseconds=1))
        count = schedule.count_between(last, now)
        fire = schedule.next_after(now)
    if latest is None:
        return Due(None, 0, None, fire)
    in_time = (starting_deadline_s is None
               or (now - latest).total_seconds() <= starting_deadline_s)
    if in_time:
        return Due(latest, count - 1, previous, fire)
    return Due(None, count, latest, fire)


def on_resume(schedule: Schedule, last: datetime, now: datetime,
              starting_deadline_s: float | None) -> datetime | None:
    """Kubernetes CronJob's resume: of the fire times in (last, now], which passed while the
    cron was suspended, the latest runs once if it is at most `starting_deadline_s` late
    (always, with no deadline); none of the others runs, nor is recorded as missed (a
    suspended cron is not late: it was told not to run)."""
    if schedule.next_after(last) > now:
        return None
    latest = schedule.latest_at_or_before(now)
    if starting_deadline_s is not None and (now - latest).total_seconds() > starting_deadline_s:
        return None
    return latest
