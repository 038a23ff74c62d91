"""The health monitor against the fake VM source: probes run in the container's VM like an
exec, their exit codes (scripted here) drive starting -> healthy -> unhealthy, the start period
and start interval, the log of 5, the timeout, the events, and what is persisted."""

from __future__ import annotations

import asyncio
import io
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from steelcup.image.config import HealthConfig
from steelcup.runtime.containers import Runtime
from steelcup.runtime.health import HealthMonitor
from steelcup.runtime.healthcheck import HealthState, HealthStatus
from steelcup.runtime.model import ContainerConfig, ContainerRecord
from steelcup.state.db import open_db
from tests.unit.image.tarutil import make_tar
from tests.unit.runtime.fakevm import FakeProcess, FakeVms
from tests.unit.runtime.support import make_runtime
from tests.unit.runtime.test_manager import actions, create, eventually

pytestmark = pytest.mark.usefixtures("plain_dirs")  # conftest: roots are plain dirs

T = TypeVar("T")
MS = 1_000_000


def run(tmp_path: Path, body: Callable[[Runtime, FakeVms, HealthMonitor], Awaitable[T]],
        vms: FakeVms | None = None) -> T:
    async def main() -> T:
        fake = vms or FakeVms()
        runtime = make_runtime(tmp_path, open_db(tmp_path), vms=fake.source())
        monitor = HealthMonitor.attach(runtime)
        try:
            return await asyncio.wait_for(body(runtime, fake, monitor), 20)
        finally:
            monitor.close()
            await runtime.shutdown()

    return asyncio.run(main())


def checked(name: str = "web", **health: Any) -> Callable[[Runtime], ContainerRecord]:
    def make(runtime: Runtime) -> ContainerRecord:
        config = HealthConfig(**{"test": ("CMD", "check", "--now"), "interval_ns": 10 * MS,
                                 **health})
        return create(runtime, name, healthcheck=config)
    return make


def health(runtime: Runtime, ref: str) -> HealthState:
    state = runtime.record(ref).state.health
    assert state is not None
    return state


async def probe(vms: FakeVms, code: int, output: bytes = b"") -> FakeProcess:
    """The next probe started in the guest, ended with `code` after writing `output`."""
    process = await vms.next_process()
    assert not process.spec.main
    assert process.spec.args == ("check", "--now")
    if output:
        process.write(output)
    process.exit(code)
    return process


def test_starting_healthy_then_unhealthy_after_retries(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms, monitor: HealthMonitor) -> None:
        record = checked(retries=2)(runtime)
        queue = runtime.events.subscribe()
        await runtime.start(record.id)
        await vms.next_process()  # the container's own process
        assert health(runtime, record.id) == HealthState(HealthStatus.STARTING, 0, ())
        await probe(vms, 0, b"fine\n")
        await eventually(lambda: health(runtime, record.id).status is HealthStatus.HEALTHY)
        await probe(vms, 1, b"bad\n")
        await eventually(lambda: health(runtime, record.id).failing_streak == 1)
        assert health(runtime, record.id).status is HealthStatus.HEALTHY  # 1 of 2 retries
        await probe(vms, 3)
        await eventually(lambda: health(runtime, record.id).status is HealthStatus.UNHEALTHY)
        state = health(runtime, record.id)
        assert state.failing_streak == 2
        assert [r.exit_code for r in state.log] == [0, 1, 3]
        assert [r.output for r in state.log] == ["fine\n", "bad\n", ""]
        assert all(r.start <= r.end for r in state.log)
        got = actions(queue)
        assert got.count("health_status: healthy") == 1
        assert got.count("health_status: unhealthy") == 1
        assert got.index("health_status: healthy") < got.index("health_status: unhealthy")
        await probe(vms, 0)  # recovers
        await eventually(lambda: health(runtime, record.id).status is HealthStatus.HEALTHY)
        assert health(runtime, record.id).failing_streak == 0

    run(tmp_path, body)


def test_health_events_are_the_containers_tenants(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms, monitor: HealthMonitor) -> None:
        runtime.images.import_rootfs(io.BytesIO(make_tar([("dir", "bin")])), "base:1",
                                     tenant="t1")
        record = runtime.create(ContainerConfig(
            image="base:1", image_id="", cmd=("serve",), tenant="t1",
            healthcheck=HealthConfig(("CMD", "check", "--now"), interval_ns=10 * MS)), "web")
        own, other = runtime.events.subscribe("t1"), runtime.events.subscribe("t2")
        await runtime.start(record.id)
        await vms.next_process()
        await probe(vms, 0)
        await eventually(lambda: health(runtime, record.id).status is HealthStatus.HEALTHY)
        assert "health_status: healthy" in actions(own)
        assert actions(other) == []

    run(tmp_path, body)


