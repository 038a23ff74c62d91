"""Large request and response bodies without holding them in memory.

`spool_body` copies an upload into an unlinked temp file; `QueueWriter` lets blocking code in a
worker thread (tar writers, image save) feed a streamed response with back-pressure.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
import threading
from pathlib import Path
from typing import Any, BinaryIO

from steelcup.api.http import Request
from steelcup.errors import InvalidArgument

UPLOAD_MAX_BYTES = 64 << 30


async def spool_body(req: Request, spool_dir: Path, limit: int = UPLOAD_MAX_BYTES) -> BinaryIO:
    """The request body in an unlinked temp file under `spool_dir`, rewound."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    spool: BinaryIO = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115 - returned open
    size = 0
    try:
        async for chunk in req.stream():
            size += len(chunk)
            if size > limit:
                raise InvalidArgument(f"upload larger than {limit} bytes")
            await asyncio.to_thread(spool.write, chunk)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


class QueueWriter(io.RawIOBase):
    """A blocking file (worker-thread side) that feeds an asyncio queue with back-pressure;
    raises BrokenPipeError once `cancel` is set (the client went away)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[bytes | None],
        cancel: threading.Event,
    ) -> None:
        self._loop = loop
        self._queue = queue
        self._cancel = cancel

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self._cancel.is_set():
            raise BrokenPipeError("the client went away")
        if data:
            fut = asyncio.run_coroutine_threadsafe(self._queue.put(bytes(data)), self._loop)
            while True:
                try:
                    fut.result(timeout=0.5)
                    break
                except TimeoutError:
                    if self._cancel.is_set():
                        fut.cancel()
                        raise BrokenPipeError("the client went away") from None
        return len(data)

    def end(self) -> None:
        """Tell the reading side the stream is complete."""
        asyncio.run_coroutine_threadsafe(self._queue.put(None), self._loop)
