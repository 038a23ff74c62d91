"""The daemon's side of the port keeper (net/portkeeper.py): find the running keeper or start
one, and ask it to open, close and list the loopback proxies of published ports.

One keeper serves a state root: its control socket is `ROOT/ports/keeper.sock`. A keeper
started by an earlier daemon is taken over as it is (its open ports keep answering throughout a
restart); one that does not answer, or speaks another version, is told to exit and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

from steelcup.errors import Conflict
from steelcup.net.portkeeper import LINE_MAX, READY, VERSION, Opened

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
REPLY_TIMEOUT_S = 10.0
EXIT_TIMEOUT_S = 5.0


class Ports(Protocol):
    """Who serves the loopback side of published ports: the keeper process (`PortKeeper`) or,
    in tests, the calling process (`portkeeper.InProcessPorts`)."""

    async def open(self, key: str, proto: str, port: int, target: tuple[str, int]) -> None: ...

    async def close(self, key: str) -> None: ...

    async def release(self, key: str) -> None: ...

    async def listing(self) -> list[Opened]: ...

    async def stop(self) -> None: ...

    async def detach(self) -> None: ...


class KeeperError(RuntimeError):
    """The keeper did not answer (it died, or the socket is not a keeper's)."""


class PortKeeper:
    """A connection to the keeper of `directory` (started on first need)."""

    def __init__(self, directory: Path, netns: str | None) -> None:
        self.directory = directory
        self.netns = netns
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None  # the keeper this daemon started
        self._lock = asyncio.Lock()

    @property
    def control(self) -> Path:
        return self.directory / "keeper.sock"

    @property
    def log_path(self) -> Path:
        return self.directory / "keeper.log"

    # -- connection -------------------------------------------------------------------------

    async def attach(self) -> bool:
        """Connect to a keeper an earlier daemon left running; False when there is none."""
        async with self._lock:
            return await self._attach_locked()

    async def _attach_locked(self) -> bool:
        if self._conn is not None:
            return True
        if not self.control.exists():
            return False
        try:
            self._conn = await asyncio.open_unix_connection(str(self.control), limit=LINE_MAX)
            hello = await self._ask_locked({"op": "hello"})
        except (OSError, KeeperError) as exc:
            log.info("port keeper at %s does not answer (%s): starting another", self.control,
                     exc)
            self._drop()
            return False
        if hello.get("version") != VERSION or hello.get("netns") != self.netns:
            log.info("port keeper %s speaks version %s in netns %s: replacing it",
                     hello.get("pid"), hello.get("version"), hello.get("netns"))
            await self._stop_locked()
            return False
        self._pid = int(hello["pid"])
        log.info("port keeper %d taken over (%s)", self._pid, self.control)
        return True

    async def _ensure_locked(self) -> None:
        if await self._attach_locked():
            return
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "steelcup.net.portkeeper", "--control", str(self.control)]
        if self.netns:
            argv += ["--netns", self.netns]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_package_root(),
                                                          env.get("PYTHONPATH")]))
        with open(self.log_path, "ab") as log_file:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_file,
                start_new_session=True,  # not the daemon's terminal's, nor its death's
                env=env)
        assert proc.stdout is not None
        try:
            ready = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline),
                                           START_TIMEOUT_S)
        except TimeoutError:
            ready = b""
        proc.stdout.close()
        if ready != READY:
            proc.kill()
            await asyncio.to_thread(proc.wait)
            raise KeeperError(f"the port keeper did not start (see {self.log_path})")
        # It outlives this daemon if it must: `stop` reaps it, else whoever inherits it does.
        self._proc, self._pid = proc, proc.pid
        self._conn = await asyncio.open_unix_connection(str(self.control), limit=LINE_MAX)

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
        self._conn = None
        self._pid = None

    async def _ask_locked(self, request: dict[str, Any]) -> dict[str, Any]:
        if self._conn is None:
            raise KeeperError("not connected")
        reader, writer = self._conn
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                line = await reader.readline()
        except (OSError, TimeoutError, ValueError) as exc:
            self._drop()
            raise KeeperError(f"port keeper: {exc or type(exc).__name__}") from exc
        if not line:
            self._drop()
            raise KeeperError("port keeper closed the connection")
        reply = json.loads(line)
        if not isinstance(reply, dict):
            raise KeeperError(f"port keeper answered {reply!r}")
        return reply

    async def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """Asked of the keeper, started if need be; a keeper that died meanwhile is
        replaced once (its ports are then the caller's to open again)."""
        async with self._lock:
            await self._ensure_locked()
            try:
                return await self._ask_locked(request)
            except KeeperError:
                await self._ensure_locked()
                return await self._ask_locked(request)

    # -- orders -----------------------------------------------------------------------------

    async def open(self, key: str, proto: str, port: int, target: tuple[str, int]) -> None:
        """127.0.0.1:port/proto relayed to target; Conflict when the port cannot be bound."""
        reply = await self._ask({"op": "open", "key": key, "proto": proto, "port": port,
                                 "target": list(target)})
        if "error" in reply:
            raise Conflict(f"Bind for 127.0.0.1:{port} failed: {reply['error']}")

    async def close(self, key: str) -> None:
        async with self._lock:
            if self._conn is None:
                return  # no keeper, nothing open
            with contextlib.suppress(KeeperError):
                await self._ask_locked({"op": "close", "key": key})

    async def release(self, key: str) -> None:
        """The key's port takes no new connections; those relayed go on until they end or
        `close` (a keeper of before this order closes it)."""
        async with self._lock:
            if self._conn is None:
                return
            with contextlib.suppress(KeeperError):
                reply = await self._ask_locked({"op": "release", "key": key})
                if "error" in reply:
                    await self._ask_locked({"op": "close", "key": key})

    async def listing(self) -> list[Opened]:
        """What the keeper has open (nothing when no keeper runs)."""
        async with self._lock:
            if not await self._attach_locked():
                return []
            reply = await self._ask_locked({"op": "list"})
        return [Opened(str(p["key"]), str(p["proto"]), int(p["port"]),
                       (str(p["target"][0]), int(p["target"][1])))
                for p in reply.get("ports", [])]

    async def stop(self) -> None:
        """Tell the keeper to exit (every proxy closes) and wait until it has."""
        async with self._lock:
            if self._conn is None and not await self._attach_locked():
                return
            await self._stop_locked()

    async def _stop_locked(self) -> None:
        pid = self._pid
        with contextlib.suppress(KeeperError):
            await self._ask_locked({"op": "exit"})
        self._drop()
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(proc.wait, EXIT_TIMEOUT_S)
        elif pid is not None:
            await _gone(pid)

    async def detach(self) -> None:
        """Leave the keeper running (live restore): only this daemon's connection goes."""
        async with self._lock:
            self._drop()
            self._proc = None


async def _gone(pid: int) -> None:
    """Until process `pid` (not our child) has exited, at most EXIT_TIMEOUT_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EXIT_TIMEOUT_S
    while loop.time() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return
        await asyncio.sleep(0.05)


def _package_root() -> str:
    """Where `steelcup` is imported from, for the keeper's `python -m`."""
    import steelcup

    return str(Path(steelcup.__file__).resolve().parent.parent)
