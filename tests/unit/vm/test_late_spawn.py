"""A QEMU spawn whose caller is cancelled while the spawn thread runs: the process it still
starts is killed and reaped, not left running (machine._await_spawn)."""

from __future__ import annotations

import asyncio
import subprocess
import threading

from steelcup.vm.machine import _await_spawn, _kill_late_spawn


async def _cancelled_spawn() -> subprocess.Popen[bytes]:
    loop = asyncio.get_running_loop()
    go = threading.Event()
    spawned: list[subprocess.Popen[bytes]] = []

    def spawn() -> subprocess.Popen[bytes]:
        go.wait(10)  # still forking when the caller is cancelled
        popen = subprocess.Popen(["sleep", "60"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, start_new_session=True)
        spawned.append(popen)
        return popen

    spawning = loop.run_in_executor(None, spawn)

    task = asyncio.create_task(_await_spawn(spawning))
    await asyncio.sleep(0.05)
    task.cancel()
    go.set()
    try:
        await task
    except asyncio.CancelledError:
        pass
    await spawning
    for _ in range(200):  # the reap runs in a worker thread
        if spawned[0].returncode is not None:
            break
        await asyncio.sleep(0.01)
    return spawned[0]


def test_a_process_started_after_its_caller_was_cancelled_is_killed_and_reaped() -> None:
    popen = asyncio.run(_cancelled_spawn())
    assert popen.returncode == -9


def test_a_failed_or_cancelled_spawn_needs_nothing() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        failed: asyncio.Future[subprocess.Popen[bytes]] = loop.create_future()
        failed.set_exception(OSError("no such file"))
        _kill_late_spawn(failed)
        cancelled: asyncio.Future[subprocess.Popen[bytes]] = loop.create_future()
        cancelled.cancel()
        _kill_late_spawn(cancelled)
    asyncio.run(run())
