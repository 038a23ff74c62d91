"""The CLI end to end against a fake route set served by our own HTTP server.

This tests the client layer above the API boundary (the routes are fakes, the HTTP is real).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from steelcup.cli.main import main
from tests.unit.cli.fake_daemon import FakeDaemon


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[FakeDaemon, str]]:
    fake = FakeDaemon()
    path = tmp_path / "d.sock"
    with fake.serve(path):
        yield fake, str(path)


def test_run_attaches_waits_starts_and_returns_exit_code(
    daemon: tuple[FakeDaemon, str], capfd: pytest.CaptureFixture[str]
) -> None:
    fake, sock = daemon
    code = main(["-H", f"unix://{sock}", "run", "--rm", "-e", "A=1", "busybox", "echo", "hi"])
    out, err = capfd.readouterr()
    assert code == 3
    assert out == "hello out\n"
    assert err == "hello err\n"
    assert fake.calls == [
        "POST /containers/create",
        f"POST /containers/{'c' * 64}/attach?stderr=1&stdin=0&stdout=1&stream=1",
        f"POST /containers/{'c' * 64}/wait?condition=removed",
        f"POST /containers/{'c' * 64}/start",
    ]
    assert fake.created[0]["Cmd"] == ["echo", "hi"]
    assert fake.created[0]["HostConfig"]["AutoRemove"] is True


def test_run_interactive_pumps_stdin_and_half_closes(
    daemon: tuple[FakeDaemon, str], capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake, sock = daemon
    data = tmp_path / "stdin.txt"
    data.write_bytes(b"piped input\n")
    import os

    saved = os.dup(0)
    fd = os.open(data, os.O_RDONLY)
    os.dup2(fd, 0)
    try:
        code = main(["-H", sock, "run", "-i", "busybox", "cat"])
    finally:
        os.dup2(saved, 0)
        os.close(fd)
        os.close(saved)
    out, _ = capfd.readouterr()
    assert code == 3
    assert out == "hello out\nPIPED INPUT\n"
    assert fake.stdin == b"piped input\n"


def test_run_missing_image_exits_125(
    daemon: tuple[FakeDaemon, str], capfd: pytest.CaptureFixture[str]
) -> None:
    _, sock = daemon
    assert main(["-H", sock, "run", "missing"]) == 125
    err = capfd.readouterr().err
    assert "Unable to find image 'missing' locally" in err
    assert "steelcup: Error response from daemon: No such image: missing:latest" in err


def test_run_start_failure_uses_126_127(
    daemon: tuple[FakeDaemon, str], capfd: pytest.CaptureFixture[str]
) -> None:
    fake, sock = daemon
    fake.start_error = 'exec: "nosuch": executable file not found in $PATH'
    assert main(["-H", sock, "run", "busybox", "nosuch"]) == 127
    assert "executable file not found" in capfd.readouterr().err


@pytest.mark.parametrize(("error", "code"), [
    ('exec: "nosuch": executable file not found in $PATH', 127),
    ('exec: "/etc/passwd": permission denied', 126),
    ("the VM did not boot", 125),
])
def test_run_rm_start_failure_exits_with_dockers_status(
    daemon: tuple[FakeDaemon, str], capfd: pytest.CaptureFixture[str], error: str, code: int
) -> None:
    """The daemon removed the --rm container before answering: the status comes from the
    error's words, as the docker CLI reads it."""
    fake, sock = daemon
    fake.start_error = error
    fake.removed_after_start_error = True
    assert main(["-H", sock, "run", "--rm", "busybox", "x"]) == code
    assert error in capfd.readouterr().err


def test_run_detached_prints_id(
    daemon: tuple[FakeDaemon, str], capfd: pytest.CaptureFixture[str]
) -> None:
    fake, sock = daemon
    assert main(["-H", sock, "run", "-d", "busybox", "sleep", "9"]) == 0
    assert capfd.readouterr().out == "c" * 64 + "\n"
    assert fake.calls[-1].endswith("/start")


def test_ps_stop_and_errors(
    daemon: tuple[FakeDaemon, str], capfd: pytest.CaptureFixture[str]
) -> None:
    _, sock = daemon
    assert main(["-H", sock, "ps", "-q"]) == 0
    assert capfd.readouterr().out == "c" * 12 + "\n"
    assert main(["-H", sock, "ps"]) == 0
    out = capfd.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["CONTAINER", "ID", "IMAGE"]
    assert '"sleep 100"' in out and "web" in out
    assert main(["-H", sock, "stop", "web", "nope"]) == 1
    out, err = capfd.readouterr()
    assert out == "web\n"
    assert err == "Error response from daemon: No such container: nope\n"
    assert main(["-H", sock, "inspect", "-f", "{{.State.ExitCode}}", "web"]) == 0
    assert capfd.readouterr().out == "0\n"


def test_load_uploads_and_prints_messages(
    daemon: tuple[FakeDaemon, str],
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    fake, sock = daemon
    tar = tmp_path / "img.tar"
    tar.write_bytes(b"x" * (3 * 1024 * 1024 + 5))
    assert main(["-H", sock, "load", "-i", str(tar)]) == 0
    assert capfd.readouterr().out == "Loaded image: busybox:latest\n"
    assert fake.loaded == 3 * 1024 * 1024 + 5


def test_no_daemon_and_no_autostart(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEELCUP_NO_AUTOSTART", "1")
    assert main(["-H", str(tmp_path / "none.sock"), "ps"]) == 125
    err = capfd.readouterr().err
    assert "cannot connect to the steelcup daemon" in err and "none.sock" in err


def test_progress_bar_renders() -> None:
    from steelcup.cli.commands.images import Progress

    out = io.StringIO()
    bar = Progress(2_000_000, out)
    bar.update(1_000_000, force=True)
    bar.finish(2_000_000)
    text = out.getvalue()
    assert "1MB/2MB" in text and text.endswith("2MB/2MB\n")
