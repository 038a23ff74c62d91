"""The health monitor: runs each running container's health probe in its VM, as `exec` runs a
process, and records the verdict (`healthcheck.record_result`) in the container's state.

Driven by the runtime's events, so the runtime needs no hook of its own: a container's
"start" resets its health to starting and begins probing, "unpause" resumes probing, and
"die", "pause", "stop" and "destroy" stop it (a run that ended leaves the container
unhealthy, as dockerd). A `kill` with another signal than SIGKILL does not end the run, so
the `die` that follows a fatal one is what stops probing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal as signal_module
import time
from typing import Any

from steelcup.errors import Conflict, GuestProtocolError, NotFound, SteelcupError
from steelcup.guest.client import ProcessSpec
from steelcup.image.users import resolve_user
from steelcup.runtime import healthcheck
from steelcup.runtime.containers import Runtime
from steelcup.runtime.healthcheck import HealthResult, HealthState, HealthStatus, Probe
from steelcup.runtime.lifecycle import Op
from steelcup.runtime.logs import format_time_ns, parse_time_ns
from steelcup.runtime.model import ContainerRecord, Status

log = logging.getLogger(__name__)

_RESUME = ("start", "unpause")
# A suspended container is not probed (nothing runs); its resume is a "start".
_HALT = ("die", "pause", "stop", "destroy", "suspend")


class HealthMonitor:
    """One probing task per running container that has a health check."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @classmethod
    def attach(cls, runtime: Runtime) -> HealthMonitor:
        """A monitor listening to `runtime`'s events, already probing the containers that
        run now (those a live restore re-attached)."""
        monitor = cls(runtime)
        runtime.events.listen(monitor.observe)
        for record in runtime.list():
            if record.state.status is Status.RUNNING:
                monitor._watch(record.id, reset=False)
            elif record.state.health is not None:  # its run ended with an earlier daemon
                monitor._mark_stopped(record.id)
        return monitor

    def observe(self, event: dict[str, Any]) -> None:
        """The event bus's listener (runs inside `publish`: quick, never raises)."""
        if event.get("Type") != "container":
            return
        action, container_id = event["Action"], event["Actor"]["ID"]
        if action in _RESUME:
            self._watch(container_id, reset=action == "start")
        elif action in _HALT:
            self._unwatch(container_id)
            if action == "die":
                self._mark_stopped(container_id)

    def probing(self, container_id: str) -> bool:
        task = self._tasks.get(container_id)
        return task is not None and not task.done()

    def close(self) -> None:
        for container_id in list(self._tasks):
            self._unwatch(container_id)

    def _watch(self, container_id: str, *, reset: bool) -> None:
        self._unwatch(container_id)
        try:
            record = self.runtime.record(container_id)
        except NotFound:
            return
        probe = healthcheck.probe(record.config.healthcheck)
        if probe is None:
            return
        seq = self.runtime.run_seq(container_id)
        if reset or record.state.health is None:
            self.runtime.set_health(container_id, healthcheck.started(record.state.health), seq)
        self._tasks[container_id] = asyncio.create_task(
            self._probe_loop(container_id, probe, seq), name=f"health-{container_id[:12]}")

    def _unwatch(self, container_id: str) -> None:
        task = self._tasks.pop(container_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _mark_stopped(self, container_id: str) -> None:
        with contextlib.suppress(NotFound):
            record = self.runtime.record(container_id)
            health = record.state.health
            if (health is not None and health.status is not HealthStatus.UNHEALTHY
                    and healthcheck.probe(record.config.healthcheck) is not None):
                self.runtime.set_health(container_id, healthcheck.stopped(health))

    async def _probe_loop(self, container_id: str, probe: Probe, seq: int) -> None:
        try:
            while True:
                record = self.runtime.record(container_id)
                started_ns = parse_time_ns(record.state.started_at)
                status = (record.state.health or HealthState()).status
                since_s = (time.time_ns() - started_ns) / healthcheck.NS
                # the probing period, not a synchronisation
                await asyncio.sleep(healthcheck.next_delay_s(probe, status, since_s))
                record = self.runtime.record(container_id)
                start_ns = time.time_ns()
                result = await self._run_probe(record, probe, start_ns)
                if result is None:
                    return  # not running any more: its events stop this task
                self._record(container_id, probe, seq, result,
                             in_start_period=start_ns - started_ns
                             < probe.start_period_s * healthcheck.NS)
        except NotFound:
            return
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not go unnoticed, nor stop the daemon
            log.exception("container %s: the health monitor failed", container_id[:12])
        finally:
            if self._tasks.get(container_id) is asyncio.current_task():
                del self._tasks[container_id]

    def _record(self, container_id: str, probe: Probe, seq: int, result: HealthResult, *,
                in_start_period: bool) -> None:
        record = self.runtime.record(container_id)
        before = record.state.health or HealthState()
        after = healthcheck.record_result(before, result, retries=probe.retries,
                                          in_start_period=in_start_period)
        if not self.runtime.set_health(container_id, after, seq):
            return
        if after.status is not before.status:
            self.runtime.publish_event(self.runtime.record(container_id),
                                       f"health_status: {after.status.value}")

    async def _run_probe(self, record: ContainerRecord, probe: Probe,
                         start_ns: int) -> HealthResult | None:
        """Run the probe in the container as `exec` would (its user, env, working dir and
        capabilities); None if the container no longer runs."""
        def result(exit_code: int, output: str) -> HealthResult:
            return HealthResult(start=format_time_ns(start_ns),
                                end=format_time_ns(time.time_ns()),
                                exit_code=exit_code, output=output)

        config = record.config
        try:
            root = self.runtime.container_dir(record.id) / "rootfs"
            user = resolve_user(root, config.user, config.group_add)
            spec = ProcessSpec(args=probe.argv,
                               env=config.process_env(user.home, False),
                               cwd=config.working_dir, uid=user.uid, gid=user.gid,
                               groups=user.groups, tty=False, rows=24,
                               cols=80, stdin=False, main=False, caps=config.caps,
                               rlimits=config.rlimits())
            process = await self.runtime.start_in(record.id, Op.EXEC, spec)
        except (Conflict, NotFound, GuestProtocolError):  # the run ended (or is ending)
            return None
        except SteelcupError as exc:  # it could not start (no such command, a bad user)
            return result(healthcheck.EXIT_PROBE_FAILED, str(exc))
        out = bytearray()
        try:
            async with asyncio.timeout(probe.timeout_s):
                async for _stream, data in process.output():
                    if len(out) <= healthcheck.MAX_OUTPUT_BYTES:
                        out += data
                status = await process.wait()
        except TimeoutError:
            with contextlib.suppress(SteelcupError):
                await process.signal(signal_module.SIGKILL)
            return result(healthcheck.EXIT_PROBE_FAILED, "Health check exceeded timeout "
                          f"({healthcheck.go_duration(probe.timeout_s)})")
        except GuestProtocolError:  # the VM went away: the run is ending, its events follow
            return None
        return result(status.status, healthcheck.clip_output(bytes(out)))
