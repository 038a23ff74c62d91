"""Attaching to a container's output against the fake VM source: a replay of the log
(`logs=1&stream=1`, what a keeper does after a daemon restart) stops where the
subscription's stream starts, so each chunk arrives once; and an attach made as the run ends
ends with it rather than waiting for the container's next run."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from steelcup.guest.client import Stream
from steelcup.runtime.containers import Runtime
from steelcup.runtime.logs import LogFilter
from steelcup.runtime.model import ContainerConfig
from steelcup.state.db import open_db
from tests.unit.runtime.fakevm import FakeProcess, FakeVms
from tests.unit.runtime.support import logged, make_runtime

pytestmark = pytest.mark.usefixtures("plain_dirs")  # conftest: roots are plain dirs

Body = Callable[[Runtime, str, FakeProcess], Awaitable[None]]


def with_running(tmp_path: Path, vms: FakeVms, body: Body) -> None:
    """`body(runtime, container id, its main process)` with one container started."""
    async def main() -> None:
        runtime = make_runtime(tmp_path, open_db(tmp_path), vms=vms.source())
        try:
            record = runtime.create(ContainerConfig(image="base:1", image_id="",
                                                    cmd=("serve",)), "web")
            await runtime.start(record.id)
            await body(runtime, record.id, await vms.next_process())
        finally:
            await runtime.shutdown()

    asyncio.run(asyncio.wait_for(main(), 20))


async def exited(runtime: Runtime, cid: str) -> None:
    for _ in range(250):
        if not runtime.record(cid).state.running:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the container did not exit")


async def replayed(runtime: Runtime, cid: str, until_ns: int) -> list[tuple[str, bytes]]:
    """What the attach route replays before the stream."""
    want = LogFilter(stdout=True, stderr=True, until_ns=until_ns)
    return [(e.stream, e.data)
            async for e in runtime.follow_logs(cid, follow=False, want=want)]


def test_the_replay_ends_where_the_stream_begins(tmp_path: Path) -> None:
    async def body(runtime: Runtime, cid: str, process: FakeProcess) -> None:
        process.write(b"one\n")
        process.write(b"err\n", Stream.STDERR)
        await logged(runtime, cid, b"err")
        attached = runtime.attach(cid, True, True)
        process.write(b"two\n")
        await logged(runtime, cid, b"two")
        # the log has all three now; the replay only what the stream will not bring
        assert await replayed(runtime, cid, attached.logged_until_ns) == [
            ("stdout", b"one\n"), ("stderr", b"err\n")]
        assert await asyncio.wait_for(attached.subscriber.queue.get(), 5) == (
            "stdout", b"two\n")
        process.exit(3)
        assert await asyncio.wait_for(attached.subscriber.queue.get(), 5) is None
        await exited(runtime, cid)
        # attached after the run: the whole log, and no stream (the next run's)
        late = runtime.attach(cid, True, True)
        assert [data for _s, data in await replayed(runtime, cid, late.logged_until_ns)] == [
            b"one\n", b"err\n", b"two\n"]
        assert late.subscriber.queue.empty()

    with_running(tmp_path, FakeVms(), body)


def test_an_attach_as_the_run_ends_ends_with_it(tmp_path: Path) -> None:
    """Between the end of a run's output and its container's state saying so (the VM is
    still being stopped), an attach belongs to the run that ended: its stream ends at once
    rather than waiting for a next run. Once the state says exited, it is for the next run."""
    gate = asyncio.Event()

    async def body(runtime: Runtime, cid: str, process: FakeProcess) -> None:
        first = runtime.attach(cid, True, True)
        process.write(b"last\n")
        process.exit(4)
        assert await asyncio.wait_for(first.subscriber.queue.get(), 5) == ("stdout", b"last\n")
        assert await asyncio.wait_for(first.subscriber.queue.get(), 5) is None
        assert runtime.record(cid).state.running  # its VM is still stopping
        during = runtime.attach(cid, True, True)
        assert await asyncio.wait_for(during.subscriber.queue.get(), 5) is None
        gate.set()
        await exited(runtime, cid)
        assert runtime.record(cid).state.exit_code == 4
        after = runtime.attach(cid, True, True)
        await asyncio.sleep(0.1)
        assert after.subscriber.queue.empty()  # waits for the next start

    with_running(tmp_path, FakeVms(close_gate=gate), body)
