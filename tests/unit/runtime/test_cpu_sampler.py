"""The daemon's CPU sampler: every running container read each second while someone asks for
its stats, every `unwatched_period_s` otherwise (issue 19: the sweep's cost at hundreds of
idle containers)."""

from __future__ import annotations

from dataclasses import dataclass, field

from steelcup.runtime.inspection import SAMPLER_KEEP, CpuSampler
from steelcup.runtime.model import Status
from steelcup.vm.cputime import QemuCpuTime


@dataclass
class _State:
    status: Status


@dataclass
class _Record:
    id: str
    state: _State


@dataclass
class _FakeRuntime:
    """What the sampler uses of a Runtime: the records and each VM's CPU time."""

    running: list[str]
    reads: dict[str, int] = field(default_factory=dict)  # id -> times its QEMU was read

    def list(self) -> list[_Record]:
        return [_Record(cid, _State(Status.RUNNING)) for cid in self.running]

    def vm_cpu_time(self, ref: str) -> QemuCpuTime:
        self.reads[ref] = self.reads.get(ref, 0) + 1
        return QemuCpuTime(total_ns=self.reads[ref] * 1000, user_ns=0, system_ns=0)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sweeps(sampler: CpuSampler, clock: _Clock, seconds: int) -> None:
    for _ in range(seconds):
        sampler.sample_all()
        clock.now += 1.0


def _sampler(rt: _FakeRuntime, clock: _Clock) -> CpuSampler:
    return CpuSampler(rt, interval_s=1.0, unwatched_period_s=10.0, watch_s=60.0,  # type: ignore[arg-type]
                      clock=clock)


def test_unwatched_containers_are_read_every_period_not_every_sweep() -> None:
    rt, clock = _FakeRuntime(["a", "b"]), _Clock()
    sampler = _sampler(rt, clock)
    _sweeps(sampler, clock, 30)
    assert rt.reads == {"a": 3, "b": 3}  # at 0, 10 and 20 s


def test_a_stats_call_makes_its_container_read_every_second_for_watch_s() -> None:
    rt, clock = _FakeRuntime(["a", "b"]), _Clock()
    sampler = _sampler(rt, clock)
    _sweeps(sampler, clock, 1)
    first = sampler.previous("a", 0.0)
    assert first is not None  # the reading from the first sweep is at hand
    _sweeps(sampler, clock, 30)
    assert rt.reads["a"] == 1 + 30 and rt.reads["b"] == 4
    assert len(sampler._readings["a"]) == SAMPLER_KEEP
    clock.now += 60  # nobody asked since: back to the slow period
    before = rt.reads["a"]
    _sweeps(sampler, clock, 20)
    assert rt.reads["a"] - before == 2


def test_an_unwatched_container_keeps_only_its_latest_reading() -> None:
    rt, clock = _FakeRuntime(["a"]), _Clock()
    sampler = _sampler(rt, clock)
    _sweeps(sampler, clock, 25)
    assert len(sampler._readings["a"]) == 1
    reading = sampler.previous("a", 0.0)
    assert reading is not None and reading.host_cpu is not None
    assert reading.host_cpu.vm_ns == 3000  # the third read (at 20 s), not the first


def test_a_container_that_stops_is_forgotten() -> None:
    rt, clock = _FakeRuntime(["a", "b"]), _Clock()
    sampler = _sampler(rt, clock)
    _sweeps(sampler, clock, 2)
    sampler.previous("b", 0.0)
    rt.running = ["a"]
    _sweeps(sampler, clock, 1)
    assert sampler.previous("b", 0.0) is None
    assert set(sampler._readings) == {"a"}