def test_the_log_keeps_the_last_five_probes(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms, monitor: HealthMonitor) -> None:
        record = checked(retries=100)(runtime)
        await runtime.start(record.id)
        await vms.next_process()
        for n in range(7):
            await probe(vms, n, f"probe {n}".encode())
            await eventually(lambda n=n: health(runtime, record.id).log != ()
                             and health(runtime, record.id).log[-1].exit_code == n)
        state = health(runtime, record.id)
        assert [r.output for r in state.log] == [f"probe {n}" for n in range(2, 7)]
        assert state.failing_streak == 6 and state.status is HealthStatus.HEALTHY

    run(tmp_path, body)


def test_failures_in_the_start_period_do_not_count(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms, monitor: HealthMonitor) -> None:
        # The interval is an hour: probes only come this fast at the start interval, which
        # applies while it is starting within its start period.
        record = checked(retries=1, interval_ns=3600_000 * MS, start_period_ns=3600_000 * MS,
                         start_interval_ns=10 * MS)(runtime)
        await runtime.start(record.id)
        await vms.next_process()
        for n in range(3):
            await probe(vms, 1)
            await eventually(lambda n=n: len(health(runtime, record.id).log) == n + 1)
        state = health(runtime, record.id)
        assert state.status is HealthStatus.STARTING and state.failing_streak == 0
        await probe(vms, 0)  # a success in the start period: healthy at once
        await eventually(lambda: health(runtime, record.id).status is HealthStatus.HEALTHY)

    run(tmp_path, body)


def test_failures_after_the_start_period_count(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms, monitor: HealthMonitor) -> None:
        record = checked(retries=1, start_period_ns=1 * MS, start_interval_ns=5 * MS)(runtime)
        await runtime.start(record.id)
        await vms.next_process()
        await probe(vms, 1)
        await eventually(lambda: health(runtime, record.id).status is HealthStatus.UNHEALTHY)
        assert health(runtime, record.id).failing_streak == 1

    run(tmp_path, body)


def test_a_probe_past_its_timeout_is_killed_and_fails(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms, monitor: HealthMonitor) -> None:
        record = checked(retries=1, timeout_ns=50 * MS)(runtime)
        await runtime.start(record.id)
        await vms.next_process()
        hung = await vms.next_process()  # never answers
        await eventually(lambda: health(runtime, record.id).status is HealthStatus.UNHEALTHY)
        result = health(runtime, record.id).log[-1]
        assert result.exit_code == -1
        assert result.output == "Health check exceeded timeout (50ms)"
        assert hung.signals == [signal.SIGKILL]

    run(tmp_path, body)


def test_output_is_truncated_like_dockerd(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms, monitor: HealthMonitor) -> None:
        record = checked()(runtime)
        await runtime.start(record.id)
        await vms.next_process()
        process = await vms.next_process()
        process.write(b"a" * 3000)
        process.write(b"b" * 3000)
        process.exit(0)
        await eventually(lambda: bool(health(runtime, record.id).log))
        assert health(runtime, record.id).log[0].output == "a" * 3000 + "b" * 1096 + "..."

    run(tmp_path, body)


def test_a_probe_that_cannot_start_fails(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms, monitor: HealthMonitor) -> None:
        record = create(runtime, healthcheck=HealthConfig(
            test=("CMD-SHELL", "curl -f localhost"), interval_ns=10 * MS, retries=1))
        vms.missing.add("/bin/sh")
        await runtime.start(record.id)
        await eventually(lambda: health(runtime, record.id).status is HealthStatus.UNHEALTHY)
        result = health(runtime, record.id).log[-1]
        assert result.exit_code == -1 and "No such file or directory" in result.output

    run(tmp_path, body)


def test_probe_runs_as_the_containers_exec_would(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms, monitor: HealthMonitor) -> None:
        record = create(runtime, env=("A=1",), working_dir="/srv", healthcheck=HealthConfig(
            test=("CMD-SHELL", "test -f /tmp/ok"), interval_ns=10 * MS))
        await runtime.start(record.id)
        await vms.next_process()
        process = await vms.next_process()
        assert process.spec.args == ("/bin/sh", "-c", "test -f /tmp/ok")
        assert "A=1" in process.spec.env and process.spec.cwd == "/srv"
        assert process.spec.caps == runtime.record(record.id).config.caps

    run(tmp_path, body)


