"""Benchmark: cold boot of a steelcup microVM to HELLO_OK (median of N), TCG.

Boots `Machine(VmSpec(...))` from the guest assets, no template, N times one after another, for
a few variants of the kernel command line, and times `start()` (QEMU exec to the guest's
HELLO_OK). The `guest ready` column is the init's own "ready at N ms since boot" console line
(guest CLOCK_MONOTONIC: kernel boot + init up to the control port). The peer row is podman+runc
`run --rm ... true` (whole container run) in the same run.

    .venv/bin/python bench/boot.py [--runs 10] [--only SUBSTRING ...] [--append 'WORDS' ...]
        [--assets DIR ...] [--no-peer]

`--assets` compares several asset dirs (e.g. the Debian-package kernel and the source-built
one) variant by variant; `--append` adds a variant with extra kernel command line words.
"""

from __future__ import annotations

import argparse
import asyncio
import re
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

from bench.peer import peer_argv  # noqa: E402
from steelcup.vm.assets import find_assets  # noqa: E402
from steelcup.vm.machine import Machine  # noqa: E402
from steelcup.vm.qemu_args import VmSpec  # noqa: E402
from tests.vm.support import ASSETS  # noqa: E402

READY_RE = re.compile(rb"ready at (\d+) ms since boot")

VARIANTS: dict[str, dict[str, object]] = {
    "default (quiet, tsc_early_khz, 256 MiB, 1 vCPU)": {},
    "without tsc_early_khz (guest calibrates TSC)": {"tsc_khz": 0},
    "console verbose (loglevel=7 after quiet)": {"cmdline_extra": ("loglevel=7",)},
    "init_on_alloc=0": {"cmdline_extra": ("init_on_alloc=0",)},
    "4 vCPUs present, 1 online (pool shape)": {"cpus": 1, "max_cpus": 4},
    # QEMU merges a second -machine into the first; without ACPI tables microvm lists the
    # virtio-mmio devices on the kernel command line (CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES).
    "machine acpi=off": {"extra_args": ("-machine", "acpi=off")},
}


async def boot_once(spec: VmSpec) -> tuple[float, int | None]:
    """Seconds from QEMU exec to HELLO_OK, and the guest's own ready time (ms) if it logged it."""
    m = Machine(spec, boot_attempts=1)
    t0 = time.perf_counter()
    try:
        await m.start(30)
        elapsed = time.perf_counter() - t0
    finally:
        await m.close()
    found = READY_RE.search(spec.console_log.read_bytes()) if spec.console_log.exists() else None
    return elapsed, int(found.group(1)) if found else None


def _ms(values: list[float]) -> tuple[str, str]:
    if not values:
        return "-", "-"
    return f"{statistics.median(values):.0f} ms", f"{max(values):.0f} ms"


async def main_async(args: argparse.Namespace) -> None:
    variants = dict(VARIANTS)
    if args.only:
        variants = {k: v for k, v in variants.items() if any(s in k for s in args.only)}
    for words in args.append:
        variants[f"+ `{words}`"] = {"cmdline_extra": tuple(words.split())}
    asset_dirs = [Path(d) for d in args.assets] or [ASSETS]
    base = Path(tempfile.mkdtemp(prefix="scb-"))
    rows: list[str] = []
    try:
        for adir in asset_dirs:
            assets = find_assets(adir)
            label = f"{adir.name}: " if len(asset_dirs) > 1 else ""
            for name, kw in variants.items():
                times: list[float] = []
                ready: list[float] = []
                fails = 0
                for i in range(args.runs):
                    spec = VmSpec(kernel=assets.kernel, initrd=assets.initrd,
                                  state_dir=base / f"v{len(rows)}-{i}")
                    try:
                        took, guest_ms = await boot_once(replace(spec, **kw))  # type: ignore[arg-type]
                    except Exception as exc:  # a stalled boot counts as a miss, not a crash
                        fails += 1
                        print(f"{name}: boot {i} failed: {str(exc).splitlines()[0]}",
                              file=sys.stderr)
                        continue
                    times.append(took * 1000)
                    if guest_ms is not None:
                        ready.append(guest_ms)
                med, mx = _ms(times)
                rmed, _ = _ms(ready)
                row = f"| {label}{name} | {len(times)} | {med} | {mx} | {rmed} | {fails} |"
                print(row, file=sys.stderr)
                rows.append(row)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if not args.no_peer:
        peer = peer_argv("true")
        ptimes = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run(peer, check=True, capture_output=True)
            ptimes.append((time.perf_counter() - t0) * 1000)
        med, mx = _ms(ptimes)
        rows.append(f"| podman+runc `run --rm true` (whole run) | {args.runs} | {med} | {mx} "
                    "| | 0 |")
    print("| cold boot to HELLO_OK (TCG) | boots | median | max | guest ready (median) "
          "| stalled |")
    print("|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--only", action="append", default=[],
                    help="run only the built-in variants whose name contains this (repeatable)")
    ap.add_argument("--append", action="append", default=[],
                    help="add a variant with these extra kernel command line words (repeatable)")
    ap.add_argument("--assets", action="append", default=[],
                    help="guest asset dir to boot (repeatable; default build/guest)")
    ap.add_argument("--no-peer", action="store_true", help="skip the podman+runc row")
    asyncio.run(main_async(ap.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
