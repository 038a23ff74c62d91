"""GET /metrics of a real daemon with real VMs: every documented family is there (parsed with
prometheus-client's own parser), and the figures move when a container runs."""

from __future__ import annotations

import http.client
import re
import socket
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.vm.support import Daemon, wait_until

pytestmark = pytest.mark.vm

IMG = "steelcup/busybox"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=30)
        self.path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)


def _scrape(daemon: Daemon) -> dict[str, list[tuple[dict[str, str], float]]]:
    conn = _UnixConnection(daemon.socket)
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    body = response.read().decode()
    assert response.status == 200, body
    assert response.getheader("Content-Type", "").startswith("text/plain; version=0.0.4")
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def _value(scraped: dict[str, list[tuple[dict[str, str], float]]], sample: str,
           **labels: str) -> float:
    return sum(v for got, v in scraped.get(sample, [])
               if all(got.get(k) == want for k, want in labels.items()))


def _documented() -> list[str]:
    """The sample names docs/operations.md lists (`steelcup_...` in its metrics table)."""
    return sorted(set(re.findall(r"^\| `(steelcup_[a-z_]+)`", DOCS.read_text(), re.M)))


def test_metrics_are_all_there_and_move_with_a_run(daemon: Daemon) -> None:
    before = _scrape(daemon)
    documented = _documented()
    assert len(documented) > 20
    cid = daemon.out("run", "-d", "--name", "metered", "--health-cmd", "true",
                     "--health-interval", "1s", IMG, "sh", "-c",
                     "while true; do :; done").strip()
    try:
        first = _scrape(daemon)
        starts = sum(_value(first, "steelcup_vm_starts_total", source=s)
                     for s in ("cache", "clone", "direct"))
        assert starts == sum(_value(before, "steelcup_vm_starts_total", source=s)
                             for s in ("cache", "clone", "direct")) + 1
        assert _value(first, "steelcup_vm_start_seconds_count") >= starts
        ours = {"id": cid[:12], "name": "metered", "tenant": ""}
        assert _value(first, "steelcup_container_memory_limit_bytes", **ours) > 0
        assert _value(first, "steelcup_container_host_memory_bytes", **ours) > 0
        assert _value(first, "steelcup_containers", state="running") >= 1
        assert _value(first, "steelcup_api_requests_total", route="/containers/create",
                      method="POST", code="201") >= 1
        cpu = _value(first, "steelcup_container_cpu_seconds_total", **ours)
        time.sleep(1)  # it spins: its VM's CPU time grows
        wait_until(lambda: _value(_scrape(daemon), "steelcup_container_cpu_seconds_total",
                                  **ours) > cpu, "CPU seconds growing")
        # Storage I/O: 8 MiB written to its root reach the host's storage through QEMU,
        # in the metrics and in docker's stats (one source for both).
        written = _value(_scrape(daemon), "steelcup_container_fs_write_bytes_total", **ours)
        daemon.out("exec", cid, "sh", "-c", "dd if=/dev/zero of=/io bs=1M count=8 && sync")
        grown = _value(_scrape(daemon), "steelcup_container_fs_write_bytes_total", **ours)
        assert grown - written >= 8 << 20, (written, grown)
        row = re.split(r"\s{2,}", daemon.out("stats", "--no-stream", cid).splitlines()[-1])
        block_write = row[6].split(" / ")[1]  # BLOCK I/O: read / write, docker's units
        assert block_write.endswith("MB") and float(block_write[:-2]) >= 8.3, row
        # Every family the docs list is present (a counter's samples end in _total, a
        # histogram's in _bucket/_sum/_count).
        # (The tenant families need tenants: tests/unit/test_metrics.py has them.)
        wait_until(lambda: _value(_scrape(daemon), "steelcup_container_health", **ours,
                                  status="healthy") == 1, "healthy")
        names = set(_scrape(daemon))
        missing = [d for d in documented if not d.startswith("steelcup_tenant_")
                   and not {d, f"{d}_total", f"{d}_count"} & names]
        assert not missing, f"documented but not served: {missing}"
    finally:
        daemon.out("rm", "-f", cid)
    after = _scrape(daemon)
    assert _value(after, "steelcup_container_memory_limit_bytes", id=cid[:12]) == 0
