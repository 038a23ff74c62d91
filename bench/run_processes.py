"""Benchmark: the processes the daemon starts per `run --rm`, by program, per source tree.

For each source tree (`--trees`, a `src` directory; its daemon imports from there) a daemon
with networking runs in a network namespace of the benchmark's own (as the VM tests do). Once
its warm cache is full, `strace -f` follows the daemon (every thread and every child) while
the CLI runs `--runs` containers one after another, for each kind of run:
- `net`: `run --rm busybox true` on the default network;
- `port`: the same with a published port (`-p HOST:80`).
Each successful `execve` is one process the run made the host start (QEMU for the warm
cache's refill included: a hand-out is replaced by a new VM). The table gives the execs per
run by program, so before and after a change are compared in one sitting:

    git archive BEFORE src | tar -x -C /tmp/before
    .venv/bin/python bench/run_processes.py --trees /tmp/before/src,src --runs 5

The guest assets are this tree's build/ for every tree (the guest protocol is append-only).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.vm.support import (  # noqa: E402
    BUSYBOX_TAR,
    Daemon,
    delete_netns,
    new_netns,
    stop_daemon,
    wait_pool_ready,
)

ASSETS = REPO / "build" / "guest"
EXEC_RE = re.compile(r'^\d+\s+execve\("([^"]+)".*= 0$')
KINDS = {"net": (), "port": ("-p", "18080:80")}


def supports(tree: Path, flag: str) -> bool:
    """Whether this tree's `steelcup daemon` takes `flag` (older trees lack newer flags)."""
    out = subprocess.run([sys.executable, "-m", "steelcup", "daemon", "--help"],
                         capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(tree))).stdout
    return flag in out


def start(tree: Path, work: Path, netns: str) -> Daemon:
    root, sock = work / "root", work / "s.sock"
    root.mkdir(parents=True)
    args = ["--no-live-restore"] if supports(tree, "--no-live-restore") else []
    log = root / "daemon.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "steelcup", "daemon",
             "--root", str(root), "--socket", str(sock), "--accel", "tcg", *args],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"daemon of {tree} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)
    return Daemon(root, sock, proc, log, netns)


def daemon_pid(daemon: Daemon) -> int:
    """The Python daemon under `ip netns exec` (which execs it: the same pid)."""
    return daemon.proc.pid


def count_execs(trace: Path, show: bool) -> Counter[str]:
    programs: Counter[str] = Counter()
    for line in trace.read_text(errors="replace").splitlines():
        m = EXEC_RE.match(line)
        if m:
            programs[os.path.basename(m.group(1))] += 1
            if show:
                print(line[:300], file=sys.stderr)
    return programs


def measure(tree: Path, runs: int, base: Path, show: bool) -> dict[str, Counter[str]]:
    os.environ["PYTHONPATH"] = str(tree)
    os.environ.setdefault("STEELCUP_ASSETS", str(ASSETS))
    work = base / f"t{len(list(base.iterdir()))}"
    netns = new_netns(f"procs{len(list(base.iterdir()))}")
    daemon = start(tree, work, netns)
    result: dict[str, Counter[str]] = {}
    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        for kind, flags in KINDS.items():
            daemon.cli("run", "--rm", *flags, "steelcup/busybox", "true", check=True)  # warm
            wait_pool_ready(daemon)
            time.sleep(2)
            trace = work / f"{kind}.strace"
            tracer = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=execve",
                                       "-e", "signal=none", "-o", str(trace),
                                       "-p", str(daemon_pid(daemon))],
                                      stderr=subprocess.DEVNULL)
            time.sleep(1)  # attached to every thread
            for _ in range(runs):
                daemon.cli("run", "--rm", *flags, "steelcup/busybox", "true", check=True)
            wait_pool_ready(daemon)  # the refills are part of a run's cost
            time.sleep(2)
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
            result[kind] = count_execs(trace, show)
    finally:
        stop_daemon(daemon)
        delete_netns(netns)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trees", default=str(REPO / "src"),
                    help="comma-separated steelcup source trees to measure, in order")
    ap.add_argument("--runs", type=int, default=5, help="runs per kind and tree")
    ap.add_argument("--show", action="store_true", help="print each exec (to stderr)")
    args = ap.parse_args()
    if shutil.which("strace") is None:
        raise SystemExit("bench/run_processes.py needs strace (apt-get install strace)")
    base = Path(tempfile.mkdtemp(prefix="scp-"))
    rows: list[tuple[str, str, Counter[str]]] = []
    try:
        for tree in args.trees.split(","):
            for kind, programs in measure(Path(tree).resolve(), args.runs, base, args.show).items():
                rows.append((tree, kind, programs))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"processes the daemon started per `run --rm busybox true`, {args.runs} runs each "
          f"(net: default network; port: plus -p 18080:80)\n")
    print("| tree | run | all | by program |")
    print("|---|---|---:|---|")
    for tree, kind, programs in rows:
        per = {p: n / args.runs for p, n in programs.most_common()}
        listed = ", ".join(f"{p} {n:g}" for p, n in per.items()) or "none"
        print(f"| {tree} | {kind} | {sum(programs.values()) / args.runs:g} | {listed} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
