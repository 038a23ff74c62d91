"""Cold `run --rm steelcup/busybox true`: wall time and time to first output, vs podman+runc.

Each steelcup run boots a fresh VM (no pool); the podman command comes from
`../shared/tools/peer-run --print` and runs interleaved with ours in the same process.
Prints a markdown table. Usage: `.venv/bin/python bench/cold_run.py [--runs 5]`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peer import peer_argv  # noqa: E402


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, seconds to the first stdout byte) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    first_s = time.perf_counter() - start
    proc.stdout.read()
    if proc.wait() != 0 or not first:
        raise SystemExit(f"benchmark command failed: {shlex.join(argv)}")
    return time.perf_counter() - start, first_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    peer = peer_argv()
    with tempfile.TemporaryDirectory(prefix="sc-bench-") as tmp:
        root, sock = Path(tmp) / "root", Path(tmp) / "s.sock"
        env = dict(os.environ, STEELCUP_HOST=f"unix://{sock}", STEELCUP_ROOT=str(root))
        daemon = subprocess.Popen(
            [sys.executable, "-m", "steelcup", "daemon", "--root", str(root), "--socket",
             str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            steelcup = [sys.executable, "-m", "steelcup"]
            deadline = time.monotonic() + 60
            while subprocess.run([*steelcup, "version"], env=env,
                                 capture_output=True).returncode != 0:
                if time.monotonic() > deadline:
                    raise SystemExit("daemon did not start")
                time.sleep(0.2)
            subprocess.run([*steelcup, "load", "-i", str(REPO / "build/images/busybox.tar")],
                           env=env, check=True, capture_output=True)
            # `echo` rather than `true` so there is a first output byte to time.
            ours_cmd = [*steelcup, "run", "--rm", "steelcup/busybox", "echo", "hi"]
            peer_cmd = [*peer, "echo", "hi"]
            timed(ours_cmd, env), timed(peer_cmd, env)  # warm caches once
            ours, theirs = [], []
            for _ in range(args.runs):
                ours.append(timed(ours_cmd, env))
                theirs.append(timed(peer_cmd, env))
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)
    print(f"Cold run, median of {args.runs} (interleaved), machine: {os.cpu_count()} cores\n")
    print("| command | wall (s) | first output (s) |")
    print("|---|---|---|")
    for name, rows in (("steelcup run --rm (fresh VM, TCG)", ours), ("podman+runc", theirs)):
        wall = statistics.median(r[0] for r in rows)
        first = statistics.median(r[1] for r in rows)
        print(f"| {name} | {wall:.2f} | {first:.2f} |")
    ratio = statistics.median(r[0] for r in ours) / statistics.median(r[0] for r in theirs)
    print(f"\nratio steelcup/podman (wall): {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
