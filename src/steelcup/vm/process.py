"""QEMU's host process as a `Machine` holds it: spawned by this daemon or adopted from an
earlier one (live restore), its end seen through a pidfd either way.

A pidfd tells when any process ends, child or not, and never names another process after a
pid is reused: an adopted QEMU is checked once (`start_time` from /proc) and then only through
its pidfd. Unlike asyncio's subprocess transport, nothing here kills QEMU when the daemon lets
go of it (`release`), so a VM can outlive the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess

# What `returncode` says of a QEMU that ended but was not this daemon's child (adopted after a
# restart): its exit status went to its new parent.
RETURNCODE_UNKNOWN = -255


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22): with the pid,
    it names one process for the life of the host. None if there is no such process, or it has
    ended and waits to be reaped (a zombie: an orphaned QEMU whose new parent is slow to reap)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields after its last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        if fields[0] in ("Z", "X"):
            return None
        return int(fields[19])
    except (IndexError, ValueError):
        return None


class QemuProcess:
    """A running QEMU: `pid`, `returncode` (None while it runs), `wait()`, `kill()`."""

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self._popen = popen
        self.returncode: int | None = None
        self._exited = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._pidfd = os.pidfd_open(pid)  # ProcessLookupError: it is gone already
        self._loop.add_reader(self._pidfd, self._on_exit)

    @classmethod
    def adopt(cls, pid: int, started: int) -> QemuProcess:
        """An earlier daemon's QEMU, if process `pid` is still the one that started at
        `started`; ProcessLookupError if not (it ended, and the pid may be another's now)."""
        proc = cls(pid)
        if start_time(pid) != started:  # checked after the pidfd pins the process
            proc.release()
            raise ProcessLookupError(f"process {pid} is not the QEMU that started at {started}")
        return proc

    def _on_exit(self) -> None:
        self._stop_watching()
        if self._popen is not None:
            code = self._popen.poll()
            self.returncode = code if code is not None else RETURNCODE_UNKNOWN
        else:
            self.returncode = RETURNCODE_UNKNOWN
        self._exited.set()

    def _stop_watching(self) -> None:
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        """SIGKILL QEMU and everything in its session (it leads one), while it runs."""
        if self.returncode is None and self._pidfd >= 0:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    def release(self) -> None:
        """Let go without killing: QEMU runs on, another daemon may adopt it."""
        self._stop_watching()
        self._popen = None  # its object no longer waits for it either
