"""The daemon's event bus: lifecycle events fanned out to `events` subscribers.

Events use docker's shape (Type, Action, Actor{ID, Attributes}, time, timeNano) so the API can
stream them unchanged. A slow subscriber loses events rather than stalling the runtime. Each
event is its tenant's ("" = the operator's): a tenant's subscription sees only its own; the
operator's (tenant None) sees all.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

HISTORY = 1024
QUEUE = 1024


class EventBus:
    """Publish from the runtime; subscribe from the API."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        # each subscriber's queue -> the tenant it sees (None: every tenant's)
        self._subs: dict[asyncio.Queue[dict[str, Any]], str | None] = {}
        self._history: deque[tuple[str, dict[str, Any]]] = deque(maxlen=HISTORY)
        # Publishers may run in worker threads (image loads, pulls); queues live on this loop.
        self._loop = loop
        self._lock = threading.Lock()
        # Called with every event as it is published (the usage meter), unlike subscribers,
        # which may miss events: a listener must be quick and must not raise.
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    def listen(self, callback: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.append(callback)

    def publish(self, kind: str, action: str, actor_id: str, attributes: dict[str, str],
                tenant: str = "") -> None:
        now_ns = time.time_ns()
        event: dict[str, Any] = {
            "Type": kind,
            "Action": action,
            "Actor": {"ID": actor_id, "Attributes": dict(attributes)},
            "scope": "local",
            "time": now_ns // 1_000_000_000,
            "timeNano": now_ns,
        }
        if kind == "container":
            event.update(status=action, id=actor_id, **{"from": attributes.get("image", "")})
        with self._lock:
            self._history.append((tenant, event))
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not break the runtime's transition
                log.exception("event listener failed on %s %s", kind, action)
        loop = self._loop
        if loop is not None and not _on_loop(loop):
            loop.call_soon_threadsafe(self._deliver, event, tenant)
        else:
            self._deliver(event, tenant)

    def _deliver(self, event: dict[str, Any], tenant: str) -> None:
        for queue, sees in list(self._subs.items()):
            if sees is not None and sees != tenant:
                continue
            if queue.full():
                continue  # a stalled reader misses events; it never blocks the runtime
            queue.put_nowait(event)

    def subscribe(self, tenant: str | None = None) -> asyncio.Queue[dict[str, Any]]:
        """A queue of the events published from now on: `tenant`'s, or all (None)."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE)
        self._subs[queue] = tenant
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subs.pop(queue, None)

    def history(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """The last events kept (oldest first): `tenant`'s, or all (None)."""
        with self._lock:
            return [e for t, e in self._history if tenant is None or t == tenant]

    @property
    def listeners(self) -> int:
        """How many `events` streams are open now."""
        return len(self._subs)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
