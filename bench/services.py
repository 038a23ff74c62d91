"""Benchmark: a 3-replica service from `docker service create` to all tasks running (and
healthy, with `--health`), behind its virtual IP with a published port, vs three `podman run
-d` of the same busybox httpd, interleaved in the same run; and the time until a replica
whose container was removed (`docker rm -f`) has a running replacement.

    .venv/bin/python bench/services.py [--runs 5] [--health]

The daemon runs with networking in a network namespace of its own (as the compat tests'),
with the warm VM cache; the docker CLI drives it. A service counts as up when `docker service
ls` shows 3/3 (tasks with a health check are running only once healthy); the podman side when
its three `run -d` have returned (podman has no readiness of its own to wait for).
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
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peer import peer_argv  # noqa: E402
from tests.vm.support import (  # noqa: E402
    BUSYBOX_TAR,
    delete_netns,
    new_netns,
    start_daemon,
    stop_daemon,
    wait_pool_ready,
)

SERVE = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"
DOCKER = shutil.which("docker") or "docker"


def docker(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([DOCKER, *args], capture_output=True, env=env, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])}: {result.stderr[-500:]!r}")
    return result.stdout.decode()


def wait_for(predicate: Callable[[], bool], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.05)


def replicas(env: dict[str, str], name: str) -> str:
    return docker(env, "service", "ls", "--filter", f"name={name}", "--format",
                  "{{.Replicas}}").strip()


def task_containers(env: dict[str, str], name: str) -> list[str]:
    return docker(env, "ps", "-q", "--filter",
                  f"label=com.docker.swarm.service.name={name}").split()


def converged(env: dict[str, str], name: str) -> bool:
    return replicas(env, name) == "3/3"


def replaced(env: dict[str, str], name: str, victim: str) -> bool:
    return converged(env, name) and victim not in task_containers(env, name)


def gone(env: dict[str, str], name: str) -> bool:
    return not task_containers(env, name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--health", action="store_true",
                        help="give the service a health check (1 s interval)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-services-"))
    netns = new_netns(f"b{os.urandom(2).hex()}")
    daemon = start_daemon(base / "root", base / "s.sock", netns)
    env = dict(os.environ, DOCKER_HOST=f"unix://{daemon.socket}",
               DOCKER_CONFIG=str(base / "docker"), DOCKER_CLI_HINTS="false")
    podman = peer_argv()
    podman_run = [a for a in podman if a != "--rm"]
    image = podman_run.pop()
    create_s: list[float] = []
    peer_s: list[float] = []
    replace_s: list[float] = []
    try:
        docker(env, "load", "-i", str(BUSYBOX_TAR))
        docker(env, "swarm", "init")
        wait_pool_ready(daemon)
        health = (["--health-cmd", "wget -qO /dev/null http://127.0.0.1/",
                   "--health-interval", "1s", "--health-retries", "2"]
                  if args.health else [])
        for run in range(args.runs):
            name = f"web{run}"
            start = time.perf_counter()
            docker(env, "service", "create", "-d", "--name", name, "--replicas", "3",
                   "--restart-delay", "0s", "-p", f"{18100 + run}:80", *health,
                   "steelcup/busybox", "sh", "-c", SERVE)
            wait_for(partial(converged, env, name))
            create_s.append(time.perf_counter() - start)

            victim = task_containers(env, name)[0]
            start = time.perf_counter()
            docker(env, "rm", "-f", victim)
            wait_for(partial(replaced, env, name, victim))
            replace_s.append(time.perf_counter() - start)
            docker(env, "service", "rm", name)

            ids = []
            start = time.perf_counter()
            for _ in range(3):
                ids.append(subprocess.run([*podman_run, "-d", image, "sh", "-c", SERVE],
                                          capture_output=True, check=True, text=True)
                           .stdout.strip())
            peer_s.append(time.perf_counter() - start)
            subprocess.run([podman[0], *podman[1:podman.index("run")], "rm", "-f", *ids],
                           capture_output=True, check=False)
            wait_for(partial(gone, env, name))
    finally:
        stop_daemon(daemon)
        delete_netns(netns)
        shutil.rmtree(base, ignore_errors=True)

    def row(what: str, values: list[float]) -> str:
        return (f"| {what} | {statistics.median(values):.2f} s | {min(values):.2f}–"
                f"{max(values):.2f} s |")
    print(f"runs: {args.runs}, health check: {'yes' if args.health else 'no'}\n")
    print("| measure | median | range |\n|---|---|---|")
    print(row("service create, 3 replicas, until 3/3", create_s))
    print(row("3 x podman run -d (runc)", peer_s))
    print(row("removed replica until replaced (3/3)", replace_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
