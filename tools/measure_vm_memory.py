"""Measure a template clone's memory as its cgroup sees it: what QEMU costs beyond guest RAM.

    PYTHONPATH=src python tools/measure_vm_memory.py [--mem 128 256] [--tb 32]

For each size, a clone of a daemon-like template (base 256 MiB, max 2048 MiB) runs in a memory
cgroup with no effective limit, first idle, then busy (every busybox applet, every rootfs file
read through 9p, the guest's RAM filled up to `mem - 40` MiB in a tmpfs). Reported per phase:
- charged: the cgroup's usage (peak for the busy phase): what a limit is compared with;
- guest private: the guest RAM pages QEMU holds privately (copy-on-write copies of the
  template's pages, `Anonymous` of the RAM mapping in /proc/PID/smaps);
- qemu anon: QEMU's anonymous memory outside guest RAM (heap, TCG translation cache, stacks);
- tcg tb: of which the TCG translation cache (at most `--tb` MiB, however busy the guest);
- page cache: file pages charged to the cgroup (template pages this clone read first, 9p
  reads); reclaimable, so they never cause an OOM kill;
- overhead = charged - guest private - page cache: what the limit must allow beyond `-m`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from steelcup.guest.client import ProcessSpec  # noqa: E402
from steelcup.pool.factory import PoolOptions, build_factory  # noqa: E402
from steelcup.pool.source import VmRequest  # noqa: E402
from steelcup.vm.assets import find_assets  # noqa: E402
from steelcup.vm.cgroup import MemoryCgroups  # noqa: E402
from steelcup.vm.machine import Machine  # noqa: E402
from steelcup.vm.qemu_args import Share  # noqa: E402

MIB = 1 << 20
BUSY = r"""
for a in $(busybox --list); do busybox $a --help >/dev/null 2>&1; done
find / -xdev -type f -exec cat {} + >/dev/null 2>&1
mkdir -p /mnt/fill && mount -t tmpfs -o size=2g fill /mnt/fill
dd if=/dev/zero of=/mnt/fill/f bs=1M count=FILL 2>/dev/null
for a in $(busybox --list); do busybox $a --help >/dev/null 2>&1; done
grep -E 'MemTotal|MemFree' /proc/meminfo
"""


def unpack_busybox(dest: Path) -> Path:
    dest.mkdir(parents=True)
    with tarfile.open(REPO / "build/images/busybox.tar") as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
                inner.extractall(dest, filter="tar")
    return dest


def smaps(pid: int, ram_file: Path) -> tuple[int, int, int]:
    """(guest private, QEMU anon outside guest RAM, of which the translation cache) in
    bytes. The translation cache is QEMU's anonymous rwx mappings (`tb_mib` in all, split in
    regions per vCPU thread)."""
    ram_private = anon = tb = 0
    in_ram = in_tb = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):
            in_ram = str(ram_file) in line
            in_tb = line.split()[1].startswith("rwx") and len(line.split()) == 5
        elif first == "Anonymous:":
            nbytes = int(line.split()[1]) * 1024
            if in_ram:
                ram_private += nbytes
            else:
                anon += nbytes
                tb += nbytes if in_tb else 0
    return ram_private, anon, tb


def sample(machine: Machine, phase: str, mem_mib: int, peak: bool) -> dict[str, object]:
    cg = machine.cgroup
    assert cg is not None and machine.pid is not None and machine.spec.mem_path is not None
    stat = cg.stat()
    charged = cg.peak_bytes() if peak else cg.usage_bytes()
    cache = stat.get("cache", stat.get("file", 0))
    ram_private, anon, tb = smaps(machine.pid, machine.spec.mem_path)
    row = {"mem_mib": mem_mib, "phase": phase, "charged": charged / MIB,
           "guest_private": ram_private / MIB, "qemu_anon": anon / MIB, "tcg_tb": tb / MIB,
           "page_cache": cache / MIB,
           "overhead": (charged - ram_private - cache) / MIB}
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}


async def run(sizes: list[int], tb_mib: int) -> list[dict[str, object]]:
    work = Path(tempfile.mkdtemp(prefix="scmeasure-"))
    cgroups = MemoryCgroups.discover(f"measure-{os.getpid()}", overhead_mib=4096)
    if cgroups is None:
        raise SystemExit("no memory cgroup controller on this host")
    cgroups.setup()
    factory = build_factory(assets=find_assets(REPO / "build/guest"), accel="tcg",
                            tcg_tb_mib=tb_mib, run_dir=work / "run",
                            options=PoolOptions(base_mem_mib=256, max_mem_mib=2048),
                            cgroups=cgroups)
    rows = []
    try:
        rootfs = unpack_busybox(work / "rootfs")
        for mem in sizes:
            m = await factory.acquire(VmRequest(mem_mib=mem, cpus=1,
                                                shares=(Share("rootfs", rootfs),)))
            try:
                await m.guest.setup_root("rootfs")
                await asyncio.sleep(2)
                rows.append(sample(m, "idle", mem, peak=False))
                script = BUSY.replace("FILL", str(max(0, mem - 40)))
                proc = await m.guest.start(ProcessSpec(args=("sh", "-c", script), main=True))
                async for _ in proc:
                    pass
                await proc.wait(600)
                rows.append(sample(m, "busy", mem, peak=True))
            finally:
                await m.close()
    finally:
        await factory.close()
        cgroups.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mem", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--tb", type=int, default=32, help="TCG translation cache, MiB")
    args = parser.parse_args()
    rows = asyncio.run(run(args.mem, args.tb))
    keys = list(rows[0])
    print(" ".join(f"{k:>13}" for k in keys))
    for row in rows:
        print(" ".join(f"{row[k]!s:>13}" for k in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
