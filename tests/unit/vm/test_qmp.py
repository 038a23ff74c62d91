"""The QMP session against a scripted monitor on a real unix socket: replies matched by id
(out of order too), events to subscribers, a broken socket fails what is pending."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from steelcup.vm.qmp import QmpClient, QmpError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _send(w: asyncio.StreamWriter, obj: object) -> None:
    w.write(json.dumps(obj).encode() + b"\n")
    await w.drain()


async def _recv(r: asyncio.StreamReader) -> dict[str, object]:
    value = json.loads(await r.readline())
    assert isinstance(value, dict)
    return value


def _run(tmp_path: Path, monitor: Handler,
         client: Callable[[QmpClient], Awaitable[None]]) -> None:
    async def main() -> None:
        async def greet(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await _send(w, {"QMP": {"version": {}, "capabilities": []}})
            cap = await _recv(r)
            assert cap["execute"] == "qmp_capabilities"
            await _send(w, {"return": {}, "id": cap["id"]})
            await monitor(r, w)

        sock = tmp_path / "qmp.sock"
        server = await asyncio.start_unix_server(greet, path=str(sock))
        try:
            session = await QmpClient.connect(sock, 5)
            try:
                await client(session)
            finally:
                await session.close()
        finally:
            server.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_replies_are_matched_by_id_even_out_of_order(tmp_path: Path) -> None:
    async def monitor(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        first, second = await _recv(r), await _recv(r)
        await _send(w, {"event": "STOP", "data": {}})
        await _send(w, {"return": {"which": second["execute"]}, "id": second["id"]})
        await _send(w, {"error": {"class": "GenericError", "desc": "no"}, "id": first["id"]})
        await r.read()

    async def client(session: QmpClient) -> None:
        a = asyncio.create_task(session.execute("first"))
        await asyncio.sleep(0.05)
        b = asyncio.create_task(session.execute("second"))
        assert await b == {"which": "second"}
        with pytest.raises(QmpError, match="GenericError: no"):
            await a

    _run(tmp_path, monitor, client)


def test_events_reach_subscribers_and_wait_event_filters(tmp_path: Path) -> None:
    async def monitor(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        cmd = await _recv(r)
        await _send(w, {"return": {}, "id": cmd["id"]})
        for status in ("setup", "active", "completed"):
            await _send(w, {"event": "MIGRATION", "data": {"status": status}})
        await r.read()

    async def client(session: QmpClient) -> None:
        async with session.events() as events:
            await session.execute("migrate")
            done = await session.wait_event(
                events, lambda e: e["data"].get("status") == "completed", 5)
        assert done["event"] == "MIGRATION"

    _run(tmp_path, monitor, client)


def test_a_broken_socket_fails_pending_commands_and_waiters(tmp_path: Path) -> None:
    async def monitor(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _recv(r)
        w.close()  # QEMU died

    async def client(session: QmpClient) -> None:
        async with session.events() as events:
            with pytest.raises(QmpError, match="closed"):
                await session.execute("query-status")
            with pytest.raises(QmpError, match="broke"):
                await session.wait_event(events, lambda e: True, 5)
        assert session.closed
        with pytest.raises(QmpError):
            await session.execute("cont")

    _run(tmp_path, monitor, client)


def test_no_answer_is_a_timeout_not_a_hang(tmp_path: Path) -> None:
    async def monitor(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read()

    async def client(session: QmpClient) -> None:
        with pytest.raises(QmpError, match="no answer within 0.2s"):
            await session.execute("query-status", timeout_s=0.2)

    _run(tmp_path, monitor, client)
