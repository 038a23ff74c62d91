"""The records of crons and runs: their stored JSON round-trips, history limits, log tails,
names and settings refused with what is wrong."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from steelcup.cron.model import (
    LOG_LINE_MAX,
    CronRun,
    CronSpec,
    RunStatus,
    tail_lines,
    to_prune,
)
from steelcup.errors import InvalidArgument

T0 = datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC)


def test_a_run_round_trips() -> None:
    run = CronRun("abc", "alice/job", RunStatus.FAILED, scheduled=T0, started=T0,
                  finished=T0, exit_code=3, container_id="c1", error="boom", missed=0,
                  logs=("a", "b"))
    assert CronRun.from_json(run.to_json()) == run
    manual = CronRun("m", "job", RunStatus.RUNNING, manual=True, started=T0)
    assert manual.to_json()["Scheduled"] == "" and manual.to_json()["ExitCode"] is None
    assert CronRun.from_json(manual.to_json()) == manual


def test_history_limits_count_succeeded_and_the_rest_apart() -> None:
    statuses = [RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.MISSED, RunStatus.SUCCEEDED,
                RunStatus.RUNNING, RunStatus.SKIPPED, RunStatus.SUCCEEDED, RunStatus.STOPPED]
    runs = [CronRun(str(i), "job", s) for i, s in enumerate(statuses)]
    assert to_prune(runs, 2, 2) == ["0", "1", "2"]
    assert to_prune(runs, 0, 0) == ["0", "3", "6", "1", "2", "5", "7"]  # never the running
    assert to_prune(runs, 10, 10) == []


def test_log_tails() -> None:
    assert tail_lines("a\nb\nc\n", 2) == ("b", "c")
    assert tail_lines("x" * 5000) == ("x" * LOG_LINE_MAX,)
    assert tail_lines("") == ()


@pytest.mark.parametrize(("changes", "words"), [
    ({"name": "-x"}, "invalid cron name"), ({"name": "a/b"}, "invalid cron name"),
    ({"schedule": "* *"}, "invalid schedule"), ({"timezone": "Nowhere"}, "time zone"),
    ({"starting_deadline_s": -1.0}, "negative"), ({"keep_failed": 1001}, "0 to 1000")])
def test_bad_settings_are_refused(changes: dict[str, object], words: str) -> None:
    settings: dict[str, object] = {"name": "job", "schedule": "@hourly",
                                   "container": {"Image": "x"}, "created": T0, **changes}
    with pytest.raises(InvalidArgument, match=words):
        CronSpec(**settings)  # type: ignore[arg-type]
