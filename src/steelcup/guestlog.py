"""Daemon log lines that a guest can trigger (a rejected frame, a late reply), rate-limited per
VM and cut to a sane length: a guest must not fill the host's disk through the daemon's log.

A token bucket per VM: `burst` lines at once, then one per `interval_s`; lines dropped meanwhile
are counted and the count is said with the next line let through (or at `close`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

MAX_MESSAGE_CHARS = 400
DEFAULT_BURST = 10
DEFAULT_INTERVAL_S = 10.0


def clip(text: str, max_chars: int = MAX_MESSAGE_CHARS) -> str:
    """`text` on one printable line (control characters escaped), at most `max_chars` of it."""
    cut = len(text) - max_chars
    shown = text[:max_chars] if cut > 0 else text
    if not shown.isprintable():
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)
    return f"{shown}... ({cut} more characters)" if cut > 0 else shown


class GuestLog:
    """Rate-limited, clipped logging for one VM's guest-triggered events."""

    def __init__(
        self,
        logger: logging.Logger,
        label: str,
        *,
        burst: int = DEFAULT_BURST,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.label = label
        self.burst = burst
        self.interval_s = interval_s
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self.suppressed = 0

    def log(self, level: int, message: str, *args: object) -> None:
        """Like `logger.log(level, message, *args)`, if the bucket allows it."""
        if not self.logger.isEnabledFor(level):
            return
        now = self._clock()
        self._tokens = min(float(self.burst),
                           self._tokens + (now - self._last) / self.interval_s)
        self._last = now
        if self._tokens < 1.0:
            self.suppressed += 1
            return
        self._tokens -= 1.0
        text = clip(message % args if args else message)
        if self.suppressed:
            text += f" ({self.suppressed} similar messages from this VM suppressed)"
            self.suppressed = 0
        self.logger.log(level, "vm %s: %s", self.label, text)

    def close(self) -> None:
        """Say how many lines were suppressed since the last one let through, if any."""
        if self.suppressed:
            self.logger.warning("vm %s: %d guest-triggered messages suppressed", self.label,
                                self.suppressed)
            self.suppressed = 0
