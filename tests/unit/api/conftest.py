"""A real HttpServer on a unix socket, run in a background event loop thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from steelcup.api.http import HttpServer, Router


class ServerThread:
    def __init__(self, router: Router, path: Path, options: dict[str, Any] | None = None) -> None:
        self.router = router
        self.path = path
        self.options = options or {}  # HttpServer keyword arguments (deadlines, connection cap)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                async with HttpServer(self.router, unix_path=self.path, **self.options):
                    self._ready.set()
                    await self._stop.wait()
            except BaseException as exc:  # surfaced to the test
                self._error = exc
                self._ready.set()

        asyncio.run(main())

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10)
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    started: list[ServerThread] = []

    def start(router: Router, **options: Any) -> Path:
        path = tmp_path / "run" / (f"api{len(started)}.sock" if started else "api.sock")
        thread = ServerThread(router, path, options)
        thread.start()
        started.append(thread)
        return path

    yield start
    for thread in started:
        thread.stop()
