"""The CLI end to end against a fake route set served by our own HTTP server.

This tests the client layer above the API boundary (the routes are fakes, the HTTP is real).
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from steelcup import stdcopy
from steelcup.api.http import (
    EmptyResponse,
    HijackedStream,
    HijackResponse,
    HttpServer,
    JsonResponse,
    Request,
    Response,
    Router,
    StreamResponse,
)
from steelcup.cli.main import main
from steelcup.errors import Conflict, NotFound


class FakeDaemon:
    """Just enough of the Engine API for `run`, `ps`, `load`, ... with a scripted container."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.created: list[dict[str, Any]] = []
        self.exit = asyncio.Event()  # set in the server loop when "the process exits"
        self.start_error: str | None = None
        self.removed_after_start_error = False  # a --rm container, as dockerd does
        self.loaded = 0
        self.stdin = b""

    def router(self) -> Router:
        r = Router()

        def note(req: Request) -> None:
            query = "&".join(f"{k}={v[-1]}" for k, v in sorted(req.query.items()))
            self.calls.append(f"{req.method} {req.path}" + (f"?{query}" if query else ""))

        async def create(req: Request) -> Response:
            note(req)
            body = await req.json()
            if body["Image"] == "missing":
                raise NotFound("No such image: missing:latest")
            self.created.append(body)
            return JsonResponse({"Id": "c" * 64, "Warnings": []}, status=201)

        async def attach(req: Request) -> Response:
            note(req)

            async def run(stream: HijackedStream) -> None:
                # echo stdin (if any) after the process "starts"; exit when stdin closes
                await asyncio.wait_for(self._started.wait(), 10)
                await stream.write(stdcopy.frame(1, b"hello out\n"))
                await stream.write(stdcopy.frame(2, b"hello err\n"))
                if req.q_bool("stdin"):
                    while data := await stream.read():
                        self.stdin += data
                    await stream.write(stdcopy.frame(1, self.stdin.upper()))
                self.exit.set()

            return HijackResponse(run)

        async def wait(req: Request) -> Response:
            note(req)

            async def result() -> AsyncIterator[bytes]:
                await self.exit.wait()
                yield json.dumps({"StatusCode": 3, "Error": None}).encode() + b"\n"

            return StreamResponse(result())

        async def start(req: Request) -> Response:
            note(req)
            if self.start_error:
                raise Conflict(self.start_error)
            self._started.set()
            return EmptyResponse()

        async def inspect(req: Request) -> Response:
            note(req)
            if req.params["id"] == "nope" or (self.start_error
                                               and self.removed_after_start_error):
                raise NotFound(f"No such container: {req.params['id']}")
            code = 127 if self.start_error else 0
            return JsonResponse(
                {"Id": "c" * 64, "State": {"ExitCode": code}, "Config": {"Tty": False}}
            )

        async def ps(req: Request) -> Response:
            note(req)
            return JsonResponse(
                [
                    {
                        "Id": "c" * 64,
                        "Names": ["/web"],
                        "Image": "busybox",
                        "Command": "sleep 100",
                        "Created": 0,
                        "Status": "Up 2 seconds",
                    }
                ]
            )

        async def load(req: Request) -> Response:
            note(req)
            async for chunk in req.stream():
                self.loaded += len(chunk)

            async def out() -> AsyncIterator[bytes]:
                yield b'{"stream":"Loaded image: busybox:latest\\n"}\n'

            return StreamResponse(out())

        async def stop(req: Request) -> Response:
            note(req)
            if req.params["id"] == "nope":
                raise NotFound("No such container: nope")
            return EmptyResponse()

        r.add("POST", "/containers/create", create)
        r.add("POST", "/containers/{id}/attach", attach)
        r.add("POST", "/containers/{id}/wait", wait)
        r.add("POST", "/containers/{id}/start", start)
        r.add("POST", "/containers/{id}/stop", stop)
        r.add("GET", "/containers/{id}/json", inspect)
        r.add("GET", "/containers/json", ps)
        r.add("POST", "/images/load", load)
        return r

    def serve(self, path: Path) -> Iterator[None]:
        ready = threading.Event()
        loop_box: list[asyncio.AbstractEventLoop] = []
        stop_box: list[asyncio.Event] = []

        async def run() -> None:
            self._started = asyncio.Event()
            self.exit = asyncio.Event()
            loop_box.append(asyncio.get_running_loop())
            stop_box.append(asyncio.Event())
            async with HttpServer(self.router(), unix_path=path):
                ready.set()
                await stop_box[0].wait()

        thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
        thread.start()
        assert ready.wait(10)
        yield
        loop_box[0].call_soon_threadsafe(stop_box[0].set)
        thread.join(10)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[FakeDaemon, str]]:
    fake = FakeDaemon()
    path = tmp_path / "d.sock"
    gen = fake.serve(path)
    next(gen)
    yield fake, str(path)
    next(gen, None)


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
