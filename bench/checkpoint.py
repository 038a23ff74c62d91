"""Benchmark: container checkpoints (docs/checkpoints.md) against fresh starts, in one run.

Starts a private daemon (TCG, default pool: templates and a warm cache), then per round:
- a `--checkpointable` busybox whose shell counts in memory is checkpointed (`checkpoint
  create`, the container exits) and the checkpoint's size is read;
- `start --checkpoint` runs it on (timed until the CLI returns: the VM restored, its guest
  answered, the main process re-attached), and the counter is checked to go on;
- interleaved with fresh `run -d` of the same image, with and without `--checkpointable`, and
  podman+runc's `run -d` (the command from `peer-run --print`), each removed untimed.

    .venv/bin/python bench/checkpoint.py [--runs 5]

Prints a markdown table (median and worst of each).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peer import peer_argv  # noqa: E402
from tests.vm.support import (  # noqa: E402
    BUSYBOX_TAR,
    Daemon,
    delete_netns,
    new_netns,
    start_daemon,
    stop_daemon,
    wait_pool_ready,
    wait_until,
)

IMG = "steelcup/busybox"
COUNTER = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done"


def timed(argv: list[str], env: dict[str, str] | None) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, env=env, timeout=300)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... exited {proc.returncode}: "
                           f"{proc.stderr[-500:]!r}")
    return wall, proc.stdout.decode()


def steelcup(daemon: Daemon, *args: str) -> tuple[float, str]:
    return timed([sys.executable, "-m", "steelcup", *args], daemon.env)


def ticks(daemon: Daemon, cid: str) -> list[int]:
    return [int(n) for n in re.findall(r"^tick (\d+)$", daemon.out("logs", cid), re.M)]


def podman_detached(*cmd: str) -> list[str]:
    """peer-run's podman command with `run --rm` made `run -d`."""
    argv = peer_argv(*cmd)
    return [("-d" if a == "--rm" else a) for a in argv]


def size_mb(daemon: Daemon, cid: str, name: str) -> float:
    path = daemon.root / "containers" / cid / "checkpoints" / name / "vm.state"
    return path.stat().st_size / 1e6


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="scck-"))
    # In a network namespace of its own, as the tests run it: `ip netns exec` also gives it a
    # mount namespace, so the containers' root mounts are not pinned by other programs' new
    # mount namespaces (which copy the host's mounts).
    netns = new_netns("bench-ckpt")
    daemon = start_daemon(base / "root", base / "s.sock", netns)
    rows: dict[str, list[float]] = {name: [] for name in (
        "checkpoint create (s)", "checkpoint size (MB)", "start --checkpoint (s)",
        "steelcup run -d --checkpointable (s)", "steelcup run -d (s)", "podman run -d (s)")}
    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        wait_pool_ready(daemon)
        podman = podman_detached("sleep", "1000")
        for i in range(args.runs):
            wait_pool_ready(daemon)  # no cache refill competing for the CPU meanwhile
            _, out = steelcup(daemon, "run", "-d", "--checkpointable", IMG, "sh", "-c", COUNTER)
            cid = out.strip()
            wait_until(lambda c=cid: len(ticks(daemon, c)) >= 5, "ticks", timeout_s=60)
            wait_pool_ready(daemon)
            wall, _ = steelcup(daemon, "checkpoint", "create", cid, f"cp{i}")
            rows["checkpoint create (s)"].append(wall)
            rows["checkpoint size (MB)"].append(size_mb(daemon, cid, f"cp{i}"))
            count = len(ticks(daemon, cid))
            wall, _ = steelcup(daemon, "start", "--checkpoint", f"cp{i}", cid)
            rows["start --checkpoint (s)"].append(wall)
            wait_until(lambda c=cid, n=count: len(ticks(daemon, c)) > n,
                       "ticks after the restore", timeout_s=60)
            assert ticks(daemon, cid)[count] == count + 1, "the counter did not go on"
            daemon.out("rm", "-f", cid)
            for name, flags in (("steelcup run -d --checkpointable (s)", ("--checkpointable",)),
                                ("steelcup run -d (s)", ())):
                wait_pool_ready(daemon)  # each fresh run gets a ready VM, as the restore may not
                wall, out = steelcup(daemon, "run", "-d", *flags, IMG, "sleep", "1000")
                rows[name].append(wall)
                daemon.out("rm", "-f", out.strip())
            wall, out = timed(podman, None)
            rows["podman run -d (s)"].append(wall)
            subprocess.run(["podman", "rm", "-f", "-t", "0", out.strip()], capture_output=True,
                           timeout=120)
    finally:
        stop_daemon(daemon)
        delete_netns(netns)
        shutil.rmtree(base, ignore_errors=True)
    print(f"busybox, {args.runs} rounds interleaved (TCG; default pool: warm cache of "
          "template clones; the restore is a fresh QEMU loading the checkpoint)\n")
    print("| measure | median | worst |")
    print("|---|---:|---:|")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values):.2f} | {max(values):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
