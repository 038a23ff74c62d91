"""Benchmark: a func call (`cat` of a small body through the gateway) against the same work as
`podman run --rm -i busybox cat` per call (podman + runc, `peer-run`), interleaved.

Starts a private daemon (TCG) per VM-source mode with `--func-listen`, loads the busybox image,
creates a func `cat`, then alternates one synchronous gateway call (a new HTTP connection each)
with one podman run fed the same body. Modes: `cache` (the default daemon: ready VMs from the
warm cache) and `direct` (`--no-templates`: a cold VM per call, hyper.sh's model). Then calls
per second with `--clients` concurrent clients (the func's concurrency set to match), and the
same for podman. Prints markdown tables with ratios to podman.

    .venv/bin/python bench/func_latency.py [--calls 100] [--modes cache,direct] [--clients 8]
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peer import peer_argv  # noqa: E402
from tests.vm.support import (  # noqa: E402
    BUSYBOX_TAR,
    start_daemon,
    stop_daemon,
    wait_pool_ready,
)

BODY = b"hello, func\n"
MODES = {"cache": (), "direct": ("--no-templates",)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_call(port: int, path: str) -> float:
    """Wall seconds of one synchronous call; its output must be the body."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", path, body=BODY)
        response = conn.getresponse()
        out = response.read()
    finally:
        conn.close()
    wall = time.perf_counter() - start
    if response.status != 200 or out != BODY:
        raise RuntimeError(f"func call answered {response.status}: {out[:300]!r}")
    return wall


def podman_call(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, input=BODY, capture_output=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or proc.stdout != BODY:
        raise RuntimeError(f"podman exited {proc.returncode}: {proc.stderr[-300:]!r}")
    return wall


def throughput(call: Callable[[], float], clients: int, total: int) -> float:
    """Calls per second of `total` calls made by `clients` threads at once."""
    left = [total]
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                if left[0] <= 0 or errors:
                    return
                left[0] -= 1
            try:
                call()
            except BaseException as exc:  # reported after the run
                errors.append(exc)
                return

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return total / (time.perf_counter() - start)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100, help="sequential calls per mode")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--modes", default="cache,direct")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (throughput)")
    ap.add_argument("--throughput-calls", type=int, default=80,
                    help="calls per throughput run (0: skip)")
    args = ap.parse_args()
    podman = peer_argv("cat")
    podman.insert(len(podman) - 2, "-i")  # before the image: `run --rm -i IMAGE cat`
    latency: dict[str, list[float]] = {"podman+runc": []}
    rates: dict[str, float] = {}
    base = Path(tempfile.mkdtemp(prefix="scf-"))
    try:
        for mode in args.modes.split(","):
            port = free_port()
            daemon = start_daemon(base / mode / "root", base / mode / "s.sock",
                                  extra_args=(*MODES[mode], "--func-listen",
                                              f"127.0.0.1:{port}"))
            try:
                daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
                daemon.cli("func", "create", "--name", "cat", "--concurrency",
                           str(args.clients), "steelcup/busybox", "cat", check=True)
                path = json.loads(daemon.out("func", "inspect", "cat"))[0]["CallPath"]
                if mode != "direct":
                    wait_pool_ready(daemon)
                name = f"steelcup func ({mode})"
                latency[name] = []
                for i in range(args.warmup + args.calls):
                    steelcup_s = gateway_call(port, path)
                    podman_s = podman_call(podman)
                    if i >= args.warmup:
                        latency[name].append(steelcup_s)
                        latency["podman+runc"].append(podman_s)
                if args.throughput_calls:
                    if mode != "direct":
                        wait_pool_ready(daemon)
                    rates[name] = throughput(functools.partial(gateway_call, port, path),
                                             args.clients, args.throughput_calls)
            finally:
                stop_daemon(daemon)
        if args.throughput_calls:
            rates["podman+runc"] = throughput(functools.partial(podman_call, podman), args.clients,
                                              args.throughput_calls)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    podman_p50 = statistics.median(latency["podman+runc"])
    print(f"func `cat` of a {len(BODY)}-byte body through the gateway (sync, one HTTP "
          f"connection per call), {args.calls} calls per mode interleaved with `podman run "
          "--rm -i busybox cat` (the podman row pools all its runs)\n")
    print("| runtime | calls | p50 | p99 | p50 vs podman |")
    print("|---|---:|---:|---:|---:|")
    for name, walls in latency.items():
        p50 = statistics.median(walls)
        print(f"| {name} | {len(walls)} | {p50 * 1000:.0f} ms | {pct(walls, 0.99) * 1000:.0f} ms"
              f" | {p50 / podman_p50:.2f}x |")
    if rates:
        print(f"\n{args.throughput_calls} calls by {args.clients} concurrent clients (func "
              f"concurrency {args.clients})\n")
        print("| runtime | calls/s | vs podman |")
        print("|---|---:|---:|")
        podman_rate = rates.get("podman+runc")
        for name, rate in rates.items():
            ratio = f"{rate / podman_rate:.2f}x" if podman_rate else ""
            print(f"| {name} | {rate:.1f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
