"""What every command gets: where the daemon is, and a client that auto-starts one if needed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from steelcup.cli.client import ApiClient
from steelcup.errors import DaemonUnavailable, SteelcupError


class Context:
    def __init__(self, socket: Path, root: Path, *, autostart: bool = True) -> None:
        self.socket = socket
        self.root = root
        self.autostart = autostart
        self._client: ApiClient | None = None

    def client(self) -> ApiClient:
        if self._client is None:
            self._client = ApiClient(self.socket, on_unreachable=self._start_daemon)
        return self._client

    def _start_daemon(self) -> bool:
        if not self.autostart or os.environ.get("STEELCUP_NO_AUTOSTART") == "1":
            return False
        from steelcup.cli.autostart import start_daemon

        start_daemon(self.socket, self.root)
        return True


def daemon_error(exc: SteelcupError) -> bool:
    """True if `exc` is an error response from the daemon (not a client-side failure)."""
    return "http_status" in vars(exc)


def report(exc: SteelcupError, prefix: str = "") -> None:
    """Print an error the docker way: 'Error response from daemon: ...' for daemon errors.

    DaemonUnavailable is not a per-item error: it is re-raised so the command ends with 125.
    """
    if isinstance(exc, DaemonUnavailable) and not daemon_error(exc):
        raise exc
    text = f"Error response from daemon: {exc}" if daemon_error(exc) else str(exc)
    print(f"{prefix}{text}", file=sys.stderr)
