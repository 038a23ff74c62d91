"""Benchmark: what the steelcup CLI itself costs per command, apart from any VM (issue 19).

Three figures, medians of `--runs` runs, all commands interleaved:
- `steelcup version` against a running daemon (started here, `--no-templates`: no VM runs);
- `steelcup run --rm busybox echo hi` against a scripted Engine API on a unix socket that
  answers ping, create, attach, wait and start at once: the client's own cost of a run, next to
  the docker CLI against the same API and `python -c pass` (the interpreter alone);
- the sum of the `-X importtime` self times of `steelcup version` (all modules, and those
  imported after `site`, i.e. the CLI's own).
Wall time (start to exit) and CPU time (user + system, of the process and its children).

    PYTHONPATH=src .venv/bin/python bench/cli_startup.py [--runs 20] [--docker] \
        [--tree NAME=SRC_DIR ...]

The CLI runs as users run it: the `steelcup` console script next to this Python, its bytecode
cached in a private PYTHONPYCACHEPREFIX (the warm-up runs fill it). `--tree` runs it from other
source trees too, e.g. `git archive OLD src | tar -x -C /tmp/old` then
`--tree before=/tmp/old/src --tree after=src`; without it, the `src` of this checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.run_latency import steelcup_argv  # noqa: E402
from tests.vm.support import start_daemon, stop_daemon  # noqa: E402


class ScriptedApi:
    """The Engine API calls of `run --rm` (and docker's ping), answered at once: the attach
    stream prints "hi" once started and ends, then the wait answers 0. Keep-alive."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}

    def _event(self, cid: str, name: str) -> asyncio.Event:
        return self._events.setdefault((cid, name), asyncio.Event())

    @staticmethod
    async def _request(reader: asyncio.StreamReader) -> tuple[str, str] | None:
        line = await reader.readline()
        if not line:
            return None
        method, target, _ = line.decode("latin-1").split(" ", 2)
        length = 0
        chunked = False
        while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = header.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "transfer-encoding":
                chunked = "chunked" in value.lower()
        if chunked:
            while (size := int((await reader.readline()).split(b";")[0], 16)) != 0:
                await reader.readexactly(size + 2)
            await reader.readline()
        else:
            await reader.readexactly(length)
        return method, target.split("?")[0]

    @staticmethod
    def _answer(writer: asyncio.StreamWriter, status: str, body: bytes = b"") -> None:
        writer.write(f"HTTP/1.1 {status}\r\nApi-Version: 1.43\r\nContent-Type: application/json"
                     f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (request := await self._request(reader)) is not None:
                method, path = request
                parts = path.split("/")
                cid = parts[-2] if len(parts) > 2 else ""
                if path.endswith("/_ping"):
                    self._answer(writer, "200 OK", b"" if method == "HEAD" else b"OK")
                elif path.endswith("/containers/create"):
                    body = json.dumps({"Id": os.urandom(32).hex(), "Warnings": []}).encode()
                    self._answer(writer, "201 Created", body)
                elif path.endswith("/attach"):
                    writer.write(b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/"
                                 b"vnd.docker.raw-stream\r\nConnection: Upgrade\r\n"
                                 b"Upgrade: tcp\r\n\r\n")
                    await writer.drain()
                    await self._event(cid, "started").wait()
                    writer.write(struct.pack(">BxxxL", 1, 3) + b"hi\n")  # stdout frame
                    await writer.drain()
                    self._event(cid, "ended").set()
                    return
                elif path.endswith("/wait"):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n")
                    await writer.drain()
                    await self._event(cid, "ended").wait()
                    body = b'{"StatusCode":0}\n'
                    writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
                    self._events.pop((cid, "started"), None)
                    self._events.pop((cid, "ended"), None)
                elif path.endswith("/start"):
                    self._event(cid, "started").set()
                    writer.write(b"HTTP/1.1 204 No Content\r\nApi-Version: 1.43\r\n\r\n")
                else:
                    self._answer(writer, "404 Not Found", b'{"message":"not scripted"}')
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def serve_scripted(path: Path) -> None:
    """The scripted API on `path`, from a daemon thread, for the rest of the process."""
    ready = threading.Event()

    async def run() -> None:
        server = await asyncio.start_unix_server(ScriptedApi().serve, str(path))
        ready.set()
        async with server:
            await server.serve_forever()

    threading.Thread(target=asyncio.run, args=(run(),), daemon=True).start()
    if not ready.wait(10):
        raise RuntimeError("the scripted API did not start")


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall s, CPU s) of one run, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]}... exited {proc.returncode}: {err[-500:]!r}")
    return wall, usage.ru_utime + usage.ru_stime


