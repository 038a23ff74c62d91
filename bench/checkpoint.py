"""Benchmark: container checkpoints and suspend (docs/checkpoints.md) against fresh starts.

Starts a private daemon (TCG, default pool: templates and a warm cache), then per round:
- a `--checkpointable` container is checkpointed (`checkpoint create`, the container exits) and
  the checkpoint's size is read: busybox, a shell counting in memory; debian-nginx, `nginx -g
  'daemon off;'` after a marker file was written into its root (which lives in guest RAM);
- `start --checkpoint` runs it on (timed until the CLI returns: the VM restored, its guest
  answered, the main process re-attached), and the counter is checked to go on (debian-nginx:
  the marker is still there and nginx's master still runs with the same pid);
- interleaved with fresh `run -d` of the same image, with and without `--checkpointable`, and
  podman+runc's `run -d` (the command from `peer-run --print`), each removed untimed (busybox
  runs `sleep 1000`, debian-nginx runs nginx).

Then, per round, time to the first byte of an HTTP answer from a web server on a published
port (127.0.0.1; busybox httpd, or nginx): of a suspended `--auto-suspend` container (the
client's connection wakes it), of a fresh `steelcup run -d`, and of a fresh `podman run -d`
(from just before the `run` command). Last, host cost of N idle `--checkpointable` web
servers, running and then suspended: their QEMUs' memory (PSS) and CPU, and the suspended
state on disk.

    PYTHONPATH=src .venv/bin/python bench/checkpoint.py [--runs 5] [--wake-runs 5] \
        [--density 20] [--image busybox|debian-nginx] [--memory 512m]

`--image debian-nginx` uses the Debian bookworm image bench/workloads.py builds and caches
(build/bench/debian-workloads; debootstrap on first use), imported into the daemon and into
podman. A `--checkpointable` container's root (~140 MB here) is copied into a tmpfs of half the
guest's memory, so its steelcup containers run with `-m` (`--memory`, default 512m for
debian-nginx: 256 MB of tmpfs; none for busybox), fresh ones too so the rows compare alike.

Prints markdown tables (median and worst of each).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peer import peer_argv  # noqa: E402
from bench.workloads import IMAGE_REF, ensure_rootfs, rootfs_tar  # noqa: E402
from steelcup.daemon import vm_run_dir  # noqa: E402
from tests.vm.support import (  # noqa: E402
    BUSYBOX_TAR,
    Daemon,
    delete_netns,
    new_netns,
    our_qemus,
    start_daemon,
    stop_daemon,
    wait_pool_ready,
    wait_until,
)

IMG = "steelcup/busybox"
COUNTER = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done"
HTTPD = "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 80 -h /www"
NGINX = ("nginx", "-g", "daemon off;")
PODMAN_DEBIAN = "localhost/scb-debian-workloads:latest"  # bench/workloads.py imports it so
# Written into a checkpointable nginx's root (guest RAM) before the checkpoint; read after.
NGINX_STATE = "cat /run/nginx.pid /marker"


@dataclass(frozen=True)
class Workload:
    """What each kind of row runs: `flags` go to every `steelcup run` of it."""

    label: str
    image: str
    flags: tuple[str, ...]
    checkpointed: tuple[str, ...]  # the container checkpointed and restored
    idle: tuple[str, ...]  # the fresh `run -d` rows
    web: tuple[str, ...]  # serves HTTP on port 80


def busybox() -> Workload:
    return Workload("busybox", IMG, (), ("sh", "-c", COUNTER), ("sleep", "1000"),
                    ("sh", "-c", HTTPD))


def debian_nginx(memory: str) -> Workload:
    return Workload(f"Debian nginx (-m {memory})", IMAGE_REF, ("-m", memory), NGINX, NGINX,
                    NGINX)
WAKE_PORT = 18301
# Connects to 127.0.0.1:PORT until an HTTP answer's first byte comes; prints when it first
# tried and when the byte came (epoch s).
FIRST_BYTE = """
import socket, sys, time
port, deadline = int(sys.argv[1]), time.time() + 120
tried = time.time()
while time.time() < deadline:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            if s.recv(1):
                print(tried, time.time())
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.005)
sys.exit("no answer")
"""


def timed(argv: list[str], env: dict[str, str] | None) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, env=env, timeout=300)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... exited {proc.returncode}: "
                           f"{proc.stderr[-500:]!r}")
    return wall, proc.stdout.decode()


def steelcup(daemon: Daemon, *args: str) -> tuple[float, str]:
    return timed([sys.executable, "-m", "steelcup", *args], daemon.env)


def ticks(daemon: Daemon, cid: str) -> list[int]:
    return [int(n) for n in re.findall(r"^tick (\d+)$", daemon.out("logs", cid), re.M)]


def podman_detached(image: str = "", *cmd: str) -> list[str]:
    """peer-run's podman command with `run --rm` made `run -d`, its image replaced by `image`
    (if given), then `cmd`."""
    argv = [("-d" if a == "--rm" else a) for a in peer_argv()]
    return [*argv[:-1], image or argv[-1], *cmd]


def podman_import(tar: Path) -> None:
    """The Debian rootfs as podman's PODMAN_DEBIAN, unless it is there already."""
    argv = peer_argv()
    base = argv[:argv.index("run")]
    if subprocess.run([*base, "image", "exists", PODMAN_DEBIAN]).returncode != 0:
        subprocess.run([*base, "import", str(tar), PODMAN_DEBIAN], check=True,
                       stdout=subprocess.DEVNULL, timeout=600)


