"""Benchmark: `steelcup run --rm steelcup/busybox echo hi` vs podman+runc, interleaved.

Starts a private daemon (TCG) per VM-source mode, loads the busybox image, then alternates one
steelcup run with one podman run (the command from `peer-run --print`). Reports median and p99
of wall time and time-to-first-byte of stdout as a markdown table.

    .venv/bin/python bench/run_latency.py [--runs 30] [--modes template,direct]

`--modes` needs a daemon that reads STEELCUP_TEMPLATES (1 = template clones, 0 = direct boot).

The CLI is run as users run it: the `steelcup` console script of this Python, with its bytecode
cached like an installed package's (in a private PYTHONPYCACHEPREFIX, so the tree stays clean,
even if the shell sets PYTHONDONTWRITEBYTECODE; the warm-up runs fill it). `--no-bytecode-cache`
measures a CLI that compiles its modules on every start instead.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.vm.support import BUSYBOX_TAR, Daemon, start_daemon, stop_daemon  # noqa: E402

PEER_RUN = Path("/work/shared/tools/peer-run")
CMD = ("echo", "hi")


def peer_argv() -> list[str]:
    out = subprocess.run([str(PEER_RUN), "--print"], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1].split() + list(CMD)


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, bytes]:
    """(wall s, time to first stdout byte s, stdout) of one run."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            bufsize=0)
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    ttfb = time.perf_counter() - start
    rest, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]}... exited {proc.returncode}: {err[-500:]!r}")
    return wall, ttfb, first + rest


def steelcup_argv() -> list[str]:
    """The console script next to this interpreter; `python -m steelcup` if there is none."""
    script = Path(sys.executable).with_name("steelcup")
    return [str(script)] if script.exists() else [sys.executable, "-m", "steelcup"]


def cli_env(daemon: Daemon, pycache: Path | None) -> dict[str, str]:
    env = dict(daemon.env)
    if pycache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--modes", default="template,direct")
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="run the CLI without cached bytecode (as from a source tree with "
                         "PYTHONDONTWRITEBYTECODE=1)")
    args = ap.parse_args()
    peer = peer_argv()
    results: dict[str, tuple[list[float], list[float]]] = {}
    base = Path(tempfile.mkdtemp(prefix="scb-"))
    try:
        for mode in args.modes.split(","):
            os.environ["STEELCUP_TEMPLATES"] = "1" if mode == "template" else "0"
            daemon: Daemon = start_daemon(base / mode / "root", base / mode / "s.sock")
            try:
                daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
                sc_argv = [*steelcup_argv(), "run", "--rm", "steelcup/busybox", *CMD]
                env = cli_env(daemon, None if args.no_bytecode_cache else base / "pycache")
                walls: list[float] = []
                ttfbs: list[float] = []
                pw: list[float] = []
                pt: list[float] = []
                for i in range(args.warmup + args.runs):
                    w, t, out = timed(sc_argv, env)
                    assert out == b"hi\n", out
                    pw_i, pt_i, pout = timed(peer)
                    assert pout == b"hi\n", pout
                    if i >= args.warmup:
                        walls.append(w)
                        ttfbs.append(t)
                        pw.append(pw_i)
                        pt.append(pt_i)
                results[f"steelcup ({mode})"] = (walls, ttfbs)
                prev = results.get("podman+runc", ([], []))
                results["podman+runc"] = (prev[0] + pw, prev[1] + pt)
            finally:
                stop_daemon(daemon)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    podman_median = statistics.median(results["podman+runc"][0])
    print(f"`run --rm busybox {' '.join(CMD)}`, {args.runs} runs per steelcup mode, "
          "interleaved with podman (podman column pools all its runs); CLI: "
          f"`{' '.join(steelcup_argv())}`, bytecode "
          f"{'not cached' if args.no_bytecode_cache else 'cached'}\n")
    print("| runtime | runs | wall median | wall p99 | TTFB median | TTFB p99 | vs podman |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (walls, ttfbs) in results.items():
        med = statistics.median(walls)
        print(f"| {name} | {len(walls)} | {med * 1000:.0f} ms | {pct(walls, 0.99) * 1000:.0f} ms"
              f" | {statistics.median(ttfbs) * 1000:.0f} ms | {pct(ttfbs, 0.99) * 1000:.0f} ms"
              f" | {med / podman_median:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
