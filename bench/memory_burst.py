"""Benchmark: host memory a container keeps after a burst — steelcup against podman+runc.

A container that needs a lot of memory for a moment (a build step, a batch job, a cache warmed
and dropped) should not keep it from the host afterwards. Per round, for each engine: a fresh
idle container of the Debian workloads image (`bench/workloads.py` builds it), then one
`exec` of `python3` that allocates and writes `--mib` MiB, holds it `HOLD_S` and exits. The
host's anonymous memory (`AnonPages` in /proc/meminfo: processes' private memory, which is
where a clone's QEMU keeps its copies of guest pages) is sampled every 0.1 s from before the
exec; the table shows how much more of it there was at the peak and at each time after the
exec returned (MiB, medians of `--runs` rounds). podman's process memory goes back at its
exit; a steelcup container's guest frees it at once and hands it to the host by free page
reporting (blocks of 128 KiB and up, ~2 s later), where QEMU discards it. (Not
MemAvailable: on a host that is itself a VM handing free memory to its own host, MemFree lags
what was freed by seconds to minutes, for podman as for steelcup.) Run it on a quiet host.

    PYTHONPATH=src .venv/bin/python bench/memory_burst.py [--mib 512] [--runs 3] \
        [--before DIR] [--only steelcup,podman]

`--before DIR` adds a steelcup engine run from another tree's `src/` (e.g. `git archive REV src
| tar -x -C DIR`): a change's before and after in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.meminfo import meminfo_kib  # noqa: E402
from bench.workloads import (  # noqa: E402
    Engine,
    ensure_rootfs,
    podman_engine,
    rootfs_tar,
    steelcup_engine,
)

HOLD_S = 2.0
AFTER_S = (1.0, 3.0, 5.0, 10.0, 20.0)  # samples after the exec returned
SETTLE_S = 3.0  # an idle container first: its start's own memory settles
SAMPLE_S = 0.1
KIB_PER_MIB = 1024


def burst_script(mib: int) -> str:
    return (f"python3 -c 'import time; b = bytearray(b\"x\") * ({mib} << 20); "
            f"time.sleep({HOLD_S})'")


class Sampler:
    """AnonPages every SAMPLE_S in a thread: the highest value seen since `start`."""

    def __init__(self) -> None:
        self.highest_kib = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.highest_kib = meminfo_kib("AnonPages")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.highest_kib = max(self.highest_kib, meminfo_kib("AnonPages"))

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.highest_kib


def one_round(engine: Engine, mib: int) -> dict[str, float]:
    """MiB of anonymous memory the burst added: at the peak and AFTER_S after the exec."""
    engine.new_round()
    engine.start_box()
    try:
        time.sleep(SETTLE_S)
        before = meminfo_kib("AnonPages")
        sampler = Sampler()
        sampler.start()
        engine.sh(burst_script(mib))
        done = time.monotonic()
        row = {"peak": (sampler.stop() - before) / KIB_PER_MIB}
        for after in AFTER_S:
            time.sleep(max(0.0, done + after - time.monotonic()))
            row[f"{after:g} s"] = (meminfo_kib("AnonPages") - before) / KIB_PER_MIB
        return row
    finally:
        engine.stop_box()


def measure(engines: list[Engine], runs: int, mib: int,
            log: Callable[[str], None]) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {e.name: {} for e in engines}
    for i in range(runs):
        for engine in engines:  # interleaved: the host's drift hits every engine alike
            row = one_round(engine, mib)
            log(f"round {i + 1} {engine.name}: " +
                ", ".join(f"{k} {v:.0f}" for k, v in row.items()))
            for key, value in row.items():
                results[engine.name].setdefault(key, []).append(value)
    return results


def table(results: dict[str, dict[str, list[float]]], mib: int,
          peer: str = "podman+runc") -> str:
    """Medians per engine, its peak against the peer's, and the share of its peak it has
    given back 10 s after the burst."""
    keys = ["peak", *(f"{a:g} s" for a in AFTER_S)]
    med = {name: {k: statistics.median(res[k]) for k in keys} for name, res in results.items()}
    lines = ["| engine | held at peak | " + " | ".join(f"{k} after" for k in keys[1:])
             + f" | peak ÷ {peer} | given back by 10 s |",
             "|---|" + "---:|" * (len(keys) + 2)]
    for name, row in med.items():
        ratio = (f"{row['peak'] / med[peer]['peak']:.2f}x"
                 if peer in med and med[peer]["peak"] > 0 else "")
        back = (f"{100 * (1 - row['10 s'] / row['peak']):.0f}%" if row["peak"] > 0 else "")
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.0f}" for k in keys)
                     + f" | {ratio} | {back} |")
    lines.append(f"\nMiB of the host's anonymous memory held, after an exec that wrote {mib} MiB "
                 "and exited.")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=512, help="MiB the burst allocates and writes")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="steelcup,podman", help="engines: steelcup, podman")
    ap.add_argument("--before", type=Path, default=None,
                    help="another steelcup checkout to run as a second engine")
    args = ap.parse_args()
    wanted = args.only.split(",")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    tar = rootfs_tar(ensure_rootfs(log))
    with tempfile.TemporaryDirectory(prefix="scm-") as tmp, contextlib.ExitStack() as stack:
        engines: list[Engine] = []
        if "steelcup" in wanted:
            engines.append(stack.enter_context(
                steelcup_engine("steelcup", Path(tmp) / "sc", tar, (), log)))
        if args.before is not None:
            engines.append(stack.enter_context(
                steelcup_engine("steelcup before", Path(tmp) / "sb", tar, (), log, args.before)))
        if "podman" in wanted:
            engines.append(stack.enter_context(podman_engine(tar)))
        results = measure(engines, args.runs, args.mib, log)
    print(f"Memory after a burst, medians of {args.runs} rounds, {os.cpu_count()} host CPUs, "
          "TCG\n")
    print(table(results, args.mib))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
