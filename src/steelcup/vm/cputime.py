"""Pure parsers for the host's view of a VM's CPU use: what `docker stats` shows as the
container's cost (QEMU's CPU time against the host's), read from the host's /proc."""

from __future__ import annotations

from dataclasses import dataclass, field

# /proc/PID/stat and /proc/stat count in USER_HZ ticks, 100 on every Linux architecture here.
USER_HZ = 100
NS_PER_TICK = 1_000_000_000 // USER_HZ


@dataclass(frozen=True)
class QemuCpuTime:
    """CPU time one QEMU process has used on the host, all threads."""

    total_ns: int  # exact: its threads' schedstat run times, ended threads included
    user_ns: int  # tick-grained, from /proc/PID/stat
    system_ns: int


@dataclass(frozen=True)
class ThreadTimes:
    """Run time per thread id as last read, plus that of threads since gone: QEMU's worker
    threads come and go, and a total over the live ones alone would run backwards."""

    seen: dict[int, int] = field(default_factory=dict)
    gone_ns: int = 0

    @property
    def total_ns(self) -> int:
        return self.gone_ns + sum(self.seen.values())


def schedstat_ns(text: str) -> int | None:
    """The run time (ns) in one /proc/PID/task/TID/schedstat."""
    fields = text.split()
    return int(fields[0]) if fields and fields[0].isdigit() else None


def accumulate(prev: ThreadTimes, now: dict[int, int]) -> ThreadTimes:
    """Fold a new reading of {tid: run time ns} into `prev`. A thread missing now ended; one
    whose time went down is a new thread that reused the id."""
    gone = prev.gone_ns
    for tid, ns in prev.seen.items():
        if tid not in now or now[tid] < ns:
            gone += ns
    return ThreadTimes(dict(now), gone)


def user_system_ns(proc_pid_stat: str) -> tuple[int, int]:
    """utime and stime (all threads, ended ones included) from /proc/PID/stat."""
    # The command name (2nd field) is in parentheses and may hold spaces: count after it.
    after = proc_pid_stat.rpartition(")")[2].split()
    if len(after) > 12 and after[11].isdigit() and after[12].isdigit():
        return int(after[11]) * NS_PER_TICK, int(after[12]) * NS_PER_TICK
    return 0, 0


def host_cpu_total_ns(proc_stat: str) -> int:
    """The host's CPU time from /proc/stat's `cpu` line, summed as dockerd does (user, nice,
    system, idle, iowait, irq, softirq): its `system_cpu_usage`, against which docker computes
    a container's share."""
    for line in proc_stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            return sum(int(v) for v in fields[1:8] if v.isdigit()) * NS_PER_TICK
    return 0