def import_sums(argv: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    """Medians (ms) of the summed `-X importtime` self times: all modules, and after `site`."""
    totals: list[float] = []
    after_site: list[float] = []
    if argv[0] == sys.executable:  # python -m steelcup
        argv = argv[1:]
    for _ in range(runs):
        err = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env,
                             capture_output=True, text=True, check=True).stderr
        total = after = 0
        seen_site = False
        for line in err.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            self_us, _, name = line.split(":", 1)[1].split("|")
            total += int(self_us)
            after += int(self_us) if seen_site else 0
            seen_site = seen_site or name.strip() == "site" and not name.startswith("   ")
        totals.append(total / 1000)
        after_site.append(after / 1000)
    return statistics.median(totals), statistics.median(after_site)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--docker", action="store_true", help="also the docker CLI's run --rm")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=SRC_DIR",
                    help="run the CLI from this source tree (repeatable; default: src)")
    args = ap.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree) or {"this tree": str(REPO / "src")}
    base = Path(tempfile.mkdtemp(prefix="scs-"))
    daemon = start_daemon(base / "root", base / "d.sock", extra_args=("--no-templates",))
    try:
        serve_scripted(base / "api.sock")
        env = dict(os.environ, STEELCUP_NO_AUTOSTART="1", PYTHONPYCACHEPREFIX=str(base / "pyc"))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "python -c pass": ([sys.executable, "-c", "pass"], env)}
        for name, src in trees.items():
            tree_env = dict(env, PYTHONPATH=str(Path(src).resolve()))
            commands[f"steelcup version ({name})"] = (
                [*steelcup_argv(), "version"],
                dict(tree_env, STEELCUP_HOST=f"unix://{daemon.socket}"))
            commands[f"steelcup run --rm, scripted API ({name})"] = (
                [*steelcup_argv(), "run", "--rm", "busybox", "echo", "hi"],
                dict(tree_env, STEELCUP_HOST=f"unix://{base / 'api.sock'}"))
        if args.docker:
            commands["docker run --rm, scripted API"] = (
                ["docker", "-H", f"unix://{base / 'api.sock'}", "run", "--rm", "busybox",
                 "echo", "hi"], env)
        times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in commands}
        for i in range(args.warmup + args.runs):
            for name, (argv, cmd_env) in commands.items():
                wall, cpu = timed(argv, cmd_env)
                if i >= args.warmup:
                    times[name][0].append(wall)
                    times[name][1].append(cpu)
        sums = {name: import_sums([*steelcup_argv(), "version"],
                                  dict(env, PYTHONPATH=str(Path(src).resolve()),
                                       STEELCUP_HOST=f"unix://{daemon.socket}"), args.runs)
                for name, src in trees.items()}
    finally:
        stop_daemon(daemon)
        shutil.rmtree(base, ignore_errors=True)
    print(f"{args.runs} runs each, interleaved; load average {os.getloadavg()[0]:.1f}; "
          f"CLI: `{' '.join(steelcup_argv())}`, bytecode cached\n")
    print("| command | wall median | wall min | CPU median |")
    print("|---|---:|---:|---:|")
    for name, (walls, cpus) in times.items():
        print(f"| {name} | {statistics.median(walls) * 1000:.1f} ms | {min(walls) * 1000:.1f} ms"
              f" | {statistics.median(cpus) * 1000:.1f} ms |")
    print("\n| tree | `-X importtime` sum, `steelcup version` | of which after `site` |")
    print("|---|---:|---:|")
    for name, (total, after) in sums.items():
        print(f"| {name} | {total:.1f} ms | {after:.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
