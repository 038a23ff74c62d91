"""Fan-out of a running process's output to attached clients, with back-pressure.

Each attached client gets a bounded queue; the pump awaits a full queue, so a slow client slows
the process (through the guest's credit window) instead of growing host memory.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

QUEUE_CHUNKS = 64


@dataclass(eq=False)
class Subscriber:
    """One attached reader. `None` in the queue means the stream ended."""

    stdout: bool = True
    stderr: bool = True
    queue: asyncio.Queue[tuple[str, bytes] | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_CHUNKS)
    )
    closed: bool = False

    def wants(self, stream: str) -> bool:
        return self.stdout if stream == "stdout" else self.stderr


class Fanout:
    """The set of subscribers of one process run."""

    def __init__(self) -> None:
        self._subs: set[Subscriber] = set()
        self.ended = False

    def subscribe(self, stdout: bool, stderr: bool) -> Subscriber:
        """A subscriber of this run; of a run that has ended (its container's state may not
        say so yet), one whose stream is over at once, not one waiting forever."""
        sub = Subscriber(stdout=stdout, stderr=stderr)
        if self.ended:
            sub.queue.put_nowait(None)
        else:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.closed = True
        self._subs.discard(sub)
        # Unblock a pump waiting on this queue.
        while not sub.queue.empty():
            sub.queue.get_nowait()

    async def publish(self, stream: str, data: bytes) -> None:
        for sub in list(self._subs):
            if sub.wants(stream) and not sub.closed:
                await sub.queue.put((stream, data))

    async def end(self) -> None:
        """Tell every subscriber the stream is over and forget them."""
        self.ended = True
        for sub in list(self._subs):
            if not sub.closed:
                await sub.queue.put(None)
        self._subs.clear()