def size_mb(daemon: Daemon, cid: str, name: str) -> float:
    path = daemon.root / "containers" / cid / "checkpoints" / name / "vm.state"
    return path.stat().st_size / 1e6


def first_byte_after(start: float | None, client: subprocess.Popen[bytes]) -> float:
    """Seconds from `start` (None: the client's first try) to the answer's first byte."""
    out, err = client.communicate(timeout=180)
    if client.returncode != 0:
        raise RuntimeError(f"first-byte client: {err[-500:]!r}")
    tried, answered = (float(x) for x in out.decode().split())
    return answered - (tried if start is None else start)


def wake_round(daemon: Daemon, netns: str, podman: list[str],
               work: Workload) -> dict[str, float]:
    """Time to first byte: a suspended container woken by the client, a fresh run, podman's
    (`podman`: its `run -d` command up to and with the image)."""
    times = {}
    in_ns = ["ip", "netns", "exec", netns, sys.executable, "-c", FIRST_BYTE, str(WAKE_PORT)]
    wait_pool_ready(daemon)
    _, out = steelcup(daemon, "run", "-d", *work.flags, "--checkpointable", "--auto-suspend",
                      "2s", "-p", f"127.0.0.1:{WAKE_PORT}:80", work.image, *work.web)
    cid = out.strip()
    wait_until(lambda: '"SteelcupSuspended":true' in daemon.out(
        "inspect", "-f", "{{json .State}}", cid).replace(" ", ""), "suspended", timeout_s=120)
    wait_pool_ready(daemon)
    times["suspended, woken by the connection"] = first_byte_after(
        None, subprocess.Popen(in_ns, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    daemon.out("rm", "-f", cid)
    wait_pool_ready(daemon)
    client = subprocess.Popen(in_ns, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    start = time.time()
    _, out = steelcup(daemon, "run", "-d", *work.flags, "-p", f"127.0.0.1:{WAKE_PORT}:80",
                      work.image, *work.web)
    times["steelcup run -d"] = first_byte_after(start, client)
    daemon.out("rm", "-f", out.strip())
    client = subprocess.Popen([sys.executable, "-c", FIRST_BYTE, str(WAKE_PORT + 1)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    start = time.time()
    _, out = timed([*podman[:-1], "-p", f"127.0.0.1:{WAKE_PORT + 1}:80", podman[-1],
                    *work.web], None)
    times["podman run -d"] = first_byte_after(start, client)
    subprocess.run(["podman", "rm", "-f", "-t", "0", out.strip()], capture_output=True,
                   timeout=120)
    return times


def nginx_state(daemon: Daemon, cid: str) -> str:
    """Its master's pid and the marker file, or "" while either is missing."""
    result = daemon.cli("exec", cid, "sh", "-c", NGINX_STATE)
    return result.stdout.decode() if result.returncode == 0 else ""


def checkpoint_round(daemon: Daemon, work: Workload, name: str) -> tuple[float, float, float]:
    """Checkpoint a running container and start it on from there: the create's time, the
    checkpoint's size and the restore's time, having checked the container went on."""
    wait_pool_ready(daemon)  # no cache refill competing for the CPU meanwhile
    _, out = steelcup(daemon, "run", "-d", *work.flags, "--checkpointable", work.image,
                      *work.checkpointed)
    cid = out.strip()
    state = ""
    if work.image == IMG:
        wait_until(lambda: len(ticks(daemon, cid)) >= 5, "ticks", timeout_s=60)
    else:
        wait_until(lambda: daemon.cli("exec", cid, "test", "-s", "/run/nginx.pid").returncode
                   == 0, "nginx's pid file", timeout_s=120)
        daemon.out("exec", cid, "sh", "-c", f"echo {cid} > /marker")
        state = nginx_state(daemon, cid)
    wait_pool_ready(daemon)
    create_s, _ = steelcup(daemon, "checkpoint", "create", cid, name)
    size = size_mb(daemon, cid, name)
    count = len(ticks(daemon, cid)) if work.image == IMG else 0
    start_s, _ = steelcup(daemon, "start", "--checkpoint", name, cid)
    if work.image == IMG:
        wait_until(lambda: len(ticks(daemon, cid)) > count, "ticks after the restore",
                   timeout_s=60)
        assert ticks(daemon, cid)[count] == count + 1, "the counter did not go on"
    else:
        after = nginx_state(daemon, cid)
        assert after == state, f"nginx did not go on: {state!r} before, {after!r} after"
    daemon.out("rm", "-f", cid)
    return create_s, size, start_s


def qemu_pids(daemon: Daemon) -> list[int]:
    return [int(line.split(":")[0]) for line in our_qemus(str(vm_run_dir(daemon.root)))]


def pss_bytes(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    found = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) * 1024 if found else 0


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_cost(daemon: Daemon, window_s: float) -> tuple[float, float, int]:
    """The daemon's QEMUs (the pool's too) and the daemon itself: memory (PSS, MB), CPU used
    over `window_s` (s), and how many QEMUs."""
    pids = [*qemu_pids(daemon), daemon.proc.pid]
    before = {pid: cpu_s(pid) for pid in pids}
    time.sleep(window_s)  # the measuring window itself
    used = sum(cpu_s(pid) - before[pid] for pid in pids if cpu_s(pid) > 0)
    return sum(pss_bytes(pid) for pid in pids) / 1e6, used, len(pids) - 1


def density(daemon: Daemon, n: int, window_s: float, work: Workload) -> list[tuple[str, str]]:
    """N idle --checkpointable web servers: running, then suspended."""
    wait_pool_ready(daemon)
    base = host_cost(daemon, window_s)
    cids = []
    for _ in range(n):
        wait_pool_ready(daemon)
        cids.append(steelcup(daemon, "run", "-d", *work.flags, "--checkpointable",
                             work.image, *work.web)[1].strip())
    wait_pool_ready(daemon)
    running = host_cost(daemon, window_s)
    began = time.perf_counter()
    for cid in cids:
        daemon.out("suspend", cid)
    suspend_s = time.perf_counter() - began
    wait_pool_ready(daemon)
    suspended = host_cost(daemon, window_s)
    disk = sum((daemon.root / "containers" / c / "suspended" / "suspend" / "vm.state").stat()
               .st_size for c in cids) / 1e6
    began = time.perf_counter()
    for cid in cids:
        daemon.out("resume", cid)
    resume_s = time.perf_counter() - began
    for cid in cids:
        daemon.out("rm", "-f", cid)

    def row(name: str, cost: tuple[float, float, int]) -> tuple[str, str]:
        return name, (f"{cost[2]} | {cost[0]:.0f} | {cost[1]:.2f} | "
                      f"{cost[1] / window_s * 100:.1f}%")

    return [row("pool only (template and warm cache)", base),
            row(f"{n} idle containers running", running),
            row(f"{n} containers suspended", suspended),
            ("suspended state on disk (MB, all)", f"{disk:.0f}"),
            (f"suspend all {n} (s, one after another)", f"{suspend_s:.1f}"),
            (f"resume all {n} (s, one after another)", f"{resume_s:.1f}")]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--wake-runs", type=int, default=5)
    ap.add_argument("--density", type=int, default=20)
    ap.add_argument("--window", type=float, default=20.0, help="CPU measuring window (s)")
    ap.add_argument("--image", choices=("busybox", "debian-nginx"), default="busybox")
    ap.add_argument("--memory", default="512m",
                    help="`-m` of debian-nginx's steelcup containers (its root is in RAM)")
    args = ap.parse_args()
    work = busybox() if args.image == "busybox" else debian_nginx(args.memory)
    tar = None
    if work.image == IMAGE_REF:
        tar = rootfs_tar(ensure_rootfs(lambda line: print(line, file=sys.stderr, flush=True)))
        podman_import(tar)
    base = Path(tempfile.mkdtemp(prefix="scck-"))
    # In a network namespace of its own, as the tests run it: `ip netns exec` also gives it a
    # mount namespace, so the containers' root mounts are not pinned by other programs' new
    # mount namespaces (which copy the host's mounts).
    netns = new_netns("bench-ckpt")
    daemon = start_daemon(base / "root", base / "s.sock", netns)
    rows: dict[str, list[float]] = {name: [] for name in (
        "checkpoint create (s)", "checkpoint size (MB)", "start --checkpoint (s)",
        "steelcup run -d --checkpointable (s)", "steelcup run -d (s)", "podman run -d (s)")}
    wakes: dict[str, list[float]] = {}
    dense: list[tuple[str, str]] = []
    try:
        if tar is None:
            daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        else:
            daemon.cli("import", str(tar), IMAGE_REF, timeout=600, check=True)
        wait_pool_ready(daemon)
        podman_image = PODMAN_DEBIAN if tar is not None else ""
        podman = podman_detached(podman_image, *work.idle)
        for i in range(args.runs):
            create_s, size, start_s = checkpoint_round(daemon, work, f"cp{i}")
            rows["checkpoint create (s)"].append(create_s)
            rows["checkpoint size (MB)"].append(size)
            rows["start --checkpoint (s)"].append(start_s)
            for name, flags in (("steelcup run -d --checkpointable (s)", ("--checkpointable",)),
                                ("steelcup run -d (s)", ())):
                wait_pool_ready(daemon)  # each fresh run gets a ready VM, as the restore may not
                wall, out = steelcup(daemon, "run", "-d", *work.flags, *flags, work.image,
                                     *work.idle)
                rows[name].append(wall)
                daemon.out("rm", "-f", out.strip())
            wall, out = timed(podman, None)
            rows["podman run -d (s)"].append(wall)
            subprocess.run(["podman", "rm", "-f", "-t", "0", out.strip()], capture_output=True,
                           timeout=120)
        for _ in range(args.wake_runs):
            for name, value in wake_round(daemon, netns, podman_detached(podman_image),
                                          work).items():
                wakes.setdefault(name, []).append(value)
        if args.density:
            dense = density(daemon, args.density, args.window, work)
    finally:
        stop_daemon(daemon)
        delete_netns(netns)
        shutil.rmtree(base, ignore_errors=True)
    print(f"{work.label}, {args.runs} rounds interleaved (TCG; default pool: warm cache of "
          "template clones; the restore is a fresh QEMU loading the checkpoint)\n")
    print("| measure | median | worst |")
    print("|---|---:|---:|")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values):.2f} | {max(values):.2f} |")
    if wakes:
        server = "busybox httpd" if work.image == IMG else f"{work.label}"
        print(f"\n{server}, time to the first byte of an HTTP answer (s), {args.wake_runs} "
              "rounds\n")
        print("| start | median | worst |")
        print("|---|---:|---:|")
        for name, values in wakes.items():
            print(f"| {name} | {statistics.median(values):.2f} | {max(values):.2f} |")
    if dense:
        print(f"\nhost cost, {args.window:.0f} s window (QEMUs of the daemon and the daemon "
              "itself)\n")
        print("| state | QEMUs | PSS (MB) | CPU (s) | CPU share |")
        print("|---|---:|---:|---:|---:|")
        for state, cells in dense:
            print(f"| {state} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
