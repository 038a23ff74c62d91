"""Benchmark: a 6-step Dockerfile built by steelcup (every RUN in a VM) and by `podman build`
(buildah, runc), cold (--no-cache) and fully cached, interleaved.

    .venv/bin/python bench/build.py [--runs 5] [--docker]

Starts a private daemon (TCG, the default VM cache), loads the busybox image, and builds the
same context with each builder: the Dockerfile's FROM is steelcup/busybox for steelcup and
podman's peer image (the same busybox binary, see bench/peer.py) for podman. With `--docker`,
the real docker CLI's classic builder (DOCKER_BUILDKIT=0) is timed against the same daemon too.
Prints a markdown table of median and max wall times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peer import peer_argv  # noqa: E402
from bench.run_latency import cli_env, steelcup_argv  # noqa: E402
from tests.vm.support import BUSYBOX_TAR, start_daemon, stop_daemon, wait_pool_ready  # noqa: E402

DOCKERFILE = """\
FROM {image}
WORKDIR /app
COPY data.txt ./
RUN for i in 1 2 3; do cat data.txt >> out.txt; done
RUN wc -l out.txt > count.txt
CMD ["cat", "/app/count.txt"]
"""


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, env=env)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{argv[:4]}... exited {result.returncode}: "
                           f"{(result.stdout + result.stderr)[-800:]!r}")
    return wall


def context(base: Path, image: str) -> Path:
    ctx = base / image.replace("/", "_").replace(":", "_")
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE.format(image=image))
    (ctx / "data.txt").write_text("a line\n")
    return ctx


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--docker", action="store_true", help="also the docker CLI")
    args = parser.parse_args()
    peer = peer_argv()  # podman ... run --rm <image>: the global flags and the image
    podman_globals = peer[:peer.index("run")]
    podman_image = peer[-1]
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        base = Path(tmp)
        daemon = start_daemon(base / "root", base / "run" / "steelcup.sock")
        try:
            env = cli_env(daemon, base / "pycache")
            subprocess.run([*steelcup_argv(), "load", "-i", str(BUSYBOX_TAR)], env=env,
                           check=True, capture_output=True)
            wait_pool_ready(daemon, cache=True)
            ours = context(base, "steelcup/busybox")
            theirs = context(base, podman_image)
            builders: dict[str, tuple[list[str], list[str], dict[str, str] | None]] = {
                "steelcup build": ([*steelcup_argv(), "build", "-q", "-t", "bench", str(ours)],
                                   ["--no-cache"], env),
                "podman build": ([*podman_globals, "build", "-q", "--ulimit", "nofile=1024:1024",
                                  "--ulimit", "nproc=1024:1024", "-t", "bench",
                                  str(theirs)], ["--no-cache"], None),
            }
            if args.docker:
                docker_env = dict(os.environ, DOCKER_HOST=f"unix://{daemon.socket}",
                                  DOCKER_BUILDKIT="0", DOCKER_CLI_HINTS="false")
                builders["docker build (classic) → steelcup"] = (
                    ["docker", "build", "-q", "-t", "bench", str(ours)], ["--no-cache"],
                    docker_env)
            results: dict[str, dict[str, list[float]]] = {
                name: {"cold": [], "cached": []} for name in builders}
            for argv, _no_cache, benv in builders.values():  # warm-up: fills each cache
                timed(argv, benv)
            for _ in range(args.runs):
                for name, (argv, no_cache, benv) in builders.items():
                    cold = [*argv[:-1], *no_cache, argv[-1]]
                    results[name]["cold"].append(timed(cold, benv))
                    results[name]["cached"].append(timed(argv, benv))
        finally:
            stop_daemon(daemon)
    print(f"6-step Dockerfile (2 RUN steps), {args.runs} runs each, interleaved; "
          "cold = --no-cache, cached = an unchanged rebuild")
    print()
    print("| builder | cold median | cold max | cached median | cached max |")
    print("|---|---|---|---|---|")
    for name, times in results.items():
        print(f"| {name} | {statistics.median(times['cold']):.2f} s | "
              f"{max(times['cold']):.2f} s | {statistics.median(times['cached']):.2f} s | "
              f"{max(times['cached']):.2f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
