"""Health checks, the pure part: a container's HealthConfig merged with its image's and
validated as dockerd does, the probe it resolves to, and the health state machine (starting ->
healthy | unhealthy, the failing streak, the log of the last probes). `health.py` runs it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any

from steelcup.errors import InvalidArgument
from steelcup.image.config import HealthConfig

NS = 1_000_000_000
MIN_DURATION_NS = 1_000_000  # dockerd's MinimumDuration (1ms)
DEFAULT_INTERVAL_NS = 30 * NS
DEFAULT_TIMEOUT_NS = 30 * NS
DEFAULT_START_INTERVAL_NS = 5 * NS
DEFAULT_RETRIES = 3
MAX_LOG_ENTRIES = 5  # dockerd's maxLogEntries
MAX_OUTPUT_BYTES = 4096  # dockerd's maxOutputLen
EXIT_PROBE_FAILED = -1  # dockerd's code for a probe that timed out or could not run


class HealthStatus(enum.Enum):
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class HealthResult:
    """One probe: when it ran (RFC 3339), its exit code and its output (truncated)."""

    start: str
    end: str
    exit_code: int
    output: str


@dataclass(frozen=True)
class HealthState:
    """`State.Health`: persisted with the container's state."""

    status: HealthStatus = HealthStatus.STARTING
    failing_streak: int = 0
    log: tuple[HealthResult, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.value, "failing_streak": self.failing_streak,
                "log": [r.__dict__ for r in self.log]}

    @staticmethod
    def from_json(data: dict[str, Any]) -> HealthState:
        return HealthState(status=HealthStatus(data["status"]),
                           failing_streak=int(data.get("failing_streak", 0)),
                           log=tuple(HealthResult(**r) for r in data.get("log", ())))


@dataclass(frozen=True)
class Probe:
    """What the monitor runs: the argv in the container and its timing (defaults applied)."""

    argv: tuple[str, ...]
    interval_s: float
    timeout_s: float
    start_period_s: float
    start_interval_s: float
    retries: int


def validate(config: HealthConfig | None) -> None:
    """A create request's Healthcheck, refused as dockerd refuses it."""
    if config is None:
        return
    for name, value in (("Interval", config.interval_ns), ("Timeout", config.timeout_ns),
                        ("StartPeriod", config.start_period_ns),
                        ("StartInterval", config.start_interval_ns)):
        if value != 0 and value < MIN_DURATION_NS:
            raise InvalidArgument(f"{name} in Healthcheck cannot be less than 1ms")
    if config.retries < 0:
        raise InvalidArgument("Retries in Healthcheck cannot be negative")


def merge(own: HealthConfig | None, image: HealthConfig | None) -> HealthConfig | None:
    """dockerd's merge: the container's non-zero fields over the image's (a NONE test turns
    the image's check off)."""
    if own is None:
        return image
    if image is None:
        return own
    return HealthConfig(
        test=own.test or image.test,
        interval_ns=own.interval_ns or image.interval_ns,
        timeout_ns=own.timeout_ns or image.timeout_ns,
        start_period_ns=own.start_period_ns or image.start_period_ns,
        start_interval_ns=own.start_interval_ns or image.start_interval_ns,
        retries=own.retries or image.retries,
    )


def probe(config: HealthConfig | None) -> Probe | None:
    """The probe a container's (merged) config runs; None if it has none."""
    if config is None or config.disabled or len(config.test) < 2:
        return None
    argv = (("/bin/sh", "-c", config.test[1]) if config.test[0] == "CMD-SHELL"
            else config.test[1:])

    def seconds(value_ns: int, default_ns: int) -> float:
        return (value_ns if value_ns > 0 else default_ns) / NS

    return Probe(
        argv=argv,
        interval_s=seconds(config.interval_ns, DEFAULT_INTERVAL_NS),
        timeout_s=seconds(config.timeout_ns, DEFAULT_TIMEOUT_NS),
        start_period_s=seconds(config.start_period_ns, 0),
        start_interval_s=seconds(config.start_interval_ns, DEFAULT_START_INTERVAL_NS),
        retries=config.retries if config.retries > 0 else DEFAULT_RETRIES,
    )


def next_delay_s(p: Probe, status: HealthStatus, since_start_s: float) -> float:
    """The wait before the next probe: the start interval while still starting within the
    start period, the interval otherwise (dockerd's getInterval)."""
    if since_start_s < p.start_period_s and status is HealthStatus.STARTING:
        return p.start_interval_s
    return p.interval_s


def started(state: HealthState | None) -> HealthState:
    """At a container's start: starting again, the streak reset, the log kept (dockerd)."""
    if state is None:
        return HealthState()
    return replace(state, status=HealthStatus.STARTING, failing_streak=0)


def stopped(state: HealthState) -> HealthState:
    """When the run ends: unhealthy, as dockerd marks a container whose monitor stopped."""
    return replace(state, status=HealthStatus.UNHEALTHY)


def record_result(state: HealthState, result: HealthResult, *, retries: int,
                  in_start_period: bool) -> HealthState:
    """dockerd's handleProbeResult: a success makes it healthy and resets the streak; a
    failure adds to the streak (unless it is still starting within its start period) and
    makes it unhealthy at `retries` in a row."""
    log = (*state.log, result)[-MAX_LOG_ENTRIES:]
    if result.exit_code == 0:
        return HealthState(HealthStatus.HEALTHY, 0, log)
    if state.status is HealthStatus.STARTING and in_start_period:
        return replace(state, log=log)
    streak = state.failing_streak + 1
    status = HealthStatus.UNHEALTHY if streak >= retries else state.status
    return HealthState(status, streak, log)


def clip_output(data: bytes) -> str:
    """A probe's output as dockerd keeps it: the first 4096 bytes, "..." if there was more."""
    text = data[:MAX_OUTPUT_BYTES].decode(errors="replace")
    return text + "..." if len(data) > MAX_OUTPUT_BYTES else text


def go_duration(seconds: float) -> str:
    """A duration as Go prints it in dockerd's messages ("30s", "1.5s", "500ms", "1m30s")."""
    ns = round(seconds * NS)
    if ns == 0:
        return "0s"
    if ns < NS:
        ms = ns / 1_000_000
        return f"{ms:g}ms" if ns >= 1_000_000 else f"{ns / 1000:g}µs"
    minutes, rest_ns = divmod(ns, 60 * NS)
    hours, minutes = divmod(minutes, 60)
    secs = f"{rest_ns / NS:.9f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
