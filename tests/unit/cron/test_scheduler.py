"""The scheduler with a fake clock and fake job containers: runs recorded with exit codes and
log lines, the concurrency policies, starting deadlines, no burst after a restart, `cron
run`, suspend and resume, removal with and without --force, history limits, recovery of runs
a previous daemon left, events."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from steelcup.cron.model import CronRun, CronSpec, CronState, RunStatus
from steelcup.cron.schedule import Concurrency
from steelcup.cron.scheduler import Crons
from steelcup.cron.store import CronStore
from steelcup.errors import Conflict, Forbidden, NotFound, SteelcupError
from steelcup.runtime.events import EventBus
from steelcup.state.db import open_db
from tests.unit.cron.fakejobs import FakeJobs

T0 = datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC)
BODY = {"Image": "busybox", "Cmd": ["echo", "hi"]}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> datetime:
        self.now = T0 + timedelta(seconds=seconds)
        return self.now


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.clock = Clock()
        self.jobs = FakeJobs()
        self.events = EventBus()
        self.crons = self.daemon()

    def daemon(self) -> Crons:
        """A scheduler over the same state database (a daemon restart keeps the store and
        the job containers)."""
        return Crons(CronStore(open_db(self.root)), self.jobs, self.events, self.clock)

    def spec(self, name: str = "job", schedule: str = "@every 5s", **kw: Any) -> CronSpec:
        return CronSpec(name=name, schedule=schedule, container=BODY, created=self.clock(),
                        **kw)

    def tick(self, seconds: float) -> datetime | None:
        return self.crons.tick(self.clock.at(seconds))

    def history(self, key: str = "job") -> list[CronRun]:
        return self.crons.history(key)

    def event_actions(self) -> list[str]:
        return [e["Action"] for e in self.events.history() if e["Type"] == "cron"]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def scenario(test: Callable[[World], Awaitable[None]]
             ) -> Callable[[Path, pytest.LogCaptureFixture], None]:
    """A test on a world of its own; no task of the scheduler may have failed."""
    def run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        async def body() -> None:
            world = World(tmp_path)
            try:
                await test(world)
                await settle()
            finally:
                await world.crons.close()
        asyncio.run(body())
        failed = [r for r in caplog.records if r.levelname == "ERROR"
                  and r.getMessage() == "cron task failed"]
        assert not failed, failed[0].exc_info
    run.__name__ = test.__name__
    return run


@scenario
async def test_every_5s_records_runs_with_exit_codes_and_log_lines(w: World) -> None:
    w.crons.create(w.spec())
    assert w.tick(4.9) == T0 + timedelta(seconds=5)
    assert w.history() == []
    assert w.tick(5) == T0 + timedelta(seconds=10)
    await settle()
    [first] = w.jobs.live()
    w.jobs.exit(first, 0, "one\ntwo\n")
    await settle()
    w.tick(10.2)
    await settle()
    [second] = w.jobs.live()
    w.jobs.exit(second, 3, "three\n")
    await settle()
    runs = w.history()
    assert [(r.status, r.exit_code, r.logs) for r in runs] == [
        (RunStatus.SUCCEEDED, 0, ("one", "two")), (RunStatus.FAILED, 3, ("three",))]
    assert [r.scheduled for r in runs] == [T0 + timedelta(seconds=5),
                                           T0 + timedelta(seconds=10)]
    assert runs[1].started == T0 + timedelta(seconds=10.2)
    assert all(w.jobs.containers[r.container_id].removed for r in runs)
    assert w.event_actions() == ["create", "start", "finish", "start", "finish"]


@scenario
async def test_forbid_skips_while_the_previous_runs(w: World) -> None:
    w.crons.create(w.spec(concurrency=Concurrency.FORBID))
    w.tick(5)
    await settle()
    w.tick(10)
    await settle()
    assert len(w.jobs.live()) == 1
    statuses = [r.status for r in w.history()]
    assert statuses == [RunStatus.RUNNING, RunStatus.SKIPPED]
    assert "still running" in w.history()[1].error
    w.jobs.exit(w.jobs.live()[0], 0, "")
    await settle()
    w.tick(15)
    await settle()
    assert len(w.jobs.live()) == 1  # free again: the next one runs


@scenario
async def test_allow_runs_side_by_side(w: World) -> None:
    w.crons.create(w.spec())
    w.tick(5)
    await settle()
    w.tick(10)
    await settle()
    assert len(w.jobs.live()) == 2


@scenario
async def test_replace_stops_the_running_one(w: World) -> None:
    w.crons.create(w.spec(concurrency=Concurrency.REPLACE))
    w.tick(5)
    await settle()
    [old] = w.jobs.live()
    w.tick(10)
    await settle()
    [new] = w.jobs.live()
    assert new != old and w.jobs.containers[old].stops == 1
    first, second = w.history()
    assert (first.status, first.exit_code, first.container_id) == (RunStatus.STOPPED, 143, old)
    assert first.logs == ("terminated",)
    assert (second.status, second.container_id) == (RunStatus.RUNNING, new)


@scenario
async def test_cron_run_runs_now_whatever_the_schedule_and_policy(w: World) -> None:
    w.crons.create(w.spec(schedule="@yearly", concurrency=Concurrency.FORBID))
    first = w.crons.run_now("job")
    second = w.crons.run_now("job")
    await settle()
    assert len(w.jobs.live()) == 2
    assert first.manual and first.scheduled is None and first.status is RunStatus.RUNNING
    assert {r.id for r in w.crons.active("job")} == {first.id, second.id}


@scenario
async def test_a_run_whose_container_cannot_be_made_is_a_failed_run(w: World) -> None:
    w.crons.create(w.spec())
    w.jobs.fail_create = "quota exceeded: containers 10 of 10 in use (tenant alice)"
    w.tick(5)
    [run] = w.history()
    assert run.status is RunStatus.FAILED and "quota exceeded" in run.error
    with pytest.raises(SteelcupError, match="quota exceeded"):
        w.crons.run_now("job")
    assert len(w.history()) == 2


@scenario
async def test_one_crons_bug_does_not_stop_the_others(w: World) -> None:
    w.crons.create(w.spec("broken"))
    w.crons.create(w.spec("fine"))
    w.jobs.crash_for = "broken"
    assert w.tick(5) == T0 + timedelta(seconds=10)
    await settle()
    assert [w.jobs.containers[c].spec.name for c in w.jobs.live()] == ["fine"]
    w.jobs.crash_for = ""
    w.tick(10)  # the broken one's fire time was decided: it runs at its next one only
    await settle()
    assert sorted(w.jobs.containers[c].spec.name for c in w.jobs.live()) == [
        "broken", "fine", "fine"]


@scenario
async def test_past_the_starting_deadline_a_run_is_missed(w: World) -> None:
    w.crons.create(w.spec(starting_deadline_s=2))
    w.tick(7.5)  # the 5 s fire time, 2.5 s late
    await settle()
    assert w.jobs.live() == []
    [run] = w.history()
    assert (run.status, run.missed, run.scheduled) == (RunStatus.MISSED, 1,
                                                       T0 + timedelta(seconds=5))
    assert "starting deadline" in run.error


@scenario
async def test_a_restart_after_downtime_makes_no_burst(w: World) -> None:
    w.crons.create(w.spec(starting_deadline_s=60))
    w.tick(5)
    await settle()
    w.jobs.exit(w.jobs.live()[0], 0, "")
    await settle()
    await w.crons.close()
    w.clock.at(5 + 3600)  # an hour down: 720 fire times passed
    w.crons = w.daemon()
    w.crons.recover()
    w.tick(3600 + 6)
    await settle()
    assert len(w.jobs.live()) == 1  # one late run, not 720
    statuses = [(r.status, r.missed) for r in w.history()]
    assert statuses == [(RunStatus.SUCCEEDED, 0), (RunStatus.MISSED, 719),
                        (RunStatus.RUNNING, 0)]


@scenario
async def test_a_restart_follows_runs_left_running_and_fails_vanished_ones(w: World) -> None:
    w.crons.create(w.spec())
    w.crons.create(w.spec("other"))
    w.tick(5)
    await settle()
    w.crons.create(w.spec("done"))
    w.crons.run_now("done")
    await settle()
    done, job, other = sorted(w.jobs.live(), key=lambda c: w.jobs.containers[c].spec.name)
    await w.crons.close()  # the daemon stops; its runs are still recorded as running
    w.jobs.exit(job, 137, "killed with the daemon\n")  # its container stopped with it
    w.jobs.exit(done, 0, "finished first\n")  # this one ended just before the daemon did
    w.jobs.containers[other].removed = True  # this one is gone altogether
    w.crons = w.daemon()
    w.crons.recover()
    await settle()
    [ended] = w.history("done")
    assert (ended.status, ended.error, ended.logs) == (RunStatus.SUCCEEDED, "",
                                                       ("finished first",))
    [ran] = w.history("job")
    assert (ran.status, ran.exit_code, ran.logs) == (RunStatus.FAILED, 137,
                                                     ("killed with the daemon",))
    assert ran.error == "the daemon stopped during the run"
    assert w.jobs.containers[job].removed
    [gone] = w.history("other")
    assert gone.status is RunStatus.FAILED and "container is gone" in gone.error


@scenario
async def test_a_run_a_live_restore_kept_running_is_followed_to_its_end(w: World) -> None:
    w.crons.create(w.spec())
    w.tick(5)
    await settle()
    [kept] = w.jobs.live()
    await w.crons.close()
    w.crons = w.daemon()
    w.crons.recover()
    await settle()
    assert [r.id for r in w.crons.active("job")] == [w.history()[0].id]
    w.jobs.exit(kept, 0, "done after the restart\n")
    await settle()
    [run] = w.history()
    assert (run.status, run.error, run.logs) == (RunStatus.SUCCEEDED, "",
                                                 ("done after the restart",))
    assert w.jobs.containers[kept].removed and w.crons.active("job") == []


@scenario
async def test_suspend_and_resume(w: World) -> None:
    w.crons.create(w.spec())
    w.crons.suspend("job")
    w.tick(20)
    assert w.history() == []  # suspended: no run, and nothing recorded as missed
    spec, state = w.crons.get("job")
    assert state.suspended and w.crons.next_run(spec, state) is None
    w.clock.at(21)
    w.crons.resume("job")  # no deadline: the latest fire time passed runs once, now
    await settle()
    [run] = w.history()
    assert (run.status, run.scheduled, run.started) == (
        RunStatus.RUNNING, T0 + timedelta(seconds=20), T0 + timedelta(seconds=21))
    w.tick(21.5)
    await settle()
    assert len(w.history()) == 1  # not once more from the loop
    w.tick(25)
    await settle()
    assert len(w.jobs.live()) == 2 and len(w.history()) == 2
    assert w.event_actions()[:4] == ["create", "suspend", "resume", "start"]
    w.crons.resume("job")  # not suspended: nothing to do
    assert len(w.history()) == 2


@scenario
async def test_a_resume_runs_a_missed_fire_time_only_within_the_starting_deadline(
        w: World) -> None:
    w.crons.create(w.spec("late", starting_deadline_s=2))
    w.crons.create(w.spec("soon", starting_deadline_s=2))
    w.crons.suspend("late")
    w.crons.suspend("soon")
    w.clock.at(21)
    w.crons.resume("soon")  # fire time 20 is 1 s late: within the deadline
    w.clock.at(23)
    w.crons.resume("late")  # fire time 20 is 3 s late: not run, not recorded as missed
    await settle()
    assert [(r.status, r.scheduled) for r in w.history("soon")] == [
        (RunStatus.RUNNING, T0 + timedelta(seconds=20))]
    assert w.history("late") == []
    w.tick(25)  # the schedule goes on from the resume
    await settle()
    assert [r.scheduled for r in w.history("late")] == [T0 + timedelta(seconds=25)]
    assert all(r.status is not RunStatus.MISSED for r in w.history("soon"))


@scenario
async def test_rm_leaves_running_jobs_to_finish_and_force_removes_them(w: World) -> None:
    w.crons.create(w.spec())
    w.crons.create(w.spec("forced"))
    w.tick(5)
    await settle()
    forced, left = sorted(w.jobs.live(), key=lambda c: w.jobs.containers[c].spec.name)
    await w.crons.remove("job")
    await w.crons.remove("forced", force=True)
    await settle()
    assert w.jobs.live() == [left]
    assert w.jobs.containers[forced].removed
    with pytest.raises(NotFound, match="no such cron: job"):
        w.crons.history("job")
    await w.crons.close()  # a restart while it still runs: the next daemon reaps it
    w.crons = w.daemon()
    w.crons.recover()
    await settle()
    assert w.jobs.live() == [left]
    w.jobs.exit(left, 0, "")
    await settle()
    assert w.jobs.containers[left].removed  # removed once done, its history gone with it
    w.crons.create(w.spec())  # the name is free again, with an empty history
    assert w.history() == []
    run = w.crons.run_now("job")  # without a restart: its follower removes it at its end
    await settle()
    await w.crons.remove("job")
    w.jobs.exit(run.container_id, 0, "")
    await settle()
    assert w.jobs.containers[run.container_id].removed


@scenario
async def test_history_limits_keep_the_newest_of_each(w: World) -> None:
    w.crons.create(w.spec(keep_succeeded=2, keep_failed=1))
    for i, code in enumerate([0, 1, 0, 2, 0, 0]):
        w.crons.run_now("job")
        await settle()
        w.jobs.exit(w.jobs.live()[0], code, f"run {i}\n")
        await settle()
    kept = w.history()
    assert [(r.exit_code, r.logs) for r in kept] == [(2, ("run 3",)), (0, ("run 4",)),
                                                     (0, ("run 5",))]


@scenario
async def test_names_are_unique_per_tenant(w: World) -> None:
    w.crons.create(w.spec())
    w.crons.create(w.spec(tenant="alice"))
    with pytest.raises(Conflict):
        w.crons.create(w.spec(tenant="alice"))
    assert w.crons.store.resolve("job", "alice") == "alice/job"
    assert w.crons.store.resolve("job", None) == "job"
    with pytest.raises(NotFound):
        w.crons.store.resolve("job", "bob")
    with pytest.raises(NotFound):
        w.crons.store.resolve("alice/job", "bob")
    events = [(e["Action"], e["Actor"]["ID"]) for e in w.events.history("alice")]
    assert events == [("create", "job")]


def test_the_store_keeps_crons_across_reopen(tmp_path: Path) -> None:
    store = CronStore(open_db(tmp_path))
    spec = CronSpec(name="nightly", schedule="0 3 * * *", timezone="Europe/Paris",
                    container=BODY, created=T0, tenant="alice",
                    concurrency=Concurrency.REPLACE, starting_deadline_s=30.5,
                    keep_succeeded=7, keep_failed=2)
    store.add(spec, CronState(True, T0))
    again, state = CronStore(open_db(tmp_path)).get("alice/nightly")
    assert again == spec and state == CronState(True, T0)


@scenario
async def test_a_job_a_run_would_refuse_is_refused_at_create(w: World) -> None:
    w.jobs.refuse_check = "bind mounts of host paths are not available to tenants"
    with pytest.raises(Forbidden, match="not available to tenants"):
        w.crons.create(w.spec())
    assert w.crons.list(None) == [] and w.event_actions() == []
