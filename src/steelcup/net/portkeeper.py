"""The port keeper: the process that holds the loopback proxies of published ports, so that
they outlive the daemon (live restore; docs/live-restore.md, "The gap").

A port published on the host's 127.0.0.1 is held by a userspace proxy (net/proxy.py), as
docker's docker-proxy does; it serves what the loopback's DNAT (net/nft.py) does not take (a
VIP's ports). A proxy inside the daemon stops answering the moment the daemon stops; this
process runs the proxies instead. It
is started by the daemon (`python -m steelcup.net.portkeeper --control SOCK [--netns NAME]`)
in its own session, takes orders over a unix socket, and is not tied to the daemon's life: the
next daemon connects to the same socket, lists what is open and closes what it does not keep.
A daemon that keeps nothing running tells it to exit.

The control protocol: one JSON object per line each way, an answer per request, in order.
    {"op": "hello"}                             -> {"version": 1, "pid": P, "netns": N}
    {"op": "open", "key": K, "proto": "tcp"|"udp", "port": HP, "target": [IP, CP]}
                                                -> {} | {"error": TEXT}
      (opening a key that is open with the same port and target is a no-op)
    {"op": "close", "key": K}                   -> {}
    {"op": "release", "key": K}                 -> {} | {"error": TEXT}
      (a tcp proxy stops listening; the connections it relays go on until they end or the
      key is closed; a udp proxy closes)
    {"op": "list"}                              -> {"ports": [{"key", "proto", "port", "target"}]}
    {"op": "exit"}                              -> {}, then every proxy closes and it exits
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steelcup.errors import Conflict
from steelcup.net.proxy import TcpProxy, UdpProxy

log = logging.getLogger("steelcup.portkeeper")

VERSION = 1
LINE_MAX = 64 * 1024
READY = b"ready\n"


@dataclass(frozen=True)
class Opened:
    """One port the keeper serves: 127.0.0.1:port/proto relayed to target."""

    key: str
    proto: str
    port: int
    target: tuple[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "proto": self.proto, "port": self.port,
                "target": list(self.target)}


class Keeper:
    """The proxies by key, and the answer to each control request; its proxies' sockets are
    made in /run/netns/NETNS when given (net/netns.py). Also the in-process stand-in for the
    keeper process (`InProcessPorts`, tests)."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self.opened: dict[str, tuple[Opened, TcpProxy | UdpProxy]] = {}
        self.released: dict[str, TcpProxy] = {}  # listening no more, relaying on
        self.done = asyncio.Event()

    async def answer(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            return {"error": "a request is a JSON object"}
        op = request.get("op")
        try:
            if op == "hello":
                return {"version": VERSION, "pid": os.getpid(), "netns": self.netns}
            if op == "open":
                return await self._open(_opened(request))
            if op == "close":
                await self._close(str(request.get("key", "")))
                return {}
            if op == "release":
                await self._release(str(request.get("key", "")))
                return {}
            if op == "list":
                return {"ports": [o.to_json() for o, _ in self.opened.values()]}
            if op == "exit":
                self.done.set()
                return {}
        except (KeyError, TypeError, ValueError) as exc:
            return {"error": f"bad {op} request: {exc}"}
        return {"error": f"unknown op {op!r}"}

    async def _open(self, want: Opened) -> dict[str, Any]:
        have = self.opened.get(want.key)
        if have is not None:
            if have[0] == want:
                return {}
            await self._close(want.key)
        cls = TcpProxy if want.proto == "tcp" else UdpProxy
        proxy: TcpProxy | UdpProxy = cls("127.0.0.1", want.port, *want.target, self.netns)
        try:
            await proxy.start()
        except OSError as exc:
            return {"error": f"127.0.0.1:{want.port}/{want.proto}: {exc.strerror or exc}"}
        self.opened[want.key] = (want, proxy)
        log.info("open %s: 127.0.0.1:%d/%s -> %s:%d", want.key, want.port, want.proto,
                 *want.target)
        return {}

    async def _close(self, key: str) -> None:
        entry = self.opened.pop(key, None)
        released = self.released.pop(key, None)
        for proxy in (entry[1] if entry is not None else None, released):
            if proxy is not None:
                log.info("close %s", key)
                with contextlib.suppress(Exception):
                    await proxy.close()

    async def _release(self, key: str) -> None:
        """No new connections on the key's port (someone else takes them: a sleeping
        container's wake proxy); what it relays goes on until it ends or `close`. A proxy
        relaying nothing (or a udp one) is closed."""
        self.released = {k: p for k, p in self.released.items() if p.relaying}
        entry = self.opened.get(key)
        if entry is None:
            return
        proxy = entry[1]
        if not (isinstance(proxy, TcpProxy) and proxy.relaying):
            await self._close(key)
            return
        del self.opened[key]
        proxy.stop_listening()
        older = self.released.pop(key, None)  # released before, opened again since
        if older is not None:
            await older.close()
        self.released[key] = proxy
        log.info("release %s (%d connections relayed on)", key, proxy.relaying)

    async def close_all(self) -> None:
        for key in {*self.opened, *self.released}:
            await self._close(key)

    async def serve_client(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                except ValueError:
                    reply: dict[str, Any] = {"error": "not JSON"}
                else:
                    reply = await self.answer(request)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (OSError, ValueError, asyncio.LimitOverrunError):
            pass  # a daemon that went away mid-request; the next one asks again
        finally:
            writer.close()


def _opened(request: dict[str, Any]) -> Opened:
    proto = request["proto"]
    if proto not in ("tcp", "udp"):
        raise ValueError(f"protocol {proto!r}")
    port = int(request["port"])
    ip, target_port = request["target"]
    if not (0 < port < 65536 and 0 < int(target_port) < 65536):
        raise ValueError("port out of range")
    return Opened(str(request["key"]), proto, port, (str(ip), int(target_port)))


async def _main(control: Path, netns: str | None) -> int:
    keeper = Keeper(netns)
    with contextlib.suppress(FileNotFoundError):
        control.unlink()  # a dead keeper's
    old = os.umask(0o077)
    try:
        server = await asyncio.start_unix_server(keeper.serve_client, path=str(control),
                                                 limit=LINE_MAX)
    finally:
        os.umask(old)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, keeper.done.set)
    # The daemon waits for this line: the socket is listening from now on.
    os.write(1, READY)
    os.close(1)
    await keeper.done.wait()
    server.close()
    await keeper.close_all()
    with contextlib.suppress(FileNotFoundError):
        control.unlink()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="steelcup-portkeeper", description=__doc__)
    parser.add_argument("--control", type=Path, required=True, help="the control socket")
    parser.add_argument("--netns", help="serve inside /run/netns/NAME (the daemon's networks)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s portkeeper[%(process)d] %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon's terminal is not ours
    return asyncio.run(_main(args.control, args.netns))


if __name__ == "__main__":
    sys.exit(main())


class InProcessPorts:
    """The keeper's work done inside the calling process (a NetworkManager given no keeper:
    tests): the same proxies, gone with the process."""

    def __init__(self, netns: str | None) -> None:
        self._keeper = Keeper(netns)

    async def open(self, key: str, proto: str, port: int, target: tuple[str, int]) -> None:
        reply = await self._keeper.answer({"op": "open", "key": key, "proto": proto,
                                           "port": port, "target": list(target)})
        if "error" in reply:
            raise Conflict(f"Bind for 127.0.0.1:{port} failed: {reply['error']}")

    async def close(self, key: str) -> None:
        await self._keeper.answer({"op": "close", "key": key})

    async def release(self, key: str) -> None:
        await self._keeper.answer({"op": "release", "key": key})

    async def listing(self) -> list[Opened]:
        return [o for o, _ in self._keeper.opened.values()]

    async def stop(self) -> None:
        await self._keeper.close_all()

    async def detach(self) -> None:
        await self._keeper.close_all()
