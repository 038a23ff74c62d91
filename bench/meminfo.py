"""The host's /proc/meminfo, one field at a time, for the benchmarks."""

from __future__ import annotations

from pathlib import Path


def meminfo_kib(field: str) -> int:
    """The value of `field` (e.g. MemAvailable, AnonPages) in /proc/meminfo, in kB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/meminfo")
