"""Looking inside a running container's VM: `top` and `stats` run helper commands in the guest.

Memory, network and processes come from the guest itself (its /proc, its `ps`, run in the
container's PID namespace: the container's processes only); CPU from the host (what QEMU costs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal as signal_module
import time
from collections.abc import Callable
from dataclasses import replace

from steelcup.errors import InvalidArgument, ProcessStartError, SteelcupError, Unsupported
from steelcup.guest.client import ProcessSpec, Stream
from steelcup.runtime.containers import Runtime
from steelcup.runtime.lifecycle import Op, allows
from steelcup.runtime.model import Status
from steelcup.runtime.vmstats import (
    PS_DEFAULT_FIELDS,
    STAT_FILES,
    HostCpu,
    VmSample,
    parse_ps,
    parse_sample,
)
from steelcup.vm.cputime import host_cpu_total_ns

GUEST_EXEC_TIMEOUT_S = 20.0
SAMPLER_KEEP = 3  # readings kept per container: at 1 s, a 2-3 s CPU window for a single answer
SAMPLER_UNWATCHED_PERIOD_S = 10.0  # how often a container nobody asks about is read
SAMPLER_WATCH_S = 60.0  # a stats call keeps its container read every second this long
GUEST_EXEC_OUTPUT_MAX = 4 << 20



async def guest_exec(
    rt: Runtime, ref: str, argv: list[str], *, timeout_s: float = GUEST_EXEC_TIMEOUT_S
) -> tuple[int, bytes, bytes, int]:
    """Run a helper command in the container (as root); (exit code, stdout, stderr, pid)."""
    record = rt.check(ref, Op.TOP)
    # The container's own capabilities: the helper is the image's binary, which the container
    # may have replaced, so it must not run with more than the container has.
    spec = ProcessSpec(args=tuple(argv), env=record.config.env, cwd="/", uid=0, gid=0,
                       groups=(), tty=False, rows=24, cols=80, stdin=False, main=False,
                       caps=record.config.caps)
    try:
        process = await rt.start_in(record.id, Op.TOP, spec)
    except ProcessStartError as exc:
        raise Unsupported(f"cannot run {argv[0]!r} in the container ({exc}); this needs "
                          f"{argv[0]} in the container's image") from exc
    out, err = bytearray(), bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for stream, data in process.output():
                buf = out if stream is Stream.STDOUT else err
                if len(buf) < GUEST_EXEC_OUTPUT_MAX:
                    buf += data
            status = await process.wait()
    except TimeoutError:
        with contextlib.suppress(SteelcupError):
            await process.signal(signal_module.SIGKILL)
        raise SteelcupError(f"{argv[0]} in the container did not finish in {timeout_s}s"
                            ) from None
    return status.status, bytes(out), bytes(err), process.pid

async def top(rt: Runtime, ref: str, ps_args: str = "") -> tuple[list[str], list[list[str]]]:
    """`ps` in the container's PID namespace, without the ps itself."""
    args = ps_args.split()
    if not args or args == ["-ef"]:
        args = ["-o", PS_DEFAULT_FIELDS]  # busybox ps has no -ef; these are its columns
    code, out, err, pid = await guest_exec(rt, ref, ["ps", *args])
    if code != 0:
        raise InvalidArgument(f"ps failed ({code}): {err.decode(errors='replace').strip()}")
    return parse_ps(out.decode(errors="replace"), frozenset({pid}))

async def sample(rt: Runtime, ref: str) -> VmSample | None:
    """The VM's memory/network counters and the container's PID count, read in the guest, and
    its CPU cost read on the host; None if the container is not running."""
    if not allows(rt.record(ref).state.status, Op.TOP):
        return None
    # Both helpers at once: each is a round trip to the guest, and nothing orders them.
    stat_result, ps_result = await asyncio.gather(
        guest_exec(rt, ref, ["cat", *STAT_FILES]),
        guest_exec(rt, ref, ["ps", "-o", "pid,ppid"]),
        return_exceptions=True,
    )
    if isinstance(stat_result, BaseException):
        raise stat_result
    code, out, err, cat_pid = stat_result
    if code != 0 and not out:
        raise SteelcupError(f"reading /proc in the container failed: {err!r}")
    reading = parse_sample(out.decode(errors="replace"), time.time_ns())
    reading = replace(reading, grows=rt.memory_grows(rt.record(ref).config))
    # /proc/loadavg counts the VM's processes and kernel threads too; ps tells the container's.
    if not isinstance(ps_result, BaseException) and ps_result[0] == 0:
        with contextlib.suppress(SteelcupError):
            # neither helper is the container's (the cat may still be running)
            _, rows = parse_ps(ps_result[1].decode(errors="replace"),
                               frozenset({ps_result[3], cat_pid}))
            reading = replace(reading, pids=len(rows))
    elif isinstance(ps_result, BaseException) and not isinstance(ps_result, SteelcupError):
        raise ps_result
    return with_host_view(rt, ref, reading)


