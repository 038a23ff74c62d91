"""Benchmark: what a container's first start reads of its image — the hot set a VM made ready
for that image would read ahead of its hand-out.

A daemon with block roots (`--rootfs-cache block`) and no ready VMs (`--pool-size 0`: a ready
VM made for the image would have read its hot files already, and its refill would read them
again) on the Debian workloads image (`bench/workloads.py` builds it): its erofs is read by
guests only, through the host's page cache. Per workload and round: the image's pages
dropped from the host's page cache, one fresh container runs the workload, then the files of
the image with pages cached again
(`steelcup.image.erofs_files.hot_files`) are counted: how many, their size in all, and how much
of them was cached. The host's readahead around each read counts its neighbours too, so this is
an upper bound of what the workload itself read. Medians of `--runs` rounds.

    PYTHONPATH=src .venv/bin/python bench/hot_files.py [--runs 3]
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.workloads import (  # noqa: E402
    CliEngine,
    ensure_rootfs,
    rootfs_tar,
    steelcup_engine,
)
from steelcup.image.erofs_files import (  # noqa: E402
    Layout,
    cached_pages,
    drop_cached,
    hot_files,
    read_layout,
)

EROFS_WAIT_S = 600.0
MIB = 1 << 20


def _python(engine: CliEngine) -> None:
    engine.cli("run", "--rm", engine.image, "python3", "-c", "pass")


def _python_imports(engine: CliEngine) -> None:
    engine.cli("run", "--rm", engine.image, "python3", "-c",
               "import json, email.parser, http.client, subprocess")


def _nginx(engine: CliEngine) -> None:
    engine.side.first_200_after([], engine.start_web)
    engine.stop_web()


def _shell(engine: CliEngine) -> None:
    engine.cli("run", "--rm", engine.image, "sh", "-c", "true")


WORKLOADS: dict[str, Callable[[CliEngine], None]] = {
    "`sh -c true`": _shell,
    "`python3 -c pass`": _python,
    "python3 importing json, email, http.client, subprocess": _python_imports,
    "nginx `run -d` → first 200": _nginx,
}


def _erofs(root: Path) -> Path:
    deadline = time.monotonic() + EROFS_WAIT_S
    while True:
        made = sorted((root / "images" / "erofs").glob("*.erofs"))
        if made:
            return made[0]
        if time.monotonic() > deadline:
            raise RuntimeError("the daemon made no erofs image of the imported image")
        time.sleep(0.5)


def _measure(image: Path, layout: Layout, work: Callable[[], None]) -> tuple[int, float, float]:
    with open(image, "rb") as f:
        drop_cached(f.fileno())
    work()
    with open(image, "rb") as f:
        hot = hot_files(layout, f.fileno())
        pages = cached_pages(f.fileno(), layout.data_bytes)
    cached = sum(b & 1 for b in pages) * mmap.PAGESIZE
    return len(hot), sum(file.size for file in hot) / MIB, cached / MIB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    tar = rootfs_tar(ensure_rootfs(log))
    results: dict[str, list[tuple[int, float, float]]] = {name: [] for name in WORKLOADS}
    with tempfile.TemporaryDirectory(prefix="scb-hot-") as tmp, \
            steelcup_engine("steelcup block", Path(tmp) / "steelcup", tar,
                            ("--rootfs-cache", "block", "--pool-size", "0"), log,
                            warm_cache=False) as engine:
        image = _erofs(Path(tmp) / "steelcup" / "root")
        with open(image, "rb") as f:
            layout = read_layout(f)
        total = sum(file.size for file in layout.files) / MIB
        log(f"{image.name}: {len(layout.files)} files, {total:.0f} MiB")
        for run in range(args.runs):
            for name, work in WORKLOADS.items():
                results[name].append(_measure(image, layout, lambda w=work: w(engine)))
                log(f"round {run + 1} {name}: {results[name][-1]}")
    print(f"Hot sets of the Debian workloads image ({len(layout.files)} files, {total:.0f} MiB),"
          f" medians of {args.runs} rounds, block roots, TCG\n")
    print("| workload | files with cached pages | their size (MiB) | image cached (MiB) |")
    print("|---|---:|---:|---:|")
    for name, rows in results.items():
        files = statistics.median(r[0] for r in rows)
        size = statistics.median(r[1] for r in rows)
        cached = statistics.median(r[2] for r in rows)
        print(f"| {name} | {files:.0f} | {size:.1f} | {cached:.1f} |")
    print("\nA file counts when any of its pages is cached: the host's readahead around each "
          "read brings neighbours in, so these bound the workload's reads from above.")
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
