"""Datagrams held while their destination is not up yet (a suspended container's UDP wake
listener, net/proxy.py's UdpProxy with `before_relay`; a sleeping service's, net/udpwake.py):
kept in arrival order within a count and a byte limit; what does not fit is dropped and
counted. Each is held with its key: the client's address, or whatever the listener needs to
relay it (the service's: client and original destination). Pure: no sockets, no clock."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

Address = tuple[str, int]
K = TypeVar("K")

# A resume takes about a second; a DNS or syslog client sends a few datagrams in that time.
HOLD_DATAGRAMS = 256
HOLD_BYTES = 1024 * 1024


@dataclass(frozen=True)
class HoldLimits:
    """How much is held at most: datagrams and their payload bytes."""

    max_datagrams: int = HOLD_DATAGRAMS
    max_bytes: int = HOLD_BYTES

    def __post_init__(self) -> None:
        if self.max_datagrams < 1 or self.max_bytes < 1:
            raise ValueError(f"hold limits must be positive, not {self.max_datagrams} "
                             f"datagrams and {self.max_bytes} bytes")


DEFAULT_LIMITS = HoldLimits()


class HeldDatagrams(Generic[K]):
    """A bounded queue of (key, payload), oldest first (the key: who sent it, and where).
    The first datagram held is the one that starts the wake (`push` says so); the excess is
    dropped, not queued."""

    def __init__(self, limits: HoldLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._queue: deque[tuple[K, bytes]] = deque()
        self.held_bytes = 0
        self.dropped = 0
        self.dropped_bytes = 0
        self.seen = 0  # every datagram pushed, held or dropped

    def push(self, addr: K, data: bytes) -> bool:
        """Hold `data` from `addr` if it fits (else drop and count it); True only for the
        first datagram ever pushed, whatever became of it."""
        first = self.seen == 0
        self.seen += 1
        if (len(self._queue) >= self.limits.max_datagrams
                or self.held_bytes + len(data) > self.limits.max_bytes):
            self.dropped += 1
            self.dropped_bytes += len(data)
        else:
            self._queue.append((addr, data))
            self.held_bytes += len(data)
        return first

    def __len__(self) -> int:
        return len(self._queue)

    def drain(self) -> Iterator[tuple[K, bytes]]:
        """The held datagrams in arrival order, each removed as it is taken."""
        while self._queue:
            addr, data = self._queue.popleft()
            self.held_bytes -= len(data)
            yield addr, data

    def discard(self) -> int:
        """Drop everything held (the wake failed); how many datagrams that was."""
        count = len(self._queue)
        self.dropped += count
        self.dropped_bytes += self.held_bytes
        self._queue.clear()
        self.held_bytes = 0
        return count
