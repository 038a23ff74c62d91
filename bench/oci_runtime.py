"""Benchmark: `podman --runtime steelcup-runtime run --rm` vs the same podman run with runc.

One private daemon (TCG, warm cache), one private podman storage with the busybox image; each
round runs `podman run --rm --network none steelcup/busybox echo hi` once per runtime, the same
podman command but for `--runtime`, interleaved. Reports wall-time median and p99 as a markdown
table.

    .venv/bin/python bench/oci_runtime.py [--runs 20]

steelcup-runtime is this tree's (`python -m steelcup.oci` through a wrapper, as the tests run
it), talking to the daemon on its socket (--host: no autostart in the timing).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.run_latency import pct, timed  # noqa: E402
from tests.compat.podmanutil import IMG, Podman, write_runtime_wrapper  # noqa: E402
from tests.vm.support import BUSYBOX_TAR, start_daemon, stop_daemon, wait_pool_ready  # noqa: E402

RUNC = Path("/usr/sbin/runc")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="scb-oci-"))
    daemon = start_daemon(base / "sc", base / "sc.sock")
    times: dict[str, list[float]] = {"steelcup-runtime": [], "runc": []}
    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        wait_pool_ready(daemon, cache=True)
        wrapper = write_runtime_wrapper(base / "steelcup-runtime", daemon.socket, base / "oci")
        podmen = {"steelcup-runtime": Podman(daemon, base, wrapper, base / "oci"),
                  "runc": Podman(daemon, base, RUNC, base / "oci")}
        podmen["runc"].run("load", "-i", str(BUSYBOX_TAR), check=True)
        for i in range(args.warmup + args.runs):
            for name, podman in podmen.items():
                argv = podman.argv("run", "--rm", "--network", "none", "--ulimit",
                                   "nofile=1024:1024", "--ulimit", "nproc=1024:1024", IMG,
                                   "echo", "hi")
                wall, _ttfb, out = timed(argv)
                assert out == b"hi\n", (name, out)
                if i >= args.warmup:
                    times[name].append(wall)
    finally:
        podman = Podman(daemon, base, RUNC, base / "oci")
        podman.run("rm", "-a", "-f", "-t", "0")
        stop_daemon(daemon)
        shutil.rmtree(base, ignore_errors=True)
    runc_median = statistics.median(times["runc"])
    print(f"`podman run --rm --network none steelcup/busybox echo hi`, {args.runs} runs each, "
          "interleaved; steelcup daemon with its warm cache (TCG)\n")
    print("| podman --runtime | runs | wall median | wall p99 | vs runc |")
    print("|---|---:|---:|---:|---:|")
    for name, walls in times.items():
        med = statistics.median(walls)
        print(f"| {name} | {len(walls)} | {med * 1000:.0f} ms | {pct(walls, 0.99) * 1000:.0f} ms"
              f" | {med / runc_median:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
