"""Golden tests of the guest /proc and ps parsers behind docker top/stats."""
# ruff: noqa: E501 - /proc/net/dev lines are verbatim

from __future__ import annotations

from dataclasses import replace

import pytest

from steelcup.errors import InvalidArgument
from steelcup.runtime.vmstats import NS_PER_TICK, parse_ps, parse_sample

PROC = """\
cpu  14 1 482 4818 3 0 6 0 0 0
cpu0 10 1 300 2400 3 0 6 0 0 0
cpu1 4 0 182 2418 0 0 0 0 0 0
intr 14049 0 0 0
ctxt 3067
processes 134
MemTotal:         210848 kB
MemFree:          150000 kB
MemAvailable:     172424 kB
Cached:            10000 kB
HugePages_Total:       0
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0:    5000      40    1    2    0     0          0         0     7000      50    3    4    0     0       0          0
0.00 0.01 0.05 1/49 134
"""


def test_parse_sample() -> None:
    s = parse_sample(PROC, 123)
    assert s.time_ns == 123
    assert s.cpu_busy_ns == (14 + 1 + 482 + 6) * NS_PER_TICK
    assert s.cpu_total_ns == (14 + 1 + 482 + 4818 + 3 + 6) * NS_PER_TICK
    assert s.online_cpus == 2
    assert s.mem_total_bytes == 210848 * 1024
    assert s.mem_used_bytes == (210848 - 172424) * 1024
    assert set(s.networks) == {"eth0"}  # loopback is not the container's traffic
    eth0 = s.networks["eth0"]
    assert (eth0.rx_bytes, eth0.rx_packets, eth0.rx_errors, eth0.rx_dropped) == (5000, 40, 1, 2)
    assert (eth0.tx_bytes, eth0.tx_packets, eth0.tx_errors, eth0.tx_dropped) == (7000, 50, 3, 4)
    assert s.pids == 49


def test_a_growing_vms_balloon_is_not_the_containers_memory() -> None:
    vmstat = "nr_free_pages 37500\nballoon_inflate 460800\nballoon_deflate 10240\n"
    s = parse_sample(PROC + vmstat, 1)
    assert s.balloon_bytes == (460800 - 10240) * 4096
    assert s.mem_used_bytes == (210848 - 172424) * 1024  # a fixed-size VM: MemTotal lacks them
    grown = replace(s, mem_total_bytes=2048 << 20, mem_available_bytes=(2048 << 20) - (
        s.balloon_bytes + (30 << 20)), grows=True)
    assert grown.mem_used_bytes == 30 << 20  # deflate-on-oom keeps them in MemTotal


def test_parse_sample_tolerates_garbage() -> None:
    s = parse_sample("cpu x y\nMemTotal: lots kB\n\n", 1)
    assert s.cpu_busy_ns == 0 and s.mem_total_bytes == 0 and s.online_cpus == 0


PS = """\
USER     PID   PPID  STAT COMMAND
root         1     0 S    sh -c i=0; while true; do sleep 1; done
root         2     1 S    sleep 1
root         7     0 R    ps -o user,pid,ppid,stat,args
"""


def test_parse_ps_hides_itself_and_keeps_the_main_process() -> None:
    """The container's PID namespace: its main process is PID 1, an exec's parent is outside
    (PPID 0), a child of the main process may be PID 2."""
    titles, rows = parse_ps(PS, frozenset({7}))
    assert titles == ["USER", "PID", "PPID", "STAT", "COMMAND"]
    assert rows == [
        ["root", "1", "0", "S", "sh -c i=0; while true; do sleep 1; done"],
        ["root", "2", "1", "S", "sleep 1"],
    ]


def test_parse_ps_without_ppid_column() -> None:
    titles, rows = parse_ps("PID   USER     COMMAND\n    1 root sleep 9\n   5 root ps -o pid\n",
                            frozenset({5}))
    assert titles == ["PID", "USER", "COMMAND"]
    assert rows == [["1", "root", "sleep 9"]]
    assert parse_ps("") == ([], [])


def test_parse_ps_without_a_pid_column_is_refused_like_dockerd() -> None:
    """Without PIDs the ps itself would be listed as one of the container's processes."""
    with pytest.raises(InvalidArgument, match="Couldn't find PID field in ps output"):
        parse_ps("COMMAND\nsleep 9\nps -o args\n", frozenset({5}))