def test_a_run_that_ends_is_unhealthy_and_a_start_resets_it(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms, monitor: HealthMonitor) -> None:
        record = checked(retries=3)(runtime)
        await runtime.start(record.id)
        main = await vms.next_process()
        await probe(vms, 1)
        await eventually(lambda: health(runtime, record.id).failing_streak == 1)
        main.exit(0)
        await eventually(lambda: not runtime.record(record.id).state.running)
        assert not monitor.probing(record.id)
        stopped = health(runtime, record.id)
        assert stopped.status is HealthStatus.UNHEALTHY and len(stopped.log) == 1
        await runtime.start(record.id)
        assert monitor.probing(record.id)
        again = health(runtime, record.id)
        assert again.status is HealthStatus.STARTING and again.failing_streak == 0
        assert again.log == stopped.log  # dockerd keeps the log across runs

    run(tmp_path, body)


def test_pause_stops_probing_and_unpause_resumes(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms, monitor: HealthMonitor) -> None:
        record = checked()(runtime)
        await runtime.start(record.id)
        await vms.next_process()
        await probe(vms, 0)
        await eventually(lambda: health(runtime, record.id).status is HealthStatus.HEALTHY)
        await runtime.pause(record.id)
        assert not monitor.probing(record.id)
        await runtime.unpause(record.id)
        assert monitor.probing(record.id)
        assert health(runtime, record.id).status is HealthStatus.HEALTHY  # not reset
        await probe(vms, 0)

    run(tmp_path, body)


@pytest.mark.parametrize("config", [None, HealthConfig(test=("NONE",))])
def test_no_health_check_no_probe(tmp_path: Path, config: HealthConfig | None) -> None:
    async def body(runtime: Runtime, vms: FakeVms, monitor: HealthMonitor) -> None:
        record = create(runtime, healthcheck=config)
        await runtime.start(record.id)
        await vms.next_process()
        assert not monitor.probing(record.id)
        assert runtime.record(record.id).state.health is None
        assert vms.started.empty()

    run(tmp_path, body)


def test_health_is_persisted_and_a_new_runtime_reads_it(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms, monitor: HealthMonitor) -> HealthState:
        record = checked(retries=5)(runtime)
        await runtime.start(record.id)
        await vms.next_process()
        await probe(vms, 0, b"ok")
        await probe(vms, 2, b"no")
        await eventually(lambda: health(runtime, record.id).failing_streak == 1)
        monitor.close()
        state = health(runtime, record.id)
        reopened = make_runtime(tmp_path, open_db(tmp_path))
        reopened.recover(kept={record.id})  # as a live restore keeps it running
        assert reopened.record(record.id).state.health == state
        return state

    state = run(tmp_path, body)
    assert state.status is HealthStatus.HEALTHY
    assert [(r.exit_code, r.output) for r in state.log] == [(0, "ok"), (2, "no")]


def test_a_run_that_ended_with_the_daemon_is_unhealthy_for_the_next(tmp_path: Path) -> None:
    async def body(runtime: Runtime, vms: FakeVms, monitor: HealthMonitor) -> None:
        record = checked()(runtime)
        await runtime.start(record.id)
        await vms.next_process()
        await probe(vms, 0)
        await eventually(lambda: health(runtime, record.id).status is HealthStatus.HEALTHY)
        monitor.close()
        reopened = make_runtime(tmp_path, open_db(tmp_path))
        reopened.recover()  # the daemon died: the container exited with it
        assert reopened.record(record.id).state.health.status is HealthStatus.HEALTHY  # type: ignore[union-attr]
        HealthMonitor.attach(reopened)
        after = reopened.record(record.id).state.health
        assert after is not None and after.status is HealthStatus.UNHEALTHY
        assert len(after.log) == 1

    run(tmp_path, body)


def test_old_records_without_health_still_load(tmp_path: Path) -> None:
    from steelcup.runtime.model import ContainerState
    config = ContainerConfig(image="base:1", image_id="x").to_json()
    del config["healthcheck"]
    assert ContainerConfig.from_json(config).healthcheck is None
    state = ContainerState().to_json()
    del state["health"]
    assert ContainerState.from_json(state).health is None
