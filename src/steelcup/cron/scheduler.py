"""The daemon's cron scheduler: looks at every cron's schedule when one is due (`tick`,
deciding with the pure `schedule.due`), starts, skips or replaces runs, follows each run to
its end and keeps its history (`store`). Survives a restart: what was decided and what was
running are in the state database.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from steelcup.cron import schedule as sched
from steelcup.cron.jobs import Jobs
from steelcup.cron.model import CronRun, CronSpec, CronState, RunStatus, iso, to_prune
from steelcup.cron.store import CronStore
from steelcup.errors import SteelcupError
from steelcup.runtime.events import EventBus
from steelcup.tenancy.quota import Admit, need, unlimited

log = logging.getLogger(__name__)

MAX_SLEEP_S = 60.0  # look again at least this often (the wall clock may jump)
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Active:
    run: CronRun
    task: asyncio.Task[None] | None = None
    stopping: bool = False  # stopped on purpose (replace, rm --force): its status is STOPPED
    removed: bool = False  # its container was removed already (rm --force)


class Crons:
    """Every cron of the daemon (all tenants'), the runs going now, and the loop."""

    def __init__(self, store: CronStore, jobs: Jobs, events: EventBus,
                 clock: Clock = utc_now, admit: Admit = unlimited) -> None:
        self.store = store
        self.jobs = jobs
        self.events = events
        self.clock = clock
        self.admit = admit  # the tenants' quota gate (crons=1 per create)
        self._active: dict[str, dict[str, _Active]] = {}  # cron key -> run id -> run
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

    # -- what the API asks -------------------------------------------------------------------
    def create(self, spec: CronSpec, suspended: bool = False) -> CronSpec:
        """A new cron; refused now if its job's container would be refused at each run."""
        self.jobs.check(spec)
        with self.admit(spec.tenant, need(crons=1)):
            self.store.add(spec, CronState(suspended, self.clock()))
        self._event(spec, "create", schedule=spec.schedule)
        self._wake.set()
        return spec

    def get(self, key: str) -> tuple[CronSpec, CronState]:
        return self.store.get(key)

    def list(self, tenant: str | None) -> builtins.list[tuple[CronSpec, CronState]]:
        return self.store.list(tenant)

    def active(self, key: str) -> builtins.list[CronRun]:
        return [a.run for a in self._active.get(key, {}).values()]

    def next_run(self, spec: CronSpec, state: CronState) -> datetime | None:
        """When the cron runs next (None while suspended)."""
        if state.suspended:
            return None
        return spec.parsed().next_after(max(state.considered, self.clock()))

    def history(self, key: str, tail: int | None = None) -> builtins.list[CronRun]:
        self.store.get(key)
        return self.store.runs(key, tail)

    async def remove(self, key: str, force: bool = False) -> None:
        """Remove the cron and its history. Its running job containers are left to finish
        (then removed), or with `force` removed at once."""
        spec, _ = self.store.get(key)
        self.store.remove(key)
        if force:
            for active in list(self._active.get(key, {}).values()):
                active.stopping = active.removed = True
                await self.jobs.remove(active.run.container_id)
        self._event(spec, "remove")

    def suspend(self, key: str) -> None:
        spec, state = self.store.get(key)
        self.store.set_state(key, replace(state, suspended=True))
        self._event(spec, "suspend")

    def resume(self, key: str) -> None:
        """As a Kubernetes CronJob's: the schedule goes on from now; of the fire times that
        passed while suspended, the latest runs now, once, if it is within the starting
        deadline (always, with none), under the concurrency policy like any run; the others
        are neither run nor recorded as missed (`schedule.on_resume`)."""
        spec, state = self.store.get(key)
        if not state.suspended:
            return
        now = self.clock()
        fire = sched.on_resume(spec.parsed(), state.considered, now, spec.starting_deadline_s)
        self.store.set_state(key, CronState(False, max(state.considered, now)))
        self._event(spec, "resume")
        if fire is not None:
            self._fire(spec, fire)
        self._wake.set()

    def run_now(self, key: str) -> CronRun:
        """`cron run`: a run now, whatever the schedule and the concurrency policy (as a
        Kubernetes job made from a CronJob); a container that cannot be made is an error."""
        spec, _ = self.store.get(key)
        return self._launch(spec, None, manual=True)

    # -- the loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Pick up what a previous daemon left running, then run schedules until cancelled."""
        self.recover()
        try:
            while True:
                self._wake.clear()
                now = self.clock()
                wake_at = self.tick(now)
                delay = MAX_SLEEP_S if wake_at is None else (wake_at - now).total_seconds()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(max(delay, 0.0),
                                                                  MAX_SLEEP_S))
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop following runs (their containers stay; the next daemon picks them up)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def tick(self, now: datetime) -> datetime | None:
        """Decide every cron's fire times up to `now`; the next moment one is due."""
        soonest: datetime | None = None
        for spec, state in self.store.list():
            if state.suspended:
                continue
            try:
                decided = sched.due(spec.parsed(), state.considered, now,
                                    spec.starting_deadline_s)
            except SteelcupError as exc:  # a stored spec this version cannot read
                log.error("cron %s: %s", spec.key, exc)
                continue
            try:
                if decided.run is not None or decided.missed:
                    self.store.set_state(spec.key, replace(state, considered=now))
                if decided.missed and decided.last_missed is not None:
                    self._missed(spec, decided.last_missed, decided.missed, now)
                if decided.run is not None:
                    self._fire(spec, decided.run)
            except Exception:  # one cron's trouble (a bug, the disk) must not stop the others
                log.exception("cron %s: deciding its runs failed", spec.key)
            if soonest is None or decided.next_fire < soonest:
                soonest = decided.next_fire
        return soonest

    def _fire(self, spec: CronSpec, fire: datetime) -> None:
        active = list(self._active.get(spec.key, {}).values())
        action = sched.on_due(spec.concurrency, len(active))
        if action is sched.Action.START:
            self._launch(spec, fire, manual=False)
        elif action is sched.Action.SKIP:
            now = self.clock()
            run = CronRun(self._new_id(), spec.key, RunStatus.SKIPPED, scheduled=fire,
                          finished=now, error=f"{len(active)} earlier run(s) still running "
                          "(concurrency forbid)")
            self._record_end(spec, run, "skip")
        else:
            self._spawn(self._replace(spec, fire, active))

    async def _replace(self, spec: CronSpec, fire: datetime,
                       active: builtins.list[_Active]) -> None:
        for running in active:
            running.stopping = True
        await asyncio.gather(*(self._stop(spec, a) for a in active))
        try:
            self._launch(spec, fire, manual=False)
        except SteelcupError:
            pass  # recorded in the history by _launch

    async def _stop(self, spec: CronSpec, active: _Active) -> None:
        try:
            await self.jobs.stop(active.run.container_id)
        except SteelcupError as exc:
            log.warning("cron %s: stopping run %s: %s", spec.key, active.run.id, exc)
        if active.task is not None:  # its end is recorded before the new run starts
            with contextlib.suppress(Exception):
                await asyncio.shield(active.task)

    def _missed(self, spec: CronSpec, fire: datetime, count: int, now: datetime) -> None:
        deadline = spec.starting_deadline_s
        why = (f"{count} run(s) not started: the latest more than {deadline:g}s late "
               "(starting deadline)" if deadline is not None and count == 1 else
               f"{count} run(s) not started (the daemon was down or busy; at most one late "
               "run is made)")
        run = CronRun(self._new_id(), spec.key, RunStatus.MISSED, scheduled=fire,
                      finished=now, missed=count, error=why)
        self._record_end(spec, run, "missed")

    def _launch(self, spec: CronSpec, fire: datetime | None, *, manual: bool) -> CronRun:
        run = CronRun(self._new_id(), spec.key, RunStatus.RUNNING, scheduled=fire,
                      manual=manual, started=self.clock())
        try:
            container_id = self.jobs.create(spec, run.id)
        except SteelcupError as exc:
            self._record_end(spec, run.ended(RunStatus.FAILED, self.clock(),
                                             error=f"cannot create the container: {exc}"),
                             "finish")
            if manual:
                raise
            return run
        run = replace(run, container_id=container_id)
        self.store.record(run)
        self._event(spec, "start", run=run.id, container=container_id,
                    scheduled=iso(fire), manual=str(manual).lower())
        active = _Active(run)
        self._active.setdefault(spec.key, {})[run.id] = active
        active.task = self._spawn(self._follow(spec, active, start=True))
        return run

    async def _follow(self, spec: CronSpec, active: _Active, *, start: bool,
                      interrupted: bool = False) -> None:
        """Start the run's container (unless a previous daemon did), wait for its end, keep
        its end and last log lines, remove the container."""
        run = active.run
        cid = run.container_id
        try:
            try:
                if start:
                    await self.jobs.start(cid)
                code = await self.jobs.wait(cid)
                status = (RunStatus.STOPPED if active.stopping else
                          RunStatus.SUCCEEDED if code == 0 else RunStatus.FAILED)
                # A run that ended well just before the daemon stopped is a success.
                error = ("the daemon stopped during the run" if interrupted and code != 0
                         else "")
                ended = run.ended(status, self.clock(), exit_code=code, error=error,
                                  logs=await self._logs(active))
            except SteelcupError as exc:
                ended = run.ended(RunStatus.STOPPED if active.stopping else RunStatus.FAILED,
                                  self.clock(), error=str(exc), logs=await self._logs(active))
            if not active.removed:
                try:
                    await self.jobs.remove(cid)
                except SteelcupError as exc:  # recorded all the same; `cron ls` shows it
                    log.warning("cron %s: removing job container %s: %s", spec.key, cid[:12],
                                exc)
        finally:
            self._active.get(run.cron, {}).pop(run.id, None)
        self._record_end(spec, ended, "finish")

    async def _logs(self, active: _Active) -> tuple[str, ...]:
        container_id = active.run.container_id
        if active.removed:
            return ()
        try:
            return await self.jobs.logs(container_id)
        except (SteelcupError, OSError) as exc:
            log.warning("cron job container %s: its logs are unreadable: %s",
                        container_id[:12], exc)
            return ()

    def _record_end(self, spec: CronSpec, run: CronRun, action: str) -> None:
        self.store.record(run)
        attributes = {"run": run.id, "status": run.status.value,
                      "scheduled": iso(run.scheduled)}
        if run.exit_code is not None:
            attributes["exitCode"] = str(run.exit_code)
        if run.container_id:
            attributes["container"] = run.container_id
        self._event(spec, action, **attributes)
        try:
            current, _ = self.store.get(spec.key)
        except SteelcupError:
            return  # removed meanwhile: its history went with it
        self.store.forget(to_prune(self.store.runs(spec.key), current.keep_succeeded,
                                   current.keep_failed))

    # -- after a restart ---------------------------------------------------------------------
    def recover(self) -> None:
        """Runs the previous daemon left: followed to their end if their container is still
        there, failed if it is gone; job containers of removed crons are removed once they
        end."""
        known = set()
        for run in self.store.running():
            known.add(run.id)
            try:
                spec, _ = self.store.get(run.cron)
            except SteelcupError:
                continue
            running = self.jobs.running(run.container_id)
            if running is None:
                self._record_end(spec, run.ended(
                    RunStatus.FAILED, self.clock(),
                    error="the daemon stopped during the run and its container is gone"),
                    "finish")
                continue
            active = _Active(run)
            self._active.setdefault(spec.key, {})[run.id] = active
            active.task = self._spawn(self._follow(spec, active, start=False,
                                                   interrupted=not running))
        for container_id, run_id in self.jobs.labelled():
            if run_id not in known:
                self._spawn(self._reap(container_id))

    async def _reap(self, container_id: str) -> None:
        """A job container of a cron removed while it ran: removed once it ends."""
        await self.jobs.wait(container_id)
        log.info("removing job container %s of a removed cron", container_id[:12])
        await self.jobs.remove(container_id)

    # -- helpers -----------------------------------------------------------------------------
    def _spawn(self, work: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("cron task failed", exc_info=task.exception())

    @staticmethod
    def _new_id() -> str:
        return secrets.token_hex(6)

    def _event(self, spec: CronSpec, action: str, **attributes: str) -> None:
        self.events.publish("cron", action, spec.name, {"name": spec.name, **attributes},
                            tenant=spec.tenant)
