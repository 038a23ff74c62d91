"""An attach that asks for the log too (`logs=1&stream=1`, what a keeper does after a daemon
restart): the log's replay stops where the subscription's stream starts, so each chunk
arrives once, whenever the attach falls between them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from steelcup.guest.client import Stream
from steelcup.runtime.containers import Runtime
from steelcup.runtime.logs import LogFilter
from steelcup.runtime.model import ContainerConfig
from steelcup.state.db import open_db
from tests.unit.runtime.fakevm import FakeVms
from tests.unit.runtime.support import make_runtime

pytestmark = pytest.mark.usefixtures("plain_dirs")  # conftest: roots are plain dirs


async def logged(runtime: Runtime, cid: str, text: bytes) -> None:
    path = runtime.log_path(cid)
    for _ in range(200):
        if path.exists() and text in path.read_bytes():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{text!r} never reached the log")


async def replayed(runtime: Runtime, cid: str, until_ns: int) -> list[tuple[str, bytes]]:
    """What the attach route replays before the stream."""
    want = LogFilter(stdout=True, stderr=True, until_ns=until_ns)
    return [(e.stream, e.data)
            async for e in runtime.follow_logs(cid, follow=False, want=want)]


def test_the_replay_ends_where_the_stream_begins(tmp_path: Path) -> None:
    vms = FakeVms()

    async def main() -> None:
        runtime = make_runtime(tmp_path, open_db(tmp_path), vms=vms.source())
        try:
            record = runtime.create(ContainerConfig(image="base:1", image_id="",
                                                    cmd=("serve",)), "web")
            await runtime.start(record.id)
            process = await vms.next_process()
            process.write(b"one\n")
            process.write(b"err\n", Stream.STDERR)
            await logged(runtime, record.id, b"err")
            attached = runtime.attach(record.id, True, True)
            process.write(b"two\n")
            await logged(runtime, record.id, b"two")
            # the log has all three now; the replay only what the stream will not bring
            assert await replayed(runtime, record.id, attached.logged_until_ns) == [
                ("stdout", b"one\n"), ("stderr", b"err\n")]
            assert await asyncio.wait_for(attached.subscriber.queue.get(), 5) == (
                "stdout", b"two\n")
            process.exit(3)
            assert await asyncio.wait_for(attached.subscriber.queue.get(), 5) is None
            # attached after the run: the whole log, and no stream (the next run's)
            late = runtime.attach(record.id, True, True)
            assert [data for _s, data in await replayed(runtime, record.id,
                                                        late.logged_until_ns)] == [
                b"one\n", b"err\n", b"two\n"]
            assert late.subscriber.queue.empty()
        finally:
            await runtime.shutdown()

    asyncio.run(asyncio.wait_for(main(), 20))
