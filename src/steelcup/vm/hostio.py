"""The storage I/O one QEMU process has caused on the host: its /proc/PID/io.

A container's root, volumes and binds are files the VM's QEMU reads and writes for the guest
(virtio-9p), so QEMU's `read_bytes`/`write_bytes` are what the container made the host's
storage do: bytes fetched from storage (reads the page cache answered are not counted) and
bytes it dirtied for writing. That is what docker's block I/O figures are for a runc
container (its cgroup's storage I/O), and the one source of both `docker stats`' BlockIO and
the metrics' `steelcup_container_fs_*` families.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HostIo:
    """Storage bytes one process has read and written, all its threads, since it started."""

    read_bytes: int
    write_bytes: int


def parse_proc_io(text: str) -> HostIo:
    """/proc/PID/io's `read_bytes` and `write_bytes` (ValueError if either is missing).
    `cancelled_write_bytes` (dirtied pages of a file truncated before writeback) is taken
    off the written bytes, as the kernel's own accounting says it never reached storage."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = int(value)
    missing = {"read_bytes", "write_bytes"} - fields.keys()
    if missing:
        raise ValueError(f"/proc/PID/io without {', '.join(sorted(missing))}")
    written = fields["write_bytes"] - fields.get("cancelled_write_bytes", 0)
    return HostIo(read_bytes=fields["read_bytes"], write_bytes=max(0, written))


def read_host_io(pid: int, proc: Path = Path("/proc")) -> HostIo | None:
    """The process's storage I/O; None if it is gone or cannot be read."""
    try:
        return parse_proc_io((proc / str(pid) / "io").read_text())
    except (OSError, ValueError):
        return None
