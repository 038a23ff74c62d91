"""Network and volume I/O: steelcup vs podman+runc, three throughputs, medians of N runs.

1. container -> container TCP on one user network, client reaching the server by name;
2. host -> published port on 127.0.0.1 (for steelcup: the host side of its network namespace);
3. sequential write (dd conv=fsync) and read of a file on a named volume.

steelcup's daemon runs in a network namespace this script creates (bridges, NAT and every packet
stay there); podman uses its own bridge network and publishes on 127.0.0.1 only. Clocks start
inside the container (busybox `adjtimex`, microseconds), so VM boot and container start are not
in the numbers. Prints a markdown table.

    sudo .venv/bin/python bench/net_volume.py [--runs 3] [--payload-mib 64] [--volume-mib 64]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peer import peer_argv  # noqa: E402
from tests.vm.support import (  # noqa: E402
    BUSYBOX_TAR,
    delete_netns,
    new_netns,
    our_qemus,
    start_daemon,
    stop_daemon,
)

SC_IMAGE = "steelcup/busybox"
PORT = 5001
HOST_PORT = 15001
MIB = 1 << 20
TAG = f"scb{os.getpid()}"  # prefix of every container, network and volume this run creates

# `$(adjtimex)` samples the clock with microsecond precision in both images (busybox `date`
# here has no %N and /proc/uptime only has 10 ms steps); the host parses the tv_sec/tv_usec
# lines in order.
STAMP = 'echo "STAMP $(adjtimex | sed -n "s/.*tv_sec: *//p;s/.*tv_usec: *//p" | tr "\\n" " ")"'

# busybox nc quits as soon as its peer half-closes, and a server whose stdin is /dev/null
# half-closes at once: so the server's stdin is a pipe that never delivers (sleep), and the
# server counts what it received (wc -c) so a short transfer is an error, not a fast run.
SERVER = f"sleep 100000 | nc -l -p {PORT} | wc -c"


def client_script(host: str, payload_mib: int) -> str:
    """Send the payload to host:PORT, retrying while the server is not listening yet; stamp
    the clock before and after the attempt that succeeded."""
    return (
        "for i in $(seq 300); do "
        f"{STAMP}; head -c {payload_mib * MIB} /dev/zero | nc {host} {PORT} && "
        f"{{ {STAMP}; exit 0; }}; sleep 0.2; done; exit 1"
    )


def volume_script(mib: int) -> str:
    return (
        f"{STAMP}; dd if=/dev/zero of=/data/f bs=1M count={mib} conv=fsync 2>&1 && {STAMP} && "
        f"dd if=/data/f of=/dev/null bs=1M 2>&1 && {STAMP}"
    )


def stamps(output: str) -> list[float]:
    """Seconds of each STAMP line of a script's output."""
    return [int(s) + int(u) / 1e6 for s, u in re.findall(r"^STAMP (\d+) (\d+)", output, re.M)]


