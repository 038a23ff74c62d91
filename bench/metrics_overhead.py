"""Benchmark: what Prometheus metrics cost `steelcup run --rm steelcup/busybox true`.

One private daemon (TCG, the default warm cache) with `--metrics-listen`, and `--background`
idle containers running so that every scrape reads several containers' figures (CPU time,
QEMU private memory from smaps_rollup, tap counters) as well as the pool's. The same run is
timed under three conditions, interleaved one run each, the order rotated every round:

- no scraper: nothing reads /metrics (the counters and histograms the layers report into, and
  the 1 s event-loop-lag timer, are always on: they cannot be switched off);
- a scraper GETting /metrics once a second (an aggressive Prometheus `scrape_interval`);
- a scraper GETting it ten times a second (a stress bound, not a setting anyone would use).

The scraper keeps its own clock (scrapes on multiples of the interval), so where a scrape
falls in a run is as random as with a real Prometheus server.

The per-container collection is not a background task: it runs inside each scrape, so the
scraper conditions are the with-collection measurement and "no scraper" the without.
Prints a markdown table: p50 and p90 wall time, their ratio to "no scraper", and the scrapes'
own answer time and size.

    PYTHONPATH=src .venv/bin/python bench/metrics_overhead.py [--runs 20] [--background 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.run_latency import cli_env, free_port, pct, steelcup_argv, timed  # noqa: E402
from steelcup.metrics import private_memory  # noqa: E402
from tests.vm.support import BUSYBOX_TAR, start_daemon, stop_daemon, wait_pool_ready  # noqa: E402

# condition name -> seconds between scrapes (None: no scraper)
CONDITIONS: dict[str, float | None] = {"no scraper": None, "scrape every 1 s": 1.0,
                                       "scrape every 0.1 s": 0.1}


class Scraper(threading.Thread):
    """GETs the metrics URL on the ticks of a fixed clock (every multiple of `interval_s`
    since the epoch) while an interval is set, as a Prometheus server does: its scrapes keep
    their own phase and are not lined up with the runs (a scraper woken at each switch of
    condition would scrape at the very start of every run). Records each scrape's time and
    size under the interval it was made for."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.interval_s: float | None = None
        self.recording = False
        self.done: list[tuple[float, float, int]] = []  # (interval, seconds, bytes)
        self._stopping = threading.Event()

    def set_interval(self, interval_s: float | None) -> None:
        self.interval_s = interval_s

    def run(self) -> None:
        while not self._stopping.is_set():
            interval = self.interval_s
            if interval is None:
                self._stopping.wait(0.01)
                continue
            tick = (time.time() // interval + 1) * interval
            # wait for the tick, a little at a time: the condition may change meanwhile
            while (left := tick - time.time()) > 0 and self.interval_s == interval:
                self._stopping.wait(min(left, 0.01))
            if self.interval_s != interval or self._stopping.is_set():
                continue
            began = time.perf_counter()
            with urllib.request.urlopen(self.url, timeout=30) as resp:
                body = resp.read()
            elapsed = time.perf_counter() - began
            if self.recording:
                self.done.append((interval, elapsed, len(body)))

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=30)


def descendants(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            out += [int(child), *descendants(int(child))]
    return out


def smaps_rollup_ms(daemon_pid: int, reads: int = 20) -> tuple[int, float]:
    """How many QEMUs the daemon runs (containers' and the warm cache's) and the median time
    of the per-container figure that costs most: one read of a QEMU's smaps_rollup."""
    qemus = [p for p in descendants(daemon_pid)
             if "qemu" in Path(f"/proc/{p}/comm").read_text()]
    took = []
    for pid in qemus:
        for _ in range(reads):
            began = time.perf_counter()
            private_memory(pid)
            took.append(time.perf_counter() - began)
    return len(qemus), statistics.median(took) * 1000 if took else 0.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20, help="timed runs per condition")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--background", type=int, default=3,
                    help="idle containers left running, so scrapes read their figures")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="scb-metrics-"))
    port = free_port()
    daemon = start_daemon(base / "root", base / "s.sock",
                          extra_args=("--metrics-listen", f"127.0.0.1:{port}"))
    scraper = Scraper(f"http://127.0.0.1:{port}/metrics")
    walls: dict[str, list[float]] = {name: [] for name in CONDITIONS}
    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        for i in range(args.background):
            daemon.cli("run", "-d", "--name", f"idle{i}", "steelcup/busybox", "sleep", "86400",
                       check=True)
        wait_pool_ready(daemon, cache=True)
        env = cli_env(daemon, base / "pycache")
        run_argv = [*steelcup_argv(), "run", "--rm", "steelcup/busybox", "true"]
        scraper.start()
        names = list(CONDITIONS)
        for i in range(args.warmup + args.runs):
            scraper.recording = i >= args.warmup
            order = names[i % len(names):] + names[:i % len(names)]
            for name in order:
                scraper.set_interval(CONDITIONS[name])
                wall, _, _ = timed(run_argv, env)
                if i >= args.warmup:
                    walls[name].append(wall)
            scraper.set_interval(None)
        qemus, rollup_ms = smaps_rollup_ms(daemon.proc.pid)
    finally:
        scraper.stop()
        stop_daemon(daemon)
        shutil.rmtree(base, ignore_errors=True)

    base_p50, base_p90 = pct(walls["no scraper"], 0.5), pct(walls["no scraper"], 0.9)
    print(f"`run --rm steelcup/busybox true`, {args.runs} runs per condition, interleaved; "
          f"{args.background} idle containers running; daemon with --metrics-listen\n")
    print("| condition | runs | p50 | p90 | p50 ratio | p90 ratio | scrapes during runs | "
          "scrape p50 | scrape size |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, values in walls.items():
        p50, p90 = pct(values, 0.5), pct(values, 0.9)
        took = [s for interval, s, _ in scraper.done if interval == CONDITIONS[name]]
        sizes = [b for interval, _, b in scraper.done if interval == CONDITIONS[name]]
        scrape = f"{statistics.median(took) * 1000:.1f} ms" if took else "–"
        size = f"{statistics.median(sizes) / 1024:.1f} KiB" if sizes else "–"
        print(f"| {name} | {len(values)} | {p50 * 1000:.0f} ms | {p90 * 1000:.0f} ms | "
              f"{p50 / base_p50:.3f} | {p90 / base_p90:.3f} | {len(took)} | {scrape} | {size} |")
    print(f"\nOne read of a QEMU's smaps_rollup (a running container's host memory figure, per "
          f"scrape): median {rollup_ms:.2f} ms over the daemon's {qemus} QEMUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
