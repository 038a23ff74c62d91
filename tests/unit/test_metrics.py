"""The metrics' pure parts, and the --metrics-listen listener: /metrics and nothing else."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
from prometheus_client.parser import text_string_to_metric_families

from steelcup import config
from steelcup.daemon import _metrics_server
from steelcup.metrics import ContainerFigures, Metrics, container_families, parse_private_kib
from steelcup.vm.hostio import HostIo


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(metrics.render().decode()) for s in f.samples}


def test_the_taps_receive_side_is_what_the_container_sent() -> None:
    figures = ContainerFigures(labels=("abc", "web", "nginx", "alice"), cpu_seconds=None,
                               memory_limit_bytes=1 << 30, host_memory_bytes=None, io=None,
                               restarts=2,
                               health="unhealthy",
                               nics=(("eth0", {"rx_bytes": 10, "tx_bytes": 700,
                                               "rx_packets": 1, "tx_packets": 7}),))
    got = {(s.name, s.labels.get("interface", ""), s.labels.get("status", "")): s.value
           for f in container_families([figures]) for s in f.samples}
    assert got[("steelcup_container_network_receive_bytes_total", "eth0", "")] == 700
    assert got[("steelcup_container_network_transmit_bytes_total", "eth0", "")] == 10
    assert got[("steelcup_container_network_receive_packets_total", "eth0", "")] == 7
    assert got[("steelcup_container_health", "", "unhealthy")] == 1
    assert got[("steelcup_container_restarts_total", "", "")] == 2
    assert not any(name.startswith("steelcup_container_cpu") for name, _, _ in got)


def test_private_memory_sums_clean_and_dirty() -> None:
    rollup = ("55d0-7ff [rollup]\nRss:  41000 kB\nPss:  30000 kB\nShared_Clean: 9000 kB\n"
              "Private_Clean: 1200 kB\nPrivate_Dirty: 33000 kB\nSwap: 0 kB\n")
    assert parse_private_kib(rollup) == 34200


def test_requests_and_vm_starts_are_counted_by_label() -> None:
    metrics = Metrics()
    metrics.observe_request("POST", "/containers/{id}/start", 204, 0.003)
    metrics.observe_request("POST", "/containers/{id}/start", 204, 0.2)
    metrics.observe_vm_start("cache", 0.05, True)
    metrics.observe_vm_start("clone", 1.0, False)
    got = _samples(metrics)
    route = ("route", "/containers/{id}/start")
    assert got[("steelcup_api_requests_total", (("code", "204"), ("method", "POST"), route))] == 2
    assert got[("steelcup_api_request_seconds_count", (route,))] == 2
    assert got[("steelcup_api_request_seconds_bucket", (("le", "0.005"), route))] == 1
    assert got[("steelcup_vm_starts_total", (("source", "cache"),))] == 1
    assert got[("steelcup_vm_starts_total", (("source", "direct"),))] == 0
    assert got[("steelcup_vm_start_failures_total", (("source", "clone"),))] == 1


def test_the_metrics_listener_serves_metrics_and_nothing_else() -> None:
    metrics = Metrics()
    options = dataclasses.replace(config.DaemonOptions(), metrics_listen=("127.0.0.1", 0))

    async def scenario() -> None:
        server = _metrics_server(options, metrics)
        assert server is not None
        await server.start()
        try:
            url = f"http://127.0.0.1:{server.tcp_port}"
            async with httpx.AsyncClient(base_url=url) as client:
                answer = await client.get("/metrics")
                assert answer.status_code == 200
                assert "steelcup_vm_starts_total" in answer.text
                assert (await client.post("/containers/create", json={})).status_code == 404
                assert (await client.get("/info")).status_code == 404
        finally:
            await server.close()

    asyncio.run(scenario())
    assert _metrics_server(config.DaemonOptions(), metrics) is None


def test_storage_io_is_a_pair_of_counters_per_container() -> None:
    figures = ContainerFigures(labels=("abc", "web", "nginx", "alice"), cpu_seconds=None,
                               memory_limit_bytes=1 << 30, host_memory_bytes=None,
                               io=HostIo(read_bytes=4096, write_bytes=8 << 20), restarts=0,
                               health="", nics=())
    got = {s.name: s.value for f in container_families([figures]) for s in f.samples}
    assert got["steelcup_container_fs_read_bytes_total"] == 4096
    assert got["steelcup_container_fs_write_bytes_total"] == 8 << 20
    unread = dataclasses.replace(figures, io=None)
    assert not any(s.name.startswith("steelcup_container_fs")
                   for f in container_families([unread]) for s in f.samples)
