"""Throughput through a floating IP vs a published port, same container, same run (issue 15's
closing figure).

A daemon of its own runs in a network namespace this script makes, with `--fip-pool` routed
on one end of a veth whose other end is an "outside" namespace (nothing leaves the two). One
container serves a file with busybox httpd, with a FIP attached and port 80 published; the
outside downloads it alternately through `http://FIP/` (1:1 NAT) and
`http://HOST:PORT/` (the published port's DNAT), timing each download from the outside.
Prints a markdown table with the medians and the ratio.

    sudo .venv/bin/python bench/fip.py [--runs 5] [--payload-mib 32]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.vm.support import (  # noqa: E402
    BUSYBOX_TAR,
    delete_netns,
    in_netns,
    new_netns,
    start_daemon,
    stop_daemon,
)

POOL = "198.51.100.16/28"
OUTSIDE_IP = "198.51.100.1"
HOST_IP = "198.51.100.2"
HOST_PORT = 15080
MIB = 1 << 20
# Downloads the URL, checks its size, prints the seconds it took (from the outside).
FETCH = """
import sys, time, urllib.request
start = time.monotonic()
with urllib.request.urlopen(sys.argv[1], timeout=120) as r:
    n = 0
    while chunk := r.read(1 << 20):
        n += len(chunk)
took = time.monotonic() - start
assert n == int(sys.argv[2]), (n, sys.argv[2])
print(took)
"""


def _fetch(outside: str, url: str, size: int) -> float:
    run = in_netns(outside, sys.executable, "-c", FETCH, url, str(size), timeout=300)
    if run.returncode != 0:
        raise SystemExit(f"download of {url} failed: {run.stderr.decode()[-500:]}")
    return float(run.stdout.decode().split()[-1])


def _wait(outside: str, url: str, size: int) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            _fetch(outside, url, size)
            return
        except SystemExit:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--payload-mib", type=int, default=32)
    args = ap.parse_args()
    size = args.payload_mib * MIB
    inner, outside = new_netns("bfipd"), new_netns("bfipo")
    tmp = Path(tempfile.mkdtemp(prefix="bench-fip-"))
    daemon = None
    try:
        subprocess.run(["ip", "-n", inner, "link", "add", "bfd0", "type", "veth", "peer",
                        "name", "bfo0", "netns", outside], check=True)
        subprocess.run(["ip", "-n", inner, "addr", "add", f"{HOST_IP}/24", "dev", "bfd0"],
                       check=True)
        subprocess.run(["ip", "-n", inner, "link", "set", "bfd0", "up"], check=True)
        subprocess.run(["ip", "-n", outside, "addr", "add", f"{OUTSIDE_IP}/24", "dev", "bfo0"],
                       check=True)
        subprocess.run(["ip", "-n", outside, "link", "set", "bfo0", "up"], check=True)
        daemon = start_daemon(tmp / "root", tmp / "run" / "steelcup.sock", inner, extra_args=(
            "--fip-pool", POOL, "--fip-interface", "bfd0"))
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        fip = daemon.out("fip", "allocate").strip()
        daemon.out("run", "-d", "--name", "bfip", "--fip", fip, "-p", f"{HOST_PORT}:80",
                   "steelcup/busybox", "sh", "-c",
                   f"mkdir -p /www && head -c {size} /dev/zero > /www/big && "
                   "exec httpd -f -p 80 -h /www")
        urls = {"floating IP": f"http://{fip}/big",
                "published port": f"http://{HOST_IP}:{HOST_PORT}/big"}
        for url in urls.values():
            _wait(outside, url, size)
        took: dict[str, list[float]] = {k: [] for k in urls}
        for _ in range(args.runs):
            for kind, url in urls.items():  # alternating, run by run
                took[kind].append(_fetch(outside, url, size))
        mbit = {k: args.payload_mib * 8 * 1.048576 / statistics.median(v)
                for k, v in took.items()}
        print(f"{args.payload_mib} MiB download from the outside namespace, {args.runs} runs "
              "each, alternating; medians\n")
        print("| path | median s | Mbit/s |")
        print("|---|---|---|")
        for kind in urls:
            print(f"| {kind} | {statistics.median(took[kind]):.3f} | {mbit[kind]:.0f} |")
        print(f"\nfloating IP / published port throughput: "
              f"{mbit['floating IP'] / mbit['published port']:.2f}x")
        return 0
    finally:
        if daemon is not None:
            daemon.cli("rm", "-f", "bfip")
            stop_daemon(daemon)
        delete_netns(inner)
        delete_netns(outside)
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    sys.exit(main())