def host_total_ns() -> int | None:
    """The host's CPU time so far (/proc/stat), None if it cannot be read."""
    try:
        with open("/proc/stat") as f:
            return host_cpu_total_ns(f.read())
    except OSError:
        return None


def with_host_view(rt: Runtime, ref: str, reading: VmSample) -> VmSample:
    """`reading` with the host's view of the VM as of now: its CPU (`with_host_cpu`) and the
    storage I/O its QEMU caused (left as it was if /proc cannot tell)."""
    io = rt.vm_io(ref)
    if io is not None:
        reading = replace(reading, host_io=io)
    return with_host_cpu(rt, ref, reading)


def with_host_cpu(rt: Runtime, ref: str, reading: VmSample,
                  host_ns: int | None = None) -> VmSample:
    """`reading` with the host's view of the VM's CPU use as of now (a /proc read, no guest
    round trip); unchanged if QEMU cannot be read. `host_ns`: the host's CPU time read just
    before, for a caller that reads many VMs at once."""
    vm = rt.vm_cpu_time(ref)
    if vm is None:
        return reading
    host_total = host_ns if host_ns is not None else host_total_ns()
    if host_total is None:
        return reading
    return replace(reading, time_ns=time.time_ns(), host_cpu=HostCpu(
        vm_ns=vm.total_ns, vm_user_ns=vm.user_ns, vm_system_ns=vm.system_ns,
        host_total_ns=host_total, host_cpus=os.cpu_count() or 1))


class CpuSampler:
    """The host's CPU reading of every running container, refreshed each `interval_s`, so a
    single stats answer (`docker stats --no-stream`) has a reading from before it at hand, as
    dockerd's collector does, instead of measuring a window of its own. Reading QEMU's /proc
    costs the host microseconds and the guest nothing.

    A container nobody asked about for `watch_s` is read only every `unwatched_period_s`: at
    hundreds of idle containers the once-a-second sweep was the daemon's largest idle cost
    (docs/benchmarks.md, issue 19). Its first stats answer then spans up to that period; a
    stats call makes it watched, read every `interval_s` again."""

    def __init__(self, rt: Runtime, interval_s: float = 1.0,
                 unwatched_period_s: float = SAMPLER_UNWATCHED_PERIOD_S,
                 watch_s: float = SAMPLER_WATCH_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rt = rt
        self.interval_s = interval_s
        self.unwatched_period_s = unwatched_period_s
        self.watch_s = watch_s
        self._clock = clock
        self._readings: dict[str, list[VmSample]] = {}  # id -> the last few, oldest first
        self._read_at: dict[str, float] = {}  # id -> clock() of its last reading
        self._asked_at: dict[str, float] = {}  # id -> clock() of its last stats call

    def _watched(self, container_id: str, now: float) -> bool:
        asked = self._asked_at.get(container_id)
        return asked is not None and now - asked < self.watch_s

    def _due(self, container_id: str, now: float, watched: bool) -> bool:
        last = self._read_at.get(container_id)
        if last is None:
            return True
        # a little early rather than a whole sweep late
        period = self.interval_s if watched else self.unwatched_period_s
        return now - last >= period - self.interval_s / 2

    def sample_all(self) -> None:
        running = set()
        now = self._clock()
        # One read of the host's total for the sweep (it moves in 10 ms ticks): read per
        # container it was a quarter of the sweep's cost, which runs every second for every
        # idle container.
        host_ns: int | None = None
        for record in self.rt.list():
            if record.state.status is not Status.RUNNING:
                continue
            watched = self._watched(record.id, now)
            if not self._due(record.id, now, watched):
                running.add(record.id)
                continue
            if host_ns is None:
                host_ns = host_total_ns()
            try:
                reading = with_host_cpu(self.rt, record.id, VmSample(time_ns=time.time_ns()),
                                        host_ns)
            except SteelcupError:
                continue  # removed meanwhile
            if reading.host_cpu is None:
                continue
            running.add(record.id)
            self._read_at[record.id] = now
            kept = self._readings.setdefault(record.id, [])
            kept.append(reading)
            # unwatched: the latest alone, so a first answer spans one period, not several
            del kept[:-(SAMPLER_KEEP if watched else 1)]
        for gone in set(self._readings) - running:
            del self._readings[gone]
            self._read_at.pop(gone, None)
        for gone in set(self._asked_at) - running:
            del self._asked_at[gone]

    def previous(self, container_id: str, min_age_s: float) -> VmSample | None:
        """The oldest reading kept if it is at least `min_age_s` old (None: none yet). The
        longest window: the guest's stats helpers, which a previous stats call ran inside it,
        weigh least there. Asking makes the container watched (read every `interval_s`)."""
        self._asked_at[container_id] = self._clock()
        kept = self._readings.get(container_id, [])
        if kept and kept[0].time_ns <= time.time_ns() - int(min_age_s * 1e9):
            return kept[0]
        return None

    async def run(self) -> None:
        while True:
            self.sample_all()
            await asyncio.sleep(self.interval_s)  # the sampling period, not a synchronisation
