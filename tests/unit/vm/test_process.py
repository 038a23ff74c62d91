"""QemuProcess: exit seen through a pidfd, for a child or an adopted process, and no kill on
release (what lets a VM outlive the daemon)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from steelcup.vm.process import RETURNCODE_UNKNOWN, QemuProcess, start_time


def test_start_time_names_one_process() -> None:
    mine = start_time(os.getpid())
    assert isinstance(mine, int) and mine > 0
    assert start_time(os.getpid()) == mine
    assert start_time(2**22 + 12345) is None  # above pid_max: no such process


def test_a_child_is_waited_for_and_killed_with_its_session() -> None:
    async def body() -> None:
        popen = subprocess.Popen(["sleep", "30"], start_new_session=True)
        proc = QemuProcess(popen.pid, popen)
        assert proc.returncode is None
        proc.kill()
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL

    asyncio.run(body())


def test_release_leaves_it_running_and_adopt_checks_the_start_time() -> None:
    async def body() -> None:
        popen = subprocess.Popen(["sleep", "30"], start_new_session=True)
        try:
            proc = QemuProcess(popen.pid, popen)
            proc.release()
            proc.kill()  # no longer ours to kill
            await asyncio.sleep(0.1)
            assert popen.poll() is None
            started = start_time(popen.pid)
            assert started is not None
            with pytest.raises(ProcessLookupError):
                QemuProcess.adopt(popen.pid, started + 1)  # a reused pid is not it
            adopted = QemuProcess.adopt(popen.pid, started)
            adopted.kill()
            # Not our child as far as it knows: the code went to the reaper.
            assert await asyncio.wait_for(adopted.wait(), 10) == RETURNCODE_UNKNOWN
        finally:
            popen.kill()
            popen.wait()

    asyncio.run(body())


def test_an_ended_process_not_yet_reaped_has_no_start_time() -> None:
    popen = subprocess.Popen(["sleep", "30"])
    try:
        assert start_time(popen.pid) is not None
        os.kill(popen.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while start_time(popen.pid) is not None:  # a zombie until reaped below
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert Path(f"/proc/{popen.pid}").exists()
    finally:
        popen.wait()
