"""Benchmark: cold boot of a steelcup microVM to HELLO_OK (median of N), TCG.

Boots `Machine(VmSpec(...))` from the guest assets, no template, N times one after another, for
a few variants of the kernel command line, and times `start()` (QEMU exec to the guest's
HELLO_OK). The peer row is podman+runc `run --rm ... true` (whole container run) in the same run.

    .venv/bin/python bench/boot.py [--runs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from steelcup.vm.assets import find_assets  # noqa: E402
from steelcup.vm.machine import Machine  # noqa: E402
from steelcup.vm.qemu_args import VmSpec  # noqa: E402
from tests.vm.support import ASSETS  # noqa: E402

PEER_RUN = Path("/work/shared/tools/peer-run")

VARIANTS: dict[str, dict[str, object]] = {
    "default (quiet, tsc_early_khz, 256 MiB, 1 vCPU)": {},
    "without tsc_early_khz (guest calibrates TSC)": {"tsc_khz": 0},
    "console verbose (loglevel=7 after quiet)": {"cmdline_extra": ("loglevel=7",)},
    "init_on_alloc=0": {"cmdline_extra": ("init_on_alloc=0",)},
}


async def boot_once(spec: VmSpec) -> float:
    m = Machine(spec, boot_attempts=1)
    t0 = time.perf_counter()
    try:
        await m.start(30)
        return time.perf_counter() - t0
    finally:
        await m.close()


async def main_async(args: argparse.Namespace) -> None:
    assets = find_assets(ASSETS)
    base = Path(tempfile.mkdtemp(prefix="scb-"))
    rows = []
    try:
        for name, kw in VARIANTS.items():
            times: list[float] = []
            fails = 0
            for i in range(args.runs):
                spec = VmSpec(kernel=assets.kernel, initrd=assets.initrd,
                              state_dir=base / f"v{len(rows)}-{i}")
                try:
                    times.append(await boot_once(replace(spec, **kw)))  # type: ignore[arg-type]
                except Exception as exc:  # a stalled boot counts as a miss, not a crash
                    fails += 1
                    print(f"{name}: boot {i} failed: {str(exc).splitlines()[0]}",
                          file=sys.stderr)
            med = f"{statistics.median(times) * 1000:.0f} ms" if times else "-"
            mx = f"{max(times) * 1000:.0f} ms" if times else "-"
            rows.append(f"| {name} | {len(times)} | {med} | {mx} | {fails} |")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    peer = subprocess.run([str(PEER_RUN), "--print"], capture_output=True, text=True,
                          check=True).stdout.strip().splitlines()[-1].split() + ["true"]
    ptimes = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        subprocess.run(peer, check=True, capture_output=True)
        ptimes.append(time.perf_counter() - t0)
    rows.append(f"| podman+runc `run --rm true` (whole run) | {args.runs} | "
                f"{statistics.median(ptimes) * 1000:.0f} ms | {max(ptimes) * 1000:.0f} ms | 0 |")
    print("| cold boot to HELLO_OK (TCG) | boots | median | max | stalled |")
    print("|---|---:|---:|---:|---:|")
    print("\n".join(rows))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    asyncio.run(main_async(ap.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
