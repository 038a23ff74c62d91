"""Golden tests of the host-side CPU readings behind `docker stats` (QEMU's cost)."""

from __future__ import annotations

from steelcup.vm.cputime import (
    NS_PER_TICK,
    ThreadTimes,
    accumulate,
    host_cpu_total_ns,
    schedstat_ns,
    user_system_ns,
)

# /proc/PID/stat of a QEMU; the command name holds a space and a ')' to trip naive splitting
PID_STAT = ("4242 (qemu sys) x)) S 1 4242 4242 0 -1 4194560 9500 0 0 0 "
            "731 215 0 0 20 0 9 0 123456 2147483648 30000 18446744073709551615 "
            "1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n")
PROC_STAT = ("cpu  1000 20 300 50000 40 5 6 7 0 0\n"
             "cpu0 500 10 150 25000 20 2 3 3 0 0\n"
             "intr 1 2 3\n")


def test_user_and_system_time_after_the_command_name() -> None:
    assert user_system_ns(PID_STAT) == (731 * NS_PER_TICK, 215 * NS_PER_TICK)
    assert user_system_ns("garbage") == (0, 0)


def test_host_total_sums_what_dockerd_sums() -> None:
    # user nice system idle iowait irq softirq; not steal or guest time
    assert host_cpu_total_ns(PROC_STAT) == (1000 + 20 + 300 + 50000 + 40 + 5 + 6) * NS_PER_TICK
    assert host_cpu_total_ns("") == 0


def test_schedstat_run_time() -> None:
    assert schedstat_ns("123456789 2000 17\n") == 123456789
    assert schedstat_ns("") is None


def test_thread_times_never_run_backwards() -> None:
    """QEMU's worker threads end and their ids come back: the total keeps what they ran."""
    t = accumulate(ThreadTimes(), {1: 100, 2: 50})
    assert t.total_ns == 150
    t = accumulate(t, {1: 120})  # thread 2 ended
    assert t.total_ns == 170
    t = accumulate(t, {1: 130, 2: 5})  # a new thread reused id 2
    assert t.total_ns == 50 + 130 + 5
    t = accumulate(t, {1: 130, 2: 9})
    assert t.total_ns == 50 + 130 + 9