@dataclass
class Engine:
    """One docker-like CLI (steelcup or podman) and where its host side runs."""

    name: str
    base: list[str]  # the CLI, up to and excluding the subcommand
    run_opts: list[str]  # options every `run` gets
    image: str
    env: dict[str, str]
    host_prefix: list[str] = field(default_factory=list)  # `ip netns exec NS` for steelcup
    last_output: str = ""

    def cli(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        result = subprocess.run([*self.base, *args], capture_output=True, env=self.env,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{self.name} {shlex.join(args)} -> {result.returncode}: "
                               f"{result.stderr.decode()[-1500:]}")
        return result.stdout.decode()

    def run_opts_detached(self) -> list[str]:
        return [o for o in self.run_opts if o != "--rm"]

    def run(self, opts: Sequence[str], script: str, timeout: float = 600) -> list[float]:
        """Run `script` in a container; the STAMP times it printed (guest clock, seconds)."""
        before = time.time()
        out = self.cli("run", *self.run_opts, *opts, self.image, "sh", "-c", script,
                       timeout=timeout)
        after = time.time()
        found = stamps(out)
        # A guest clock off from the host's would make the numbers meaningless (steelcup's
        # guest runs on refined-jiffies under TCG): its stamps must fall within the run.
        if not found or found[0] < before - 1 or found[-1] > after + 1:
            raise RuntimeError(f"{self.name}: stamps {found} outside [{before}, {after}]: "
                               f"{out[-800:]!r}")
        self.last_output = out
        return found

    def received(self, name: str, expect: int, timeout_s: float = 60) -> None:
        """Wait for the server `name` to log its byte count; it must be `expect`."""
        deadline = time.monotonic() + timeout_s
        logs = ""
        while time.monotonic() < deadline:
            logs = self.cli("logs", name, check=False).strip()
            if logs:
                break
            time.sleep(0.2)
        if logs != str(expect):
            raise RuntimeError(f"{self.name}: server {name} received {logs!r}, sent {expect}")


def container_to_container(engine: Engine, network: str, payload_mib: int, run: int) -> float:
    server = f"{TAG}-srv-{run}"
    engine.cli("run", "-d", *engine.run_opts_detached(), "--name", server, "--network",
               network, engine.image, "sh", "-c", SERVER)
    try:
        t = engine.run(["--network", network], client_script(server, payload_mib))
        if len(t) < 2:
            raise RuntimeError(f"{engine.name}: client printed no timing: "
                               f"{engine.last_output[-500:]!r}")
        engine.received(server, payload_mib * MIB)
        return payload_mib / (t[-1] - t[-2])
    finally:
        engine.cli("rm", "-f", server, check=False)


SENDER = """
import socket, sys, time
port, size = int(sys.argv[1]), int(sys.argv[2])
chunk = bytes(1 << 20)
deadline = time.monotonic() + 120
while True:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            start = time.perf_counter()
            left = size
            while left:
                left -= s.send(memoryview(chunk)[:min(left, len(chunk))])
            s.shutdown(socket.SHUT_WR)
            if s.recv(1):  # the server closes once it has read everything
                raise SystemExit("server sent data")
            print(time.perf_counter() - start)
            break
    except OSError:
        # Refused or reset: nothing (steelcup's loopback proxy: the container) listening yet.
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
"""


def host_to_published(engine: Engine, payload_mib: int, run: int) -> float:
    server = f"{TAG}-pub-{run}"
    engine.cli("run", "-d", *engine.run_opts_detached(), "--name", server, "-p",
               f"127.0.0.1:{HOST_PORT}:{PORT}", engine.image, "sh", "-c", SERVER)
    try:
        result = subprocess.run(
            [*engine.host_prefix, sys.executable, "-c", SENDER, str(HOST_PORT),
             str(payload_mib * MIB)], capture_output=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"{engine.name}: sender failed: {result.stderr.decode()[-800:]}")
        engine.received(server, payload_mib * MIB)
        return payload_mib / float(result.stdout.decode().strip())
    finally:
        engine.cli("rm", "-f", server, check=False)


def volume_io(engine: Engine, mib: int, run: int) -> tuple[float, float]:
    volume = f"{TAG}-vol-{run}"
    engine.cli("volume", "create", volume)
    try:
        t = engine.run(["-v", f"{volume}:/data"], volume_script(mib))
        out = engine.last_output
        if len(t) != 3 or out.count(f"{mib}+0 records out") != 2:
            raise RuntimeError(f"{engine.name}: dd output unexpected: {out[-800:]!r}")
        return mib / (t[1] - t[0]), mib / (t[2] - t[1])
    finally:
        engine.cli("volume", "rm", "-f", volume, check=False)


def measure(engines: Sequence[Engine], runs: int, payload_mib: int, volume_mib: int,
            log: Callable[[str], None]) -> dict[str, dict[str, list[float]]]:
    """Each engine's samples per metric; runs alternate between engines."""
    results: dict[str, dict[str, list[float]]] = {
        e.name: {k: [] for k in ("c2c", "pub", "vw", "vr")} for e in engines}
    network = f"{TAG}-net"
    with contextlib.ExitStack() as stack:
        for engine in engines:
            engine.cli("network", "create", network)
            stack.callback(engine.cli, "network", "rm", network, check=False)
        for run in range(runs):
            for engine in engines:
                mine = results[engine.name]
                mine["c2c"].append(container_to_container(engine, network, payload_mib, run))
                mine["pub"].append(host_to_published(engine, payload_mib, run))
                write, read = volume_io(engine, volume_mib, run)
                mine["vw"].append(write)
                mine["vr"].append(read)
                log(f"{engine.name} run {run + 1}: " + ", ".join(
                    f"{k}={v[-1]:.1f}" for k, v in mine.items()))
    return results


def peer_engine() -> Engine:
    prefix = peer_argv()
    at = prefix.index("run")
    # `--rm` stays for foreground runs; detached servers are removed with `rm -f`.
    return Engine("podman+runc", prefix[:at], prefix[at + 1:-1], prefix[-1], dict(os.environ))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--payload-mib", type=int, default=64)
    ap.add_argument("--volume-mib", type=int, default=64)
    args = ap.parse_args()

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    peer = peer_engine()
    with tempfile.TemporaryDirectory(prefix="scb-netvol-") as tmp:
        netns = new_netns("bench")
        try:
            daemon = start_daemon(Path(tmp) / "root", Path(tmp) / "s.sock", netns)
            try:
                daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
                ours = Engine("steelcup", [sys.executable, "-m", "steelcup"], ["--rm"],
                              SC_IMAGE, daemon.env, ["ip", "netns", "exec", netns])
                results = measure([ours, peer], args.runs, args.payload_mib,
                                  args.volume_mib, log)
            finally:
                stop_daemon(daemon)
                for line in our_qemus(tmp):
                    log(f"killing leftover QEMU {line}")
                    os.kill(int(line.split(":")[0]), 9)
        finally:
            delete_netns(netns)

    rows = (
        ("c2c", f"TCP container → container by name, {args.payload_mib} MiB (MiB/s)"),
        ("pub", f"TCP host → 127.0.0.1 published port, {args.payload_mib} MiB (MiB/s)"),
        ("vw", f"volume sequential write, dd bs=1M {args.volume_mib} MiB conv=fsync (MiB/s)"),
        ("vr", f"volume sequential read, dd bs=1M {args.volume_mib} MiB (MiB/s)"),
    )
    print(f"Network and volume I/O, median of {args.runs} runs, {os.cpu_count()} host CPUs\n")
    print("| metric | steelcup | podman+runc | ratio (steelcup ÷ podman) |")
    print("|---|---:|---:|---:|")
    for key, label in rows:
        ours_m = statistics.median(results["steelcup"][key])
        theirs_m = statistics.median(results["podman+runc"][key])
        print(f"| {label} | {ours_m:.1f} | {theirs_m:.1f} | {ours_m / theirs_m:.3f} |")
    print("\nall runs (MiB/s): " + "; ".join(
        f"{eng} {key}=[{', '.join(f'{v:.1f}' for v in vals)}]"
        for eng, res in results.items() for key, vals in res.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
