"""Benchmark: `steelcup run --rm steelcup/busybox echo hi` vs podman+runc, interleaved.

Starts a private daemon (TCG) per VM-source mode, loads the busybox image, then alternates one
steelcup run with one podman run (the command from `peer-run --print`). Reports median and p99
of wall time and time-to-first-byte of stdout as a markdown table.

    .venv/bin/python bench/run_latency.py [--runs 30] [--modes cache,template,direct] [--docker]

Modes are daemon configurations: `cache` (the default daemon: ready VMs from the warm cache),
`template` (`--pool-size 0`: a template clone restored per run), `direct` (`--no-templates`:
a cold boot per run). Timing starts once the daemon's templates and cache are ready. With
`--docker`, the cache mode also times the same run through the real `docker` CLI
(`docker -H unix://...`), interleaved too. With `--tenant`, the cache-mode daemon also serves
tenants (`--multi-tenant --allow-tcg --tls-listen`), and the same run is timed as a tenant
over TLS (a client certificate from `tenant key create`, checked on every request) next to
the operator's over the unix socket: the cost of authentication and TLS per run.

The CLI is run as users run it: the `steelcup` console script of this Python, with its bytecode
cached like an installed package's (in a private PYTHONPYCACHEPREFIX, so the tree stays clean,
even if the shell sets PYTHONDONTWRITEBYTECODE; the warm-up runs fill it). `--no-bytecode-cache`
measures a CLI that compiles its modules on every start instead.
"""

from __future__ import annotations

import argparse
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
from tests.vm.support import (  # noqa: E402
    BUSYBOX_TAR,
    Daemon,
    start_daemon,
    stop_daemon,
    wait_pool_ready,
)

CMD = ("echo", "hi")
MODES = {"cache": (), "template": ("--pool-size", "0"), "direct": ("--no-templates",)}


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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tenant_env(daemon: Daemon, env: dict[str, str], port: int, certs: Path
               ) -> dict[str, str]:
    """A tenant with a key, its own busybox and a warm template: the CLI's environment."""
    daemon.cli("tenant", "create", "bench", check=True)
    daemon.cli("tenant", "key", "create", "bench", "--out", str(certs), check=True)
    tenant = dict(env, DOCKER_HOST=f"tcp://127.0.0.1:{port}", DOCKER_TLS_VERIFY="1",
                  DOCKER_CERT_PATH=str(certs))
    tenant.pop("STEELCUP_HOST", None)
    for argv in (["load", "-i", str(BUSYBOX_TAR)], ["run", "--rm", "steelcup/busybox", "true"]):
        subprocess.run([*steelcup_argv(), *argv], env=tenant, check=True, capture_output=True)
    wait_pool_ready(daemon, cache=True)
    return tenant


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--modes", default="cache,template,direct")
    ap.add_argument("--daemon-args", default="",
                    help="extra `steelcup daemon` flags for every mode, e.g. '--tcg-tb-size 8'")
    ap.add_argument("--docker", action="store_true",
                    help="also time the run through the real docker CLI (cache mode)")
    ap.add_argument("--tenant", action="store_true",
                    help="also time the run as a tenant over the TLS listener (cache mode)")
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="run the CLI without cached bytecode (as from a source tree with "
                         "PYTHONDONTWRITEBYTECODE=1)")
    args = ap.parse_args()
    peer = peer_argv(*CMD)
    results: dict[str, tuple[list[float], list[float]]] = {}
    base = Path(tempfile.mkdtemp(prefix="scb-"))
    try:
        for mode in args.modes.split(","):
            tenant = args.tenant and mode == "cache"
            port = free_port()
            listener = ("--multi-tenant", "--allow-tcg", "--tls-listen",
                        f"127.0.0.1:{port}") if tenant else ()
            daemon: Daemon = start_daemon(base / mode / "root", base / mode / "s.sock",
                                          extra_args=(*MODES[mode], *args.daemon_args.split(),
                                                      *listener))
            try:
                daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
                if mode != "direct":
                    wait_pool_ready(daemon, cache=mode == "cache")
                env = cli_env(daemon, None if args.no_bytecode_cache else base / "pycache")
                run_argv = [*steelcup_argv(), "run", "--rm", "steelcup/busybox", *CMD]
                clients = {f"steelcup ({mode})": run_argv}
                envs: dict[str, dict[str, str]] = {}
                if tenant:
                    envs["steelcup, tenant over TLS"] = tenant_env(daemon, env, port,
                                                                  base / "bench-tenant")
                    clients["steelcup, tenant over TLS"] = run_argv
                if args.docker and mode == "cache":
                    clients[f"docker CLI ({mode})"] = [
                        "docker", "-H", f"unix://{daemon.socket}", "run", "--rm",
                        "steelcup/busybox", *CMD]
                times: dict[str, tuple[list[float], list[float]]] = {
                    name: ([], []) for name in [*clients, "podman+runc"]}
                for i in range(args.warmup + args.runs):
                    for name, argv in [*clients.items(), ("podman+runc", peer)]:
                        w, t, out = timed(argv, None if name == "podman+runc"
                                          else envs.get(name, env))
                        assert out == b"hi\n", (name, out)
                        if i >= args.warmup:
                            times[name][0].append(w)
                            times[name][1].append(t)
                for name, (walls, ttfbs) in times.items():
                    prev = results.get(name, ([], []))
                    results[name] = (prev[0] + walls, prev[1] + ttfbs)
            finally:
                stop_daemon(daemon)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    podman_median = statistics.median(results["podman+runc"][0])
    print(f"`run --rm busybox {' '.join(CMD)}`, {args.runs} runs per steelcup mode, "
          "interleaved with podman (podman column pools all its runs); CLI: "
          f"`{' '.join(steelcup_argv())}`, bytecode "
          f"{'not cached' if args.no_bytecode_cache else 'cached'}; daemon flags: "
          f"{args.daemon_args or '(defaults)'}\n")
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
