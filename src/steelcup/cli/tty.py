"""Terminal handling for `run -t` / `exec -t`: raw mode (always restored) and resize forwarding."""

from __future__ import annotations

import os
import signal
import sys
import termios
import threading
import tty
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any


def terminal_size(fd: int = 1) -> tuple[int, int] | None:
    """(rows, cols) of the terminal on `fd`, or None if it is not a terminal."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    return size.lines, size.columns


class RawTerminal:
    """Puts `fd` in raw mode if it is a terminal; restores the old mode on exit, always."""

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self._saved: list[Any] | None = None

    def __enter__(self) -> RawTerminal:
        if os.isatty(self.fd):
            self._saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd, termios.TCSANOW)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None


class ResizeForwarder:
    """Sends the terminal size now and on every SIGWINCH via `send(rows, cols)` (in a thread)."""

    def __init__(self, send: Callable[[int, int], None], fd: int = 1) -> None:
        self._send = send
        self._fd = fd
        self._previous: object = None

    def _resize(self) -> None:
        size = terminal_size(self._fd)
        if size is None:
            return

        def run() -> None:
            try:
                self._send(*size)
            except Exception as exc:  # a failed resize must not kill the session
                print(f"steelcup: resize failed: {exc}", file=sys.stderr)

        threading.Thread(target=run, daemon=True).start()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._resize()

    def __enter__(self) -> ResizeForwarder:
        self._resize()
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGWINCH, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGWINCH, self._previous)  # type: ignore[arg-type]
            self._previous = None
