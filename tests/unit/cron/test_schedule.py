"""Schedules and the due rule with explicit times (no clock): cron specs, macros, @every,
time zones, starting deadlines, missed runs never run as a burst, concurrency policies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from steelcup.cron.schedule import (
    MAX_COUNTED,
    Action,
    Concurrency,
    due,
    on_due,
    on_resume,
    parse_every,
    parse_schedule,
)
from steelcup.errors import InvalidArgument

T0 = datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC)  # a Friday


def at(**delta: float) -> datetime:
    return T0 + timedelta(**delta)


@pytest.mark.parametrize(("text", "seconds"), [
    ("10s", 10), ("5m", 300), ("1h30m", 5400), ("1.5h", 5400), ("2d", 172800),
    ("1500ms", 1.5), ("1m30s", 90)])
def test_every_durations(text: str, seconds: float) -> None:
    assert parse_every(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "10x", "s", "5m 3", "-5s", "500ms", "0s"])
def test_bad_every_durations_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_every(text)


@pytest.mark.parametrize(("spec", "after", "expected"), [
    ("*/5 * * * *", at(minutes=1), at(minutes=5)),
    ("0 3 * * mon-fri", at(), datetime(2026, 12, 7, 3, 0, tzinfo=UTC)),  # Friday -> Monday
    ("30 10 1,15 jan,dec *", at(), datetime(2026, 12, 15, 10, 30, tzinfo=UTC)),
    ("@hourly", at(minutes=30), at(hours=1)),
    ("@daily", at(), datetime(2026, 12, 5, tzinfo=UTC)),
    ("@midnight", at(), datetime(2026, 12, 5, tzinfo=UTC)),
    ("@weekly", at(), datetime(2026, 12, 6, tzinfo=UTC)),  # Sunday
    ("@monthly", at(), datetime(2027, 1, 1, tzinfo=UTC)),
    ("@yearly", at(), datetime(2027, 1, 1, tzinfo=UTC)),
])
def test_cron_specs_and_macros(spec: str, after: datetime, expected: datetime) -> None:
    assert parse_schedule(spec).next_after(after) == expected


def test_a_fire_time_is_strictly_after() -> None:
    assert parse_schedule("*/5 * * * *").next_after(at(minutes=5)) == at(minutes=10)


def test_every_counts_from_its_anchor() -> None:
    schedule = parse_schedule("@every 10s", anchor=at(seconds=3))
    assert schedule.next_after(at(seconds=3)) == at(seconds=13)
    assert schedule.next_after(at(seconds=12.9)) == at(seconds=13)
    assert schedule.next_after(at(seconds=13)) == at(seconds=23)
    assert schedule.latest_at_or_before(at(seconds=40)) == at(seconds=33)


def test_time_zones() -> None:
    paris = parse_schedule("0 9 * * *", "Europe/Paris")
    assert paris.next_after(at()) == datetime(2026, 12, 5, 8, 0, tzinfo=UTC)  # CET = UTC+1
    summer = datetime(2026, 7, 1, tzinfo=UTC)
    assert paris.next_after(summer) == datetime(2026, 7, 1, 7, 0, tzinfo=UTC)  # CEST
    with pytest.raises(InvalidArgument, match="unknown time zone"):
        parse_schedule("0 9 * * *", "Mars/Olympus")


@pytest.mark.parametrize("spec", ["* * * *", "* * * * * *", "61 * * * *", "@fortnightly",
                                  "@every", "@every soon", "hello"])
def test_bad_specs_say_what_is_accepted(spec: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_schedule(spec)


def test_nothing_due_before_the_first_fire_time() -> None:
    decided = due(parse_schedule("*/5 * * * *"), at(), at(minutes=4), None)
    assert (decided.run, decided.missed, decided.next_fire) == (None, 0, at(minutes=5))


def test_a_fire_time_just_passed_runs() -> None:
    decided = due(parse_schedule("*/5 * * * *"), at(), at(minutes=5, seconds=1), 10)
    assert (decided.run, decided.missed, decided.last_missed) == (at(minutes=5), 0, None)
    assert decided.next_fire == at(minutes=10)


def test_past_the_starting_deadline_is_missed_not_run_late() -> None:
    decided = due(parse_schedule("*/5 * * * *"), at(), at(minutes=5, seconds=11), 10)
    assert decided.run is None
    assert (decided.missed, decided.last_missed) == (1, at(minutes=5))


def test_a_long_downtime_gives_at_most_one_late_run() -> None:
    schedule = parse_schedule("@every 5s", anchor=at())
    now = at(hours=2, seconds=1)  # 1440 fire times passed
    decided = due(schedule, at(), now, None)
    assert decided.run == at(hours=2)
    assert decided.missed == 1439
    assert decided.last_missed == at(hours=2) - timedelta(seconds=5)
    with_deadline = due(schedule, at(), now, 30)
    assert (with_deadline.run, with_deadline.missed) == (at(hours=2), 1439)
    too_late = due(schedule, at(), at(hours=2, seconds=4), 2)
    assert (too_late.run, too_late.missed, too_late.last_missed) == (None, 1440, at(hours=2))


def test_a_downtime_of_years_is_decided_without_walking_it() -> None:
    schedule = parse_schedule("@every 1s", anchor=at())
    decided = due(schedule, at(), at(days=3 * 365), None)
    assert decided.run == at(days=3 * 365)
    assert decided.missed == 3 * 365 * 86400 - 1
    minutely = due(parse_schedule("* * * * *"), at(), at(days=30, seconds=30), None)
    assert minutely.run == at(days=30)
    assert minutely.missed >= MAX_COUNTED  # counted up to the cap
    assert minutely.next_fire == at(days=30, minutes=1)


def test_deciding_again_from_now_decides_nothing_twice() -> None:
    schedule = parse_schedule("@every 10s", anchor=at())
    first = due(schedule, at(), at(seconds=25), None)
    assert first.run == at(seconds=20)
    again = due(schedule, at(seconds=25), at(seconds=29), None)
    assert (again.run, again.missed, again.next_fire) == (None, 0, at(seconds=30))


@pytest.mark.parametrize(("policy", "active", "action"), [
    (Concurrency.ALLOW, 0, Action.START), (Concurrency.ALLOW, 2, Action.START),
    (Concurrency.FORBID, 0, Action.START), (Concurrency.FORBID, 1, Action.SKIP),
    (Concurrency.REPLACE, 0, Action.START), (Concurrency.REPLACE, 1, Action.REPLACE)])
def test_concurrency_policies(policy: Concurrency, active: int, action: Action) -> None:
    assert on_due(policy, active) is action


def test_concurrency_words() -> None:
    assert Concurrency.parse("Forbid") is Concurrency.FORBID
    assert Concurrency.parse("") is Concurrency.ALLOW
    with pytest.raises(InvalidArgument, match="allow, forbid, replace"):
        Concurrency.parse("sometimes")


def test_a_resume_runs_the_latest_fire_time_once_within_the_deadline() -> None:
    every = parse_schedule("@every 10s", anchor=T0)
    # suspended from 0 to 35 s: fire times 10, 20, 30 passed; only 30 is a candidate
    assert on_resume(every, T0, at(seconds=35), None) == at(seconds=30)
    assert on_resume(every, T0, at(seconds=35), 5) == at(seconds=30)
    assert on_resume(every, T0, at(seconds=35), 4.9) is None
    assert on_resume(every, T0, at(seconds=9), None) is None  # nothing passed
    hourly = parse_schedule("0 * * * *")
    assert on_resume(hourly, T0, T0 + timedelta(hours=5, minutes=1), 120) == (
        T0 + timedelta(hours=5))
