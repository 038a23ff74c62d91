"""Benchmark: the restart gap of a daemon with --live-restore, and that no output is lost.

Starts a daemon (in a network namespace of its own), runs N containers that each print a
counter line every 50 ms, stops the daemon gracefully, starts a new one at once and times:
- stop: SIGTERM until the old daemon has exited (VMs released, records written),
- start: new daemon process until its API answers `ps` with every container running again,
- gap: the sum, the time during which the container API is unavailable.
Then every counter container is waited for and its log checked: each line once, in order.

    .venv/bin/python bench/live_restore.py [--containers 20] [--lines 1200] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.vm.support import (  # noqa: E402
    BUSYBOX_TAR,
    delete_netns,
    leftovers_of,
    new_netns,
    start_daemon,
    stop_daemon,
)

IMG = "steelcup/busybox"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--containers", type=int, default=20)
    ap.add_argument("--lines", type=int, default=1200, help="counter lines per container")
    ap.add_argument("--rounds", type=int, default=1, help="restarts while the counters run")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sclr-"))
    netns = new_netns("bench-lr")
    root, sock = base / "root", base / "run" / "steelcup.sock"
    daemon = start_daemon(root, sock, netns, ("--live-restore",))
    script = (f"i=0; while [ $i -lt {args.lines} ]; do echo line $i; i=$((i+1)); sleep 0.05; "
              "done")
    cids: list[str] = []
    try:
        daemon.out("load", "-i", str(BUSYBOX_TAR))
        t_run = time.perf_counter()
        for _ in range(args.containers):
            cids.append(daemon.out("run", "-d", IMG, "sh", "-c", script).strip())
        print(f"{args.containers} containers started in {time.perf_counter() - t_run:.1f} s")
        stops, starts = [], []
        for _ in range(args.rounds):
            if not all(json.loads(daemon.out("inspect", c))[0]["State"]["Running"]
                       for c in cids):
                print("some counters ended before this round: fewer rounds (or more --lines)")
                break
            t0 = time.perf_counter()
            stop_daemon(daemon)
            t1 = time.perf_counter()
            daemon = start_daemon(root, sock, netns, ("--live-restore",))
            daemon.out("ps")  # the daemon serves once every container is re-attached
            t2 = time.perf_counter()
            states = [json.loads(daemon.out("inspect", c))[0]["State"] for c in cids]
            running = sum(1 for s in states if s["Running"] or s["ExitCode"] == 0)
            assert running == len(cids), states
            stops.append(t1 - t0)
            starts.append(t2 - t1)
        lost = 0
        for cid in cids:
            assert daemon.out("wait", cid).strip() == "0"
            lines = daemon.out("logs", cid).splitlines()
            lost += lines != [f"line {i}" for i in range(args.lines)]
        for cid in cids:
            daemon.out("rm", cid)
        gaps = [a + b for a, b in zip(stops, starts, strict=True)]
        print(f"containers={args.containers} rounds={args.rounds}")
        print(f"stop   median {statistics.median(stops):.2f} s  (SIGTERM -> old daemon gone)")
        print(f"start  median {statistics.median(starts):.2f} s  (new daemon -> API answers "
              "with all re-attached)")
        print(f"gap    median {statistics.median(gaps):.2f} s  max {max(gaps):.2f} s")
        print(f"containers whose log lost or doubled a line: {lost}")
        marks = ("live restore", "re-attached", "daemon ready", "shutting down", "left running")
        for line in daemon.log.read_text().splitlines():
            if any(m in line for m in marks):
                print("  log:", line[:160])
        return 1 if lost else 0
    finally:
        if daemon.proc.poll() is None and cids:  # a live-restore stop would keep them
            daemon.cli("rm", "-f", *cids)
        stop_daemon(daemon)
        problems = leftovers_of(root, netns=netns)
        delete_netns(netns)
        shutil.rmtree(base, ignore_errors=True)
        if problems:
            print("left behind:\n" + "\n".join(problems))


if __name__ == "__main__":
    sys.exit(main())
