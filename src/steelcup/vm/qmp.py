"""An asyncio QMP session (QEMU Machine Protocol): JSON lines over the VM's unix socket.

One session per VM for its whole life (`Machine` owns it; nothing else connects: QEMU's monitor
socket serves one client). `connect()` reads the greeting and negotiates `qmp_capabilities`; a
reader task then routes each reply to its command by `id` and each asynchronous event to the
subscribers (`events()`), so callers wait for `MIGRATION`, `STOP`, `RESUME` or `SHUTDOWN`
instead of polling. Every wait has a deadline; a broken socket fails every pending command.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from steelcup.errors import SteelcupError

QMP_TIMEOUT_S = 10.0
LINE_MAX = 1 << 20
EVENT_QUEUE_MAX = 1024  # events a subscriber may leave unread before it misses some


class QmpError(SteelcupError):
    """QEMU refused a command, or its monitor socket broke or did not answer in time."""


Event = dict[str, Any]


class QmpClient:
    """One QMP connection with a reader task; commands may overlap (matched by id)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._subscribers: set[asyncio.Queue[Event | None]] = set()
        self._pump: asyncio.Task[None] | None = None
        self._closed = False
        self._broken: QmpError | None = None

    @classmethod
    async def connect(cls, socket_path: Path, deadline_s: float) -> QmpClient:
        """Connect (retrying while QEMU has not created the socket yet) and negotiate."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(
                    str(socket_path), limit=LINE_MAX
                )
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if loop.time() >= end:
                    raise QmpError(f"QMP socket {socket_path}: {exc}") from exc
                await asyncio.sleep(0.005)  # the socket appears when QEMU has started
            except OSError as exc:
                raise QmpError(f"QMP socket {socket_path}: {exc}") from exc
        client = cls(reader, writer)
        try:
            async with asyncio.timeout(max(0.1, end - loop.time())):
                greeting = await client._read()
            if "QMP" not in greeting:
                raise QmpError(f"unexpected QMP greeting: {greeting}")
            client._pump = asyncio.create_task(client._run(), name=f"qmp-{socket_path}")
            await client.execute("qmp_capabilities", timeout_s=max(0.1, end - loop.time()))
        except TimeoutError:
            await client.close()
            raise QmpError(f"QMP socket {socket_path}: no greeting in {deadline_s}s") from None
        except BaseException:
            await client.close()
            raise
        return client

    @property
    def closed(self) -> bool:
        return self._closed or self._broken is not None

    async def execute(
        self, command: str, arguments: dict[str, Any] | None = None,
        *, timeout_s: float = QMP_TIMEOUT_S,
    ) -> Any:
        """Run `command`; its `return` value, or QmpError with QEMU's error class/desc."""
        return await self._call(command, arguments, timeout_s)

    async def add_fd(self, fd: int, *, timeout_s: float = QMP_TIMEOUT_S) -> int:
        """Hand QEMU a copy of `fd` in a new fd set (QMP `add-fd`, SCM_RIGHTS); the set's id,
        which QEMU opens as `/dev/fdset/ID` wherever it takes a file name."""
        added = await self._call("add-fd", None, timeout_s, fd=fd)
        return int(added["fdset-id"])

    async def send_fd(self, name: str, fd: int, *, timeout_s: float = QMP_TIMEOUT_S) -> None:
        """Hand QEMU a copy of `fd` under `name` (QMP `getfd`, the fd passed with SCM_RIGHTS on
        the monitor socket), e.g. for `migrate` to `fd:<name>`."""
        await self._call("getfd", {"fdname": name}, timeout_s, fd=fd)

    async def _call(self, command: str, arguments: dict[str, Any] | None, timeout_s: float,
                    *, fd: int | None = None) -> Any:
        if self._broken is not None:
            raise QmpError(f"QMP {command}: {self._broken}")
        if self._closed:
            raise QmpError(f"QMP {command}: the session is closed")
        ident = next(self._ids)
        message: dict[str, Any] = {"execute": command, "id": ident}
        if arguments:
            message["arguments"] = arguments
        data = json.dumps(message).encode() + b"\n"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            async with asyncio.timeout(timeout_s):
                if fd is None:
                    self._writer.write(data)
                else:
                    await self._writer.drain()  # nothing of ours may be queued ahead of it
                    transport_socket = self._writer.get_extra_info("socket")
                    with socket.socket(fileno=os.dup(transport_socket.fileno())) as sock:
                        socket.send_fds(sock, [data], [fd])  # one small message: never blocks
                await self._writer.drain()
                reply = await future
        except TimeoutError:
            raise QmpError(f"QMP {command}: no answer within {timeout_s}s") from None
        except (OSError, ConnectionError) as exc:
            raise QmpError(f"QMP {command}: {exc}") from exc
        finally:
            self._pending.pop(ident, None)
        return _result(command, reply)

    @contextlib.asynccontextmanager
    async def events(self) -> AsyncIterator[asyncio.Queue[Event | None]]:
        """Subscribe to events for the `with` block (subscribe *before* the command that causes
        them). The queue gets each event dict; None once the session broke."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(EVENT_QUEUE_MAX)
        if self._broken is not None:
            queue.put_nowait(None)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    async def wait_event(self, queue: asyncio.Queue[Event | None],
                         match: Callable[[Event], bool], timeout_s: float) -> Event:
        """The first event from `queue` that `match`es; QmpError on timeout or a broken
        session."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    event = await queue.get()
                    if event is None:
                        raise QmpError(f"QMP session broke: {self._broken}")
                    if match(event):
                        return event
        except TimeoutError:
            raise QmpError(f"no matching QMP event within {timeout_s}s") from None

    async def _run(self) -> None:
        try:
            while True:
                message = await self._read()
                if "event" in message:
                    for queue in list(self._subscribers):
                        with contextlib.suppress(asyncio.QueueFull):  # a reader that left
                            queue.put_nowait(message)
                    continue
                ident = message.get("id")
                future = self._pending.get(ident) if isinstance(ident, int) else None
                if future is not None and not future.done():
                    future.set_result(message)
        except QmpError as exc:
            self._break(exc)
        except (OSError, ConnectionError) as exc:
            self._break(QmpError(f"QMP socket: {exc}"))

    def _break(self, exc: QmpError) -> None:
        self._broken = exc
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    async def _read(self) -> dict[str, Any]:
        try:
            line = await self._reader.readline()
        except ValueError as exc:  # line over LINE_MAX
            raise QmpError(f"QMP reply too long: {exc}") from exc
        if not line:
            raise QmpError("QMP socket closed")
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise QmpError(f"QMP sent invalid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise QmpError("QMP sent a non-object")
        return value

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump
        if self._broken is None:
            self._break(QmpError("QMP session closed"))
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()


def _result(command: str, reply: dict[str, Any]) -> Any:
    """A reply's `return` value, or QmpError with QEMU's error class and description."""
    if "error" in reply:
        error = reply["error"]
        raise QmpError(f"QMP {command}: {error.get('class')}: {error.get('desc')}")
    return reply.get("return")
