"""The CLI starts a daemon only for the default socket: for any other address that does not
answer it says so instead of starting a daemon on the default root (another daemon's state)."""

from __future__ import annotations

from pathlib import Path

import pytest

from steelcup import defaults
from steelcup.cli import autostart
from steelcup.cli.main import main


@pytest.fixture
def starts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[str, str]]:
    """Records daemon starts instead of spawning one; the default socket and root are moved
    under tmp_path so nothing real is touched."""
    calls: list[tuple[str, str]] = []

    def fake_start(socket_path: str, root_dir: str, **_kw: object) -> int:
        calls.append((socket_path, root_dir))
        return 4242

    monkeypatch.setattr(autostart, "start_daemon", fake_start)
    monkeypatch.setattr(defaults, "DEFAULT_SOCKET", str(tmp_path / "default" / "steelcup.sock"))
    monkeypatch.setattr(defaults, "DEFAULT_ROOT", str(tmp_path / "default-root"))
    for name in ("STEELCUP_NO_AUTOSTART", "STEELCUP_HOST", "STEELCUP_ROOT"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_other_host_gets_an_error_not_a_daemon(
    starts: list[tuple[str, str]], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.sock"
    assert main(["-H", f"unix://{other}", "ps"]) == 125
    err = capfd.readouterr().err
    assert f"no daemon answers at unix://{other}" in err
    assert "steelcup daemon --help" in err
    assert starts == []
    assert not (tmp_path / "default-root").exists()


def test_steelcup_host_is_not_the_default_either(
    starts: list[tuple[str, str]], tmp_path: Path, capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STEELCUP_HOST", str(tmp_path / "env.sock"))
    assert main(["ps"]) == 125
    assert "no daemon answers at unix://" in capfd.readouterr().err
    assert starts == []


def test_default_socket_still_autostarts(
    starts: list[tuple[str, str]], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(["ps"]) == 125  # the fake start leaves nobody listening: the retry fails
    assert starts == [(defaults.DEFAULT_SOCKET, defaults.DEFAULT_ROOT)]
    assert "cannot connect to the steelcup daemon" in capfd.readouterr().err


def test_another_host_with_a_named_root_autostarts_there(
    starts: list[tuple[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`make demo` and private daemons: the user named both the address and the root."""
    sock, root = tmp_path / "mine.sock", tmp_path / "mine-root"
    monkeypatch.setenv("STEELCUP_HOST", f"unix://{sock}")
    monkeypatch.setenv("STEELCUP_ROOT", str(root))
    assert main(["ps"]) == 125  # the fake start leaves nobody listening
    assert starts == [(str(sock), str(root))]
