"""Benchmark: host memory per idle container — template clones vs direct-boot VMs vs podman+runc.

For each mode, starts N idle containers running `sleep 1d` and reports the drop of the host's
MemAvailable divided by N, plus each QEMU's private memory split into the TCG translation cache
(the `tb-size` MiB anonymous RWX mapping QEMU allocates for generated code), the guest RAM it
dirtied privately (for clones: copy-on-write copies of template pages) and the rest (QEMU's own
heap, device state, libraries' private pages). VMs are started at the pool level (the same
`build_factory` the daemon uses; `tb-size` is not a daemon flag yet), each with its own busybox
rootfs over 9p, SETUP_ROOT and a main process `sleep 86400`. podman runs `peer-run -d ...
sleep 1d` in the same run.

    .venv/bin/python bench/memory.py [--count 20] [--tb 32,8]
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

from bench.meminfo import meminfo_kib  # noqa: E402
from bench.peer import PEER_RUN, peer_argv  # noqa: E402
from bench.smaps import qemu_memory  # noqa: E402
from steelcup.guest.client import ProcessSpec  # noqa: E402
from steelcup.pool.factory import PoolOptions, build_factory  # noqa: E402
from steelcup.pool.source import VmRequest  # noqa: E402
from steelcup.vm.assets import find_assets  # noqa: E402
from steelcup.vm.machine import Machine  # noqa: E402
from steelcup.vm.qemu_args import Share  # noqa: E402
from tests.vm.support import ASSETS, unpack_busybox  # noqa: E402

SETTLE_S = 5.0
MIB = 1024  # smaps and meminfo are in kB


async def start_vms(mode: str, count: int, tb_mib: int, base: Path, src: Path) -> list[str]:
    run_dir = base / f"run-{mode}-{tb_mib}"
    factory = build_factory(
        assets=find_assets(ASSETS), accel="tcg", tcg_tb_mib=tb_mib, run_dir=run_dir,
        options=PoolOptions(templates=(mode == "clone"), base_mem_mib=256, max_mem_mib=1024,
                            max_cpus=2))
    machines: list[Machine] = []
    sem = asyncio.Semaphore(2 if mode == "direct" else 4)

    async def one(i: int) -> None:
        root = base / "roots" / f"{mode}{tb_mib}-{i}"
        shutil.copytree(src, root, symlinks=True)
        async with sem:
            m = await factory.acquire(VmRequest(256, 1, shares=(Share("rootfs", root),)))
            machines.append(m)
            await m.guest.setup_root("rootfs", f"idle{i}")
            await m.guest.start(ProcessSpec(args=("sleep", "86400"), main=True))

    lines: list[str] = []
    before = meminfo_kib("MemAvailable")
    try:
        if mode == "clone":  # the template is built once; its RAM file is counted below
            template = factory.template
            assert template is not None
            await template.template(template.key_for(
                VmRequest(256, 1, shares=(Share("rootfs", src),))))
            before = meminfo_kib("MemAvailable")
        await asyncio.gather(*(one(i) for i in range(count)))
        await asyncio.sleep(SETTLE_S)
        after = meminfo_kib("MemAvailable")
        splits = [qemu_memory(m.pid) for m in machines if m.pid is not None]
        tmpl_mib = 0.0
        if factory.template is not None:
            tmpl_mib = sum(t.ram_file_mib for t in factory.template.status())
        per_kib = (before - after) / count

        def med(values: list[int]) -> str:
            return f"{statistics.median(values) / MIB:.1f}"

        lines.append(
            f"| {'template clones' if mode == 'clone' else 'direct boot'} | {tb_mib} | "
            f"{per_kib / MIB:.1f} | {med([s.private_kib for s in splits])} | "
            f"{med([s.tcg_kib for s in splits])} | {med([s.guest_ram_kib for s in splits])} | "
            f"{med([s.rest_kib for s in splits])} | {tmpl_mib:.0f} |")
    finally:
        await asyncio.gather(*(m.close() for m in machines))
        await factory.close()
    return lines


def podman(count: int) -> str:
    names = [f"scbench-mem-{os.getpid()}-{i}" for i in range(count)]
    before = meminfo_kib("MemAvailable")
    try:
        for name in names:
            subprocess.run([str(PEER_RUN), "-d", "--name", name, "--", "sleep", "1d"],
                           check=True, capture_output=True)
        time.sleep(SETTLE_S)
        after = meminfo_kib("MemAvailable")
    finally:
        peer = peer_argv()
        base = peer[:peer.index("run")]
        subprocess.run([*base, "rm", "-f", "-t", "0", *names], capture_output=True)
    return f"| podman+runc | - | {(before - after) / count / MIB:.1f} | | | | | |"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--tb", default="32,8")
    ap.add_argument("--modes", default="clone,direct")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="scm-"))
    rows: list[str] = []
    try:
        src = unpack_busybox(base / "busybox")
        for tb in (int(x) for x in args.tb.split(",")):
            for mode in args.modes.split(","):
                rows += asyncio.run(start_vms(mode, args.count, tb, base, src))
                time.sleep(2)
        rows.append(podman(args.count))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{args.count} idle `sleep 1d` containers per row; MiB; per-QEMU columns are medians "
          "of private (clean+dirty) memory from /proc/PID/smaps\n")
    print("| runtime | tb-size MiB | MemAvailable drop / container | QEMU private | "
          "of which TCG cache | of which guest RAM | rest | template RAM file (shared) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
