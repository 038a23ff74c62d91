"""Where the daemon keeps its state and serves its API unless told otherwise.

Imported by the CLI on every start, so it imports nothing but `os` (paths are plain strings).
"""

from __future__ import annotations

import os

DEFAULT_ROOT = "/var/lib/steelcup"
DEFAULT_SOCKET = "/run/steelcup/steelcup.sock"


def default_socket() -> str:
    """The API socket the CLI uses: $STEELCUP_HOST (unix://PATH or PATH) or the default."""
    env = os.environ.get("STEELCUP_HOST", "")
    return env.removeprefix("unix://") if env else DEFAULT_SOCKET


def default_root() -> str:
    """The state root: $STEELCUP_ROOT or /var/lib/steelcup."""
    return os.environ.get("STEELCUP_ROOT", "") or DEFAULT_ROOT
