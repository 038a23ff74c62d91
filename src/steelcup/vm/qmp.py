"""A small asyncio QMP client (QEMU Machine Protocol): JSON lines over the VM's unix socket.

`QmpClient.connect()` reads the greeting and negotiates `qmp_capabilities`; `execute()` runs one
command and returns its `return` value (asynchronous events in between are skipped). Every wait
has a deadline. (Reconstructed by the API engineer after an accidental overwrite: same API as
machine.py uses — connect/execute/close/QmpError.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

from steelcup.errors import SteelcupError

QMP_TIMEOUT_S = 10.0
LINE_MAX = 1 << 20


class QmpError(SteelcupError):
    """QEMU refused a command, or its monitor socket broke or did not answer in time."""


class QmpClient:
    """One QMP connection; commands are serialised (QMP answers in order)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()
        self._closed = False

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
                await asyncio.sleep(0.02)  # the socket appears when QEMU has started
            except OSError as exc:
                raise QmpError(f"QMP socket {socket_path}: {exc}") from exc
        client = cls(reader, writer)
        try:
            async with asyncio.timeout(max(0.1, end - loop.time())):
                greeting = await client._read()
                if "QMP" not in greeting:
                    raise QmpError(f"unexpected QMP greeting: {greeting}")
            await client.execute("qmp_capabilities", timeout_s=max(0.1, end - loop.time()))
        except TimeoutError:
            await client.close()
            raise QmpError(f"QMP socket {socket_path}: no greeting in {deadline_s}s") from None
        except BaseException:
            await client.close()
            raise
        return client

    async def execute(
        self, command: str, arguments: dict[str, Any] | None = None,
        *, timeout_s: float = QMP_TIMEOUT_S,
    ) -> Any:
        """Run `command`; its `return` value, or QmpError with QEMU's error class/desc."""
        if self._closed:
            raise QmpError("QMP connection is closed")
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        async with self._lock:
            try:
                async with asyncio.timeout(timeout_s):
                    self._writer.write(json.dumps(message).encode() + b"\n")
                    await self._writer.drain()
                    while True:
                        reply = await self._read()
                        if "event" in reply:
                            continue
                        if "error" in reply:
                            error = reply["error"]
                            raise QmpError(
                                f"QMP {command}: {error.get('class')}: {error.get('desc')}"
                            )
                        if "return" in reply:
                            return reply["return"]
            except TimeoutError:
                raise QmpError(f"QMP {command}: no answer within {timeout_s}s") from None
            except (OSError, ConnectionError) as exc:
                raise QmpError(f"QMP {command}: {exc}") from exc

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
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()


async def execute(
    socket_path: Path, command: str, arguments: dict[str, Any] | None = None,
    *, timeout_s: float = QMP_TIMEOUT_S,
) -> Any:
    """One-shot: connect, negotiate, run `command`, close; returns its `return` value."""
    client = await QmpClient.connect(socket_path, timeout_s)
    try:
        return await client.execute(command, arguments, timeout_s=timeout_s)
    finally:
        await client.close()
