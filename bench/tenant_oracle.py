"""Benchmark: is another tenant's object told apart from a missing one by the time of the answer?

Starts a daemon with `--multi-tenant --allow-tcg --tls-listen` (no networking, no VM is
started), gives tenant A a container, an image and a volume, and has tenant B ask for each by
A's reference and by a reference nothing has, interleaved, over one keep-alive TLS connection.
Both must answer the same 404; the table shows the latency of each and the difference of the
medians, which should be within the noise (tenancy's "no existence oracle").

    .venv/bin/python bench/tenant_oracle.py [--rounds 2000]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.vm.support import BUSYBOX_TAR, start_daemon, stop_daemon  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client(url: str, certs: Path) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(str(certs / "cert.pem"), str(certs / "key.pem"))
    return httpx.Client(base_url=url, verify=context, timeout=30)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2000)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sco-"))
    port = free_port()
    daemon = start_daemon(base / "root", base / "s.sock", extra_args=(
        "--multi-tenant", "--allow-tcg", "--tls-listen", f"127.0.0.1:{port}",
        "--pool-size", "0"))
    try:
        for name in ("alice", "bob"):
            daemon.cli("tenant", "create", name, check=True)
            daemon.cli("tenant", "key", "create", name, "--out", str(base / name), check=True)
        url = f"https://127.0.0.1:{port}"
        with client(url, base / "alice") as alice, client(url, base / "bob") as bob:
            loaded = alice.post("/images/load", content=BUSYBOX_TAR.read_bytes())
            assert loaded.status_code == 200, loaded.text
            image = alice.get("/images/steelcup/busybox/json").json()["Id"]
            made = alice.post("/containers/create", params={"name": "web"},
                              json={"Image": "steelcup/busybox", "Cmd": ["true"]})
            assert made.status_code == 201, made.text
            assert alice.post("/volumes/create", json={"Name": "data"}).status_code == 201
            cid = made.json()["Id"]
            pairs = {
                "container by id": (f"/containers/{cid}/json", f"/containers/{'f' * 64}/json"),
                "container by name": ("/containers/web/json", "/containers/wxb/json"),
                "image by id": (f"/images/{image}/json", f"/images/sha256:{'e' * 64}/json"),
                "volume by name": ("/volumes/data", "/volumes/dxta"),
            }
            rows = []
            for what, (theirs, missing) in pairs.items():
                times: dict[str, list[float]] = {"theirs": [], "missing": []}
                for i in range(args.rounds + 50):
                    for kind, path in (("theirs", theirs), ("missing", missing)):
                        start = time.perf_counter()
                        answer = bob.get(path)
                        took = time.perf_counter() - start
                        assert answer.status_code == 404, (path, answer.text)
                        if i >= 50:  # warm-up
                            times[kind].append(took)
                a, m = times["theirs"], times["missing"]
                rows.append((what, statistics.median(a), pct(a, 0.99), statistics.median(m),
                             pct(m, 0.99)))
    finally:
        stop_daemon(daemon)
        shutil.rmtree(base, ignore_errors=True)
    print(f"Tenant B's GET of tenant A's object vs a missing one, {args.rounds} interleaved "
          "pairs each, one keep-alive TLS connection; both answer 404 with the same message.\n")
    print("| reference | A's: median | A's: p99 | missing: median | missing: p99 | "
          "median difference |")
    print("|---|---:|---:|---:|---:|---:|")
    for what, am, ap99, mm, mp99 in rows:
        print(f"| {what} | {am * 1e6:.0f} us | {ap99 * 1e6:.0f} us | {mm * 1e6:.0f} us | "
              f"{mp99 * 1e6:.0f} us | {(am - mm) * 1e6:+.0f} us |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
