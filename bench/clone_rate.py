"""Benchmark: template clones restored per second, and where a clone's hand-out time goes.

Builds one template (pool level, no daemon), then restores batches of clones with 1, 2 and 4
restores in flight (restore = QEMU start + `migrate-incoming` + HELLO_OK + FIXUP), closing each
batch before the next. Then, per clone, times the steps of a container start after the restore:
SETUP_ROOT, the first exec (`true`), a second exec. A warm cache of pre-restored idle clones can
save at most the restore column; the rest happens after hand-out either way. The peer (podman +
runc `run --rm ... true`, sequential) is timed in the same run for the rate comparison.

    .venv/bin/python bench/clone_rate.py [--clones 20] [--tb-mib 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
from steelcup.guest.client import ProcessSpec  # noqa: E402
from steelcup.pool.factory import PoolOptions, build_factory  # noqa: E402
from steelcup.pool.source import VmRequest  # noqa: E402
from steelcup.vm.assets import find_assets  # noqa: E402
from steelcup.vm.machine import Machine  # noqa: E402
from steelcup.vm.qemu_args import Share  # noqa: E402
from tests.vm.support import ASSETS, unpack_busybox  # noqa: E402

PEER_RUN = Path("/work/shared/tools/peer-run")


async def run_true(m: Machine) -> float:
    t0 = time.perf_counter()
    proc = await m.guest.start(ProcessSpec(args=("true",)))
    status = await proc.wait(30)
    assert status.status == 0
    return time.perf_counter() - t0


async def main_async(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="scr-"))
    root = unpack_busybox(base / "root")
    factory = build_factory(assets=find_assets(ASSETS), accel="tcg", tcg_tb_mib=args.tb_mib,
                            run_dir=base / "run",
                            options=PoolOptions(base_mem_mib=256, max_mem_mib=1024, max_cpus=2))
    template = factory.template
    assert template is not None
    req = VmRequest(256, 1, shares=(Share("rootfs", root),))
    try:
        t0 = time.perf_counter()
        await template.template(template.key_for(req))
        build_s = time.perf_counter() - t0
        rates = []
        for inflight in (1, 2, 4):
            sem = asyncio.Semaphore(inflight)
            lat: list[float] = []
            machines: list[Machine] = []

            async def one(sem: asyncio.Semaphore = sem, lat: list[float] = lat,
                          machines: list[Machine] = machines) -> None:
                async with sem:
                    s = time.perf_counter()
                    m = await factory.acquire(req)
                    lat.append(time.perf_counter() - s)
                    machines.append(m)

            s = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(args.clones)))
            wall = time.perf_counter() - s
            await asyncio.gather(*(m.close() for m in machines))
            rates.append((inflight, args.clones / wall, statistics.median(lat), max(lat)))
        steps: dict[str, list[float]] = {"restore+FIXUP": [], "SETUP_ROOT": [],
                                         "1st exec `true`": [], "2nd exec `true`": [],
                                         "SETUP_ROOT+1st exec after 2 s idle": []}
        for i in range(args.steps):
            s = time.perf_counter()
            m = await factory.acquire(req)
            steps["restore+FIXUP"].append(time.perf_counter() - s)
            try:
                if i % 2:  # a clone that sat idle in a cache first
                    await asyncio.sleep(2)
                    s = time.perf_counter()
                    await m.guest.setup_root("rootfs")
                    await run_true(m)
                    steps["SETUP_ROOT+1st exec after 2 s idle"].append(time.perf_counter() - s)
                    continue
                s = time.perf_counter()
                await m.guest.setup_root("rootfs")
                steps["SETUP_ROOT"].append(time.perf_counter() - s)
                steps["1st exec `true`"].append(await run_true(m))
                steps["2nd exec `true`"].append(await run_true(m))
            finally:
                await m.close()
    finally:
        await factory.close()
        shutil.rmtree(base, ignore_errors=True)
    peer = peer_argv("true")
    s = time.perf_counter()
    for _ in range(args.peer_runs):
        subprocess.run(peer, check=True, capture_output=True)
    peer_rate = args.peer_runs / (time.perf_counter() - s)
    print(f"Host: {os.cpu_count()} cores; TCG tb-size={args.tb_mib} MiB; template build "
          f"{build_s:.1f} s; {args.clones} clones per row\n")
    print("| restores in flight | clones/s | restore median | restore max |")
    print("|---:|---:|---:|---:|")
    for inflight, rate, med, mx in rates:
        print(f"| {inflight} | {rate:.1f} | {med * 1000:.0f} ms | {mx * 1000:.0f} ms |")
    print(f"| podman+runc `run --rm true`, sequential | {peer_rate:.1f} | | |\n")
    print("| step after hand-out (median) | time |")
    print("|---|---:|")
    for name, values in steps.items():
        print(f"| {name} | {statistics.median(values) * 1000:.0f} ms (n={len(values)}) |")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clones", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--tb-mib", type=int, default=32)
    ap.add_argument("--peer-runs", type=int, default=10)
    asyncio.run(main_async(ap.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
