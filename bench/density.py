"""Benchmark: what N idle containers cost the host — steelcup (one daemon per source tree) vs
podman+runc, in the same run.

For each runtime: start N `sleep 1d` containers (detached, `--parallel` at a time), then report
- the time to start the batch;
- the host's MemAvailable drop per container;
- per VM (steelcup): QEMU's Pss and private memory from /proc/PID/smaps (medians), the private
  part split into the TCG translation cache, guest RAM held privately (a clone's copy-on-write
  pages) and the rest (QEMU itself: bench/smaps.py); the template RAM files the clones map
  are reported apart, once per host (their allocated size), since every clone shares them;
- the host CPU the idle containers use over `--window` seconds, `--reps` times: all threads of
  every QEMU of the daemon (its warm-cache VMs included: they idle too) from schedstat, per VM,
  and the daemon's own CPU; for podman, each container's conmon and its `sleep`;
- `run --rm busybox true` latency with the N idle in the background, each run followed by one
  podman run (`peer-run --print`) so both see the same machine. The CLI runs as users run it:
  the console script, its bytecode cached (bench/run_latency.py's `cli_env`), even if the
  shell sets PYTHONDONTWRITEBYTECODE (the warm-up runs fill the cache).
CPU time is per process, so other work on the machine barely moves it (it can only add cache
misses); the host's total busy share in the same windows is printed as the context.

    .venv/bin/python bench/density.py [--count 20] [--window 30] [--reps 2] [--runs 10]
        [--trees src,/path/to/other/src]

`--trees` runs the steelcup part once per source tree (a `src` directory; its daemon and CLI
import from there), e.g. the tree before a change exported with `git archive`, so before and
after are measured in one sitting against the same podman. Daemons run `--no-networking` (no
NIC per VM), as in bench/run_latency.py, or with `--network` on the default bridge inside a
network namespace the benchmark makes (as the VM tests do); the guest assets are this tree's
build/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.meminfo import meminfo_kib  # noqa: E402
from bench.peer import PEER_RUN, peer_argv  # noqa: E402
from bench.run_latency import cli_env, steelcup_argv  # noqa: E402
from bench.smaps import file_kib, qemu_memory  # noqa: E402
from tests.vm.support import (  # noqa: E402
    ASSETS,
    BUSYBOX_TAR,
    Daemon,
    delete_netns,
    new_netns,
    start_daemon,
    stop_daemon,
    wait_pool_ready,
)

SETTLE_S = 5.0
KIB_PER_MIB = 1024
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def host_busy_ticks() -> tuple[int, int]:
    """(busy, total) ticks of the whole host from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def cpu_ns(pid: int) -> int:
    """Run time of all of `pid`'s live threads (ns, schedstat); 0 once it is gone."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    except OSError:
        pass
    return total


def descendants(root_pid: int) -> dict[int, str]:
    """{pid: command name} of every process below `root_pid`."""
    parent: dict[int, int] = {}
    comm: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, _, rest = stat.partition("(")[2].rpartition(")")
        parent[int(entry.name)] = int(rest.split()[1])
        comm[int(entry.name)] = name
    found: dict[int, str] = {}
    for pid in parent:
        p = pid
        while p > 1:
            p = parent.get(p, 0)
            if p == root_pid:
                found[pid] = comm[pid]
                break
    return found


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Result:
    name: str
    count: int
    start_batch_s: float = 0.0
    mem_drop_mib: float = 0.0  # per container
    pss_mib: float | None = None  # per VM, median
    private_mib: float | None = None
    tcg_mib: float | None = None  # of private: translation cache, guest RAM, the rest
    guest_ram_mib: float | None = None
    rest_mib: float | None = None
    template_ram_mib: float | None = None  # shared by the clones, counted once
    units: int = 0  # processes whose CPU is counted (QEMUs; conmon + sleep pairs)
    cpu_pct_per: list[float] = field(default_factory=list)  # % of a core per container, by rep
    daemon_pct: list[float] = field(default_factory=list)
    host_busy_pct: list[float] = field(default_factory=list)
    run_rm_s: list[float] = field(default_factory=list)
    loadavg: tuple[float, float, float] | None = None  # the host's, after the idle windows


def idle_cpu(res: Result, pids: Callable[[], list[int]], daemon_pid: int | None,
             window_s: float, reps: int, per_process: bool) -> None:
    """Fill `res`'s CPU columns: `reps` windows of `window_s` over the processes `pids()`,
    divided among them (`per_process`: one per VM) or among the containers."""
    for _ in range(reps):
        watched = pids()
        before = {p: cpu_ns(p) for p in watched}
        d0 = cpu_ns(daemon_pid) if daemon_pid else 0
        h0, t0 = host_busy_ticks(), time.monotonic()
        time.sleep(window_s)
        h1, elapsed = host_busy_ticks(), time.monotonic() - t0
        used = sum(cpu_ns(p) - before[p] for p in watched) / 1e9
        per = len(watched) if per_process else res.count
        res.cpu_pct_per.append(100 * used / elapsed / max(1, per))
        if daemon_pid:
            res.daemon_pct.append(100 * (cpu_ns(daemon_pid) - d0) / 1e9 / elapsed)
        res.host_busy_pct.append(100 * (h1[0] - h0[0]) / max(1, h1[1] - h0[1]))
        res.units = len(watched)
    res.loadavg = os.getloadavg()


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env, timeout=120)
    return time.perf_counter() - start


def in_parallel(jobs: list[Callable[[], object]], parallel: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()
    return time.perf_counter() - start


def steelcup(tree: Path, args: argparse.Namespace, base: Path, peer_rm: list[str],
             podman: Result) -> Result:
    os.environ["PYTHONPATH"] = str(tree)  # the daemon and the CLI import this tree
    os.environ.setdefault("STEELCUP_ASSETS", str(ASSETS))  # one guest for every tree
    label = f"steelcup ({tree})"
    res = Result(label, args.count)
    work = base / f"t{len(list(base.iterdir()))}"
    netns = new_netns(f"dens{len(list(base.iterdir()))}") if args.network else None
    daemon: Daemon = start_daemon(work / "root", work / "s.sock", netns,
                                  extra_args=tuple(args.daemon_args.split()))
    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        wait_pool_ready(daemon)
        time.sleep(SETTLE_S)
        net_args: tuple[str, ...] = ()
        if args.network and args.subnet:  # the default network is a /24: ~250 addresses
            daemon.cli("network", "create", "--subnet", args.subnet, "dens", check=True)
            net_args = ("--network", "dens")
        mem0 = meminfo_kib("MemAvailable")
        started: list[int] = []

        def start(i: int) -> None:
            if meminfo_kib("MemAvailable") < args.min_available_mib * KIB_PER_MIB:
                return  # the host is running out of memory: stop adding containers
            daemon.cli("run", "-d", "--name", f"idle{i}", *net_args, "steelcup/busybox",
                       "sleep", "1d", check=True)
            started.append(i)

        res.start_batch_s = in_parallel([lambda i=i: start(i) for i in range(args.count)],
                                        args.parallel)
        res.count = len(started)
        if res.count < args.count:
            res.name += f", {res.count} started (MemAvailable floor)"
        time.sleep(SETTLE_S)  # the warm cache refills meanwhile
        wait_pool_ready(daemon)
        drop_kib = mem0 - meminfo_kib("MemAvailable")
        res.mem_drop_mib = drop_kib / max(1, res.count) / KIB_PER_MIB

        def qemus() -> list[int]:
            return [p for p, n in descendants(daemon.proc.pid).items() if n.startswith("qemu")]

        mems = [qemu_memory(p) for p in qemus()]

        def median_mib(values: list[int]) -> float:
            return statistics.median(values) / KIB_PER_MIB

        res.pss_mib = median_mib([m.pss_kib for m in mems])
        res.private_mib = median_mib([m.private_kib for m in mems])
        res.tcg_mib = median_mib([m.tcg_kib for m in mems])
        res.guest_ram_mib = median_mib([m.guest_ram_kib for m in mems])
        res.rest_mib = median_mib([m.rest_kib for m in mems])
        ram_files = set().union(*(m.ram_files for m in mems))
        res.template_ram_mib = sum(file_kib(f) for f in ram_files) / KIB_PER_MIB
        # per VM: the warm cache's ready VMs idle too, and count
        idle_cpu(res, qemus, daemon.proc.pid, args.window, args.reps, per_process=True)
        cli = [*steelcup_argv(), "run", "--rm", *net_args, "steelcup/busybox", "true"]
        env = cli_env(daemon, work / "pycache")
        for i in range(args.warmup + args.runs):
            ours = timed(cli, env)
            theirs = timed(peer_rm)
            if i >= args.warmup:
                res.run_rm_s.append(ours)
                podman.run_rm_s.append(theirs)
    finally:
        stop_daemon(daemon)
        if netns is not None:
            delete_netns(netns)
    return res


def podman_idle(args: argparse.Namespace, peer_rm: list[str]) -> Result:
    res = Result(f"podman+runc ({args.count} idle podman)", args.count)
    names = [f"scbench-dens-{os.getpid()}-{i}" for i in range(args.count)]
    base_cmd = peer_argv()
    base_cmd = base_cmd[:base_cmd.index("run")]
    try:
        mem0 = meminfo_kib("MemAvailable")
        res.start_batch_s = in_parallel(
            [lambda n=n: subprocess.run([str(PEER_RUN), "-d", "--name", n, "--", "sleep", "1d"],
                                        check=True, capture_output=True)
             for n in names], args.parallel)
        time.sleep(SETTLE_S)
        res.mem_drop_mib = (mem0 - meminfo_kib("MemAvailable")) / args.count / KIB_PER_MIB

        def pids() -> list[int]:
            out = subprocess.run([*base_cmd, "inspect", "-f",
                                  "{{.State.Pid}} {{.State.ConmonPid}}", *names],
                                 capture_output=True, text=True, check=True).stdout
            return [int(v) for v in out.split() if v.isdigit() and v != "0"]

        idle_cpu(res, pids, None, args.window, args.reps, per_process=False)
        for i in range(args.warmup + args.runs):
            t = timed(peer_rm)
            if i >= args.warmup:
                res.run_rm_s.append(t)
    finally:
        subprocess.run([*base_cmd, "rm", "-f", "-t", "0", *names], capture_output=True)
    return res


def fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def ratio(value: float | None, ref: float | None) -> str:
    return f"{value / ref:.2f}x" if value and ref else ""


def split(r: Result) -> str:
    if r.tcg_mib is None or r.guest_ram_mib is None or r.rest_mib is None:
        return ""
    return f"{r.tcg_mib:.1f} / {r.guest_ram_mib:.1f} / {r.rest_mib:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=20, help="idle containers (e.g. 50, 100)")
    ap.add_argument("--window", type=float, default=30, help="idle CPU window, s")
    ap.add_argument("--reps", type=int, default=2, help="idle CPU windows per runtime")
    ap.add_argument("--runs", type=int, default=10, help="`run --rm` runs per runtime")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--parallel", type=int, default=4, help="containers started at a time")
    ap.add_argument("--trees", default=str(REPO / "src"),
                    help="comma-separated steelcup source trees to measure, in order")
    ap.add_argument("--daemon-args", default="", help="extra `steelcup daemon` flags")
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--subnet", default="",
                    help="with --network: run the containers on a network of this subnet "
                         "(e.g. 10.214.0.0/22 for more than ~250 of them)")
    ap.add_argument("--min-available-mib", type=int, default=3072,
                    help="start no more containers once MemAvailable is below this")
    ap.add_argument("--network", action="store_true",
                    help="daemons with networking (a NIC per VM) in a network namespace of "
                         "the benchmark's own; default --no-networking")
    args = ap.parse_args()
    peer_rm = peer_argv("true")
    base = Path(tempfile.mkdtemp(prefix="scd-"))
    rows: list[Result] = []
    # {steelcup row: the podman runs interleaved with its runs}: the same machine, minute by
    # minute, is what its latency compares with.
    alongside: dict[str, Result] = {}
    try:
        for tree in args.trees.split(","):
            podman = Result("podman+runc, interleaved with the row above", args.count)
            res = steelcup(Path(tree).resolve(), args, base, peer_rm, podman)
            alongside[res.name] = podman
            rows += [res, podman]
        if not args.no_podman:
            rows.append(podman_idle(args, peer_rm))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ref = rows[-1] if not args.no_podman else None
    print(f"{args.count} idle `sleep 1d` containers per runtime; CPU over {args.reps} x "
          f"{args.window:.0f} s windows (each listed); `run --rm busybox true` {args.runs} runs "
          f"with the idle ones in the background; daemon flags: "
          f"{args.daemon_args or '(defaults)'}, "
          f"{'networking in a namespace of its own' if args.network else '--no-networking'}\n")
    print("| runtime | start N (s) | MemAvailable drop / container (MiB) | QEMU Pss (MiB) "
          "| QEMU private (MiB) | of which TCG cache / guest RAM / rest "
          "| template RAM, shared (MiB, all) | processes watched "
          "| idle CPU / VM or container (% of a core) "
          "| daemon CPU (%) | host busy (%) | run --rm p50 (ms) | p90 (ms) "
          "| p50 vs podman interleaved |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        p50 = statistics.median(r.run_rm_s) if r.run_rm_s else None
        peer = alongside.get(r.name)
        podman_p50 = statistics.median(peer.run_rm_s) if peer and peer.run_rm_s else None
        cpu = " / ".join(f"{v:.3f}" for v in r.cpu_pct_per)
        print(f"| {r.name} | {fmt(r.start_batch_s or None, '.1f')} "
              f"| {fmt(r.mem_drop_mib or None, '.1f')} | {fmt(r.pss_mib, '.1f')} "
              f"| {fmt(r.private_mib, '.1f')} | {split(r)} "
              f"| {fmt(r.template_ram_mib, '.0f')} | {r.units or ''} | {cpu} "
              f"| {' / '.join(f'{v:.2f}' for v in r.daemon_pct)} "
              f"| {' / '.join(f'{v:.0f}' for v in r.host_busy_pct)} "
              f"| {fmt(p50 and p50 * 1000, '.0f')} "
              f"| {fmt(r.run_rm_s and pct(r.run_rm_s, 0.9) * 1000, '.0f')} "
              f"| {ratio(p50, podman_p50)} |")
    print("\nhost load average (1/5/15 min) after each row's idle windows: " + "; ".join(
        f"{r.name}: {' / '.join(f'{v:.1f}' for v in r.loadavg)}" for r in rows if r.loadavg))
    if ref is not None and ref.cpu_pct_per:
        for r in rows:
            if r.name not in alongside:
                continue
            ratio_mem = r.mem_drop_mib / ref.mem_drop_mib if ref.mem_drop_mib > 0 else None
            print(f"\n{r.name}: idle CPU per container "
                  f"{statistics.median(r.cpu_pct_per):.3f}% of a core vs podman's "
                  f"{statistics.median(ref.cpu_pct_per):.3f}%; memory per container "
                  f"{r.mem_drop_mib:.1f} vs {ref.mem_drop_mib:.1f} MiB"
                  + (f" ({ratio_mem:.1f}x)" if ratio_mem else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
