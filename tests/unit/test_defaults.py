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


def test_layer_limits_flow_from_daemon_flags_to_the_image_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from steelcup import daemon
    from steelcup.cli import main as cli_main
    from steelcup.image.layers import GIB, LayerLimits

    assert daemon.layer_limits(config.DaemonOptions()) == LayerLimits()
    seen: list[config.DaemonOptions] = []
    monkeypatch.setattr(daemon, "run", lambda options: seen.append(options) or 0)
    cli_main.main(["daemon", "--layer-max-size", "2", "--layer-max-ratio", "0"])
    assert daemon.layer_limits(seen[0]) == LayerLimits(max_bytes=2 * GIB, max_ratio=0)


def test_storage_size_flows_from_the_daemon_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    from steelcup import daemon
    from steelcup.cli import main as cli_main
    from steelcup.cli.createspec import parse_memory
    from steelcup.runtime.containers import Defaults

    default = config.DaemonOptions().storage_default_bytes
    assert default == parse_memory(defaults.STORAGE_SIZE_DEFAULT) == Defaults().storage_bytes
    seen: list[config.DaemonOptions] = []
    monkeypatch.setattr(daemon, "run", lambda options: seen.append(options) or 0)
    cli_main.main(["daemon", "--storage-size-default", "2g", "--log-max-size", "1m",
                   "--log-max-file", "2", "--volume-size-default", "64m"])
    assert seen[0].storage_default_bytes == 2 << 30
    assert seen[0].volume_default_bytes == 64 << 20
    assert config.DaemonOptions().volume_default_bytes == parse_memory(
        defaults.VOLUME_SIZE_DEFAULT)
    assert (seen[0].log_max_bytes, seen[0].log_max_files) == (1 << 20, 2)
    assert (config.DaemonOptions().log_max_bytes, config.DaemonOptions().log_max_files) == (
        parse_memory(defaults.LOG_MAX_SIZE), defaults.LOG_MAX_FILE) == (
        Defaults().log_max_bytes, Defaults().log_max_files)


def test_live_restore_is_on_unless_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from steelcup import daemon
    from steelcup.cli import main as cli_main

    seen: list[config.DaemonOptions] = []
    monkeypatch.setattr(daemon, "run", lambda options: seen.append(options) or 0)
    cli_main.main(["daemon"])
    cli_main.main(["daemon", "--no-live-restore"])
    cli_main.main(["daemon", "--live-restore"])
    assert [o.live_restore for o in seen] == [True, False, True]
    assert config.DaemonOptions().live_restore
