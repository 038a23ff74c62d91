"""Pure parsers for figures read inside a container's VM: `docker top` and `docker stats`
(whose CPU figures come from the host when it can tell them: `HostCpu`).

The guest is asked with one exec (`ps ...`, `cat /proc/stat /proc/meminfo /proc/net/dev
/proc/loadavg`); these functions turn that text into typed samples. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from steelcup.errors import InvalidArgument
from steelcup.vm.hostio import HostIo

# Linux reports /proc/stat in USER_HZ ticks, which is 100 on every architecture we boot.
USER_HZ = 100
NS_PER_TICK = 1_000_000_000 // USER_HZ
STAT_FILES = ("/proc/stat", "/proc/meminfo", "/proc/net/dev", "/proc/loadavg", "/proc/vmstat")
PAGE = 4096
PS_DEFAULT_FIELDS = "user,pid,ppid,stat,args"


@dataclass(frozen=True)
class NetCounters:
    rx_bytes: int = 0
    rx_packets: int = 0
    rx_errors: int = 0
    rx_dropped: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0
    tx_errors: int = 0
    tx_dropped: int = 0


@dataclass(frozen=True)
class HostCpu:
    """The host's view of a VM's CPU use at one moment: what it costs, against what the host
    has (docker's cpu_usage and system_cpu_usage)."""

    vm_ns: int  # QEMU's CPU time, all threads
    vm_user_ns: int
    vm_system_ns: int
    host_total_ns: int  # /proc/stat, every CPU
    host_cpus: int


@dataclass(frozen=True)
class VmSample:
    """One reading of the VM's counters; `time_ns` is the host clock when it was taken."""

    time_ns: int = 0
    cpu_busy_ns: int = 0  # user+nice+system+irq+softirq+steal, all vCPUs
    cpu_user_ns: int = 0
    cpu_system_ns: int = 0
    cpu_total_ns: int = 0  # busy + idle + iowait, all vCPUs (docker's system_cpu_usage)
    percpu_busy_ns: tuple[int, ...] = ()
    mem_total_bytes: int = 0
    mem_available_bytes: int = 0
    mem_fields: dict[str, int] = field(default_factory=dict)  # meminfo, bytes, lower-case keys
    networks: dict[str, NetCounters] = field(default_factory=dict)
    pids: int = 0
    host_cpu: HostCpu | None = None  # when set, the CPU figures docker shows
    host_io: HostIo | None = None  # QEMU's storage I/O: docker's block I/O figures
    # Pages the balloon holds now (/proc/vmstat balloon_inflate - balloon_deflate). A VM whose
    # memory grows on demand keeps them in MemTotal, so they are not the container's use.
    balloon_bytes: int = 0
    grows: bool = False

    @property
    def online_cpus(self) -> int:
        return len(self.percpu_busy_ns)

    @property
    def mem_used_bytes(self) -> int:
        held = self.balloon_bytes if self.grows else 0
        return max(0, self.mem_total_bytes - self.mem_available_bytes - held)


def _cpu_line(fields: list[str]) -> tuple[int, int, int, int]:
    """(busy, user, system, total) in ns from one `cpu` line's tick counters."""
    ticks = [int(v) for v in fields[1:]] + [0] * 10
    user, nice, system, idle, iowait, irq, softirq, steal = ticks[:8]
    busy = user + nice + system + irq + softirq + steal
    total = busy + idle + iowait
    return (busy * NS_PER_TICK, (user + nice) * NS_PER_TICK, system * NS_PER_TICK,
            total * NS_PER_TICK)


def parse_sample(text: str, time_ns: int) -> VmSample:
    """The concatenation of STAT_FILES (in any order: lines are recognised by shape)."""
    busy = user = system = total = 0
    percpu: list[int] = []
    mem: dict[str, int] = {}
    nets: dict[str, NetCounters] = {}
    pids = 0
    balloon = {"balloon_inflate": 0, "balloon_deflate": 0}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        head = parts[0]
        try:
            if head == "cpu":
                busy, user, system, total = _cpu_line(parts)
            elif head.startswith("cpu") and head[3:].isdigit():
                percpu.append(_cpu_line(parts)[0])
            elif head.endswith(":") and len(parts) in (2, 3) and parts[1].isdigit():
                scale = 1024 if len(parts) == 3 and parts[2] == "kB" else 1
                mem[head[:-1].lower()] = int(parts[1]) * scale
            elif ":" in head or (len(parts) > 1 and parts[0].endswith(":")):
                name, _, rest = line.partition(":")
                values = rest.split()
                if len(values) >= 16 and all(v.isdigit() for v in values):
                    n = [int(v) for v in values]
                    nets[name.strip()] = NetCounters(
                        rx_bytes=n[0], rx_packets=n[1], rx_errors=n[2], rx_dropped=n[3],
                        tx_bytes=n[8], tx_packets=n[9], tx_errors=n[10], tx_dropped=n[11])
            elif head in balloon and len(parts) == 2:
                balloon[head] = int(parts[1])
            elif len(parts) == 5 and "/" in parts[3]:
                pids = int(parts[3].partition("/")[2])  # /proc/loadavg: running/total tasks
        except ValueError:
            continue  # a line that only looks like one we know
    nets.pop("lo", None)
    return VmSample(
        time_ns=time_ns, cpu_busy_ns=busy, cpu_user_ns=user, cpu_system_ns=system,
        cpu_total_ns=total, percpu_busy_ns=tuple(percpu),
        mem_total_bytes=mem.get("memtotal", 0),
        mem_available_bytes=mem.get("memavailable", mem.get("memfree", 0)),
        mem_fields=mem, networks=nets, pids=pids,
        balloon_bytes=max(0, balloon["balloon_inflate"] - balloon["balloon_deflate"]) * PAGE,
    )


def parse_ps(
    text: str, hide_pids: frozenset[int] = frozenset()
) -> tuple[list[str], list[list[str]]]:
    """`ps -o ...` output -> (titles, rows). The last column (COMMAND) keeps its spaces.

    `ps` runs in the container's PID namespace, which shows the container's processes only (its
    main process is PID 1); the rows of `hide_pids` (the ps itself) are left out.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return [], []
    titles = lines[0].split()
    if "PID" not in titles:
        # dockerd's answer: without PIDs, the ps itself could not be told from the container's
        raise InvalidArgument("Couldn't find PID field in ps output")
    pid_col = titles.index("PID")
    rows: list[list[str]] = []
    for line in lines[1:]:
        row = line.split(None, len(titles) - 1)
        if len(row) < len(titles):
            row += [""] * (len(titles) - len(row))
        if _int_or(row[pid_col], -1) in hide_pids:
            continue
        rows.append(row)
    return titles, rows


def _int_or(text: str, default: int) -> int:
    try:
        return int(text)
    except ValueError:
        return default
