"""A scripted Engine API (the routes are fakes, the HTTP server is the daemon's own) for
tests of the CLI above the API boundary: `run`, `ps`, `load`, ..."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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

    @contextmanager
    def serve(self, path: Path) -> Iterator[None]:
        """Answer on the unix socket `path` (from a thread of its own) until the block ends."""
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
        try:
            yield
        finally:
            loop_box[0].call_soon_threadsafe(stop_box[0].set)
            thread.join(10)
