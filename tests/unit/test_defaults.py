"""steelcup.defaults (what the CLI reads on every start) and the daemon's config agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from steelcup import config, defaults


def test_defaults_match_the_daemon_config() -> None:
    assert Path(defaults.DEFAULT_ROOT) == config.DEFAULT_ROOT == config.DaemonOptions().root
    assert Path(defaults.DEFAULT_SOCKET) == config.DEFAULT_SOCKET == config.DaemonOptions().socket


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEELCUP_HOST", raising=False)
    monkeypatch.delenv("STEELCUP_ROOT", raising=False)
    assert defaults.default_socket() == defaults.DEFAULT_SOCKET
    assert defaults.default_root() == defaults.DEFAULT_ROOT
    monkeypatch.setenv("STEELCUP_HOST", "unix:///tmp/sc/api.sock")
    monkeypatch.setenv("STEELCUP_ROOT", "/tmp/sc/root")
    assert defaults.default_socket() == "/tmp/sc/api.sock"
    assert defaults.default_root() == "/tmp/sc/root"
    monkeypatch.setenv("STEELCUP_HOST", "/tmp/sc/plain.sock")
    assert defaults.default_socket() == "/tmp/sc/plain.sock"
