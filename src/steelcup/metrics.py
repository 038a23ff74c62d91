"""The daemon's Prometheus metrics (docs/operations.md): what happened (API requests, VM
starts by source, their latency and failures, event-loop lag) as counters and histograms the
layers report into, and what is (containers, the pool, each container's resources, each
tenant's objects against its quotas and its container-seconds) read at each scrape.

Served as `GET /metrics` on the operator's socket and, with `--metrics-listen ADDR:PORT`, on a
plain HTTP listener of its own; never to a tenant.

Per-container series carry the labels id (12 characters), name, image and tenant: their number
is bounded by the running containers (a stopped container has none), at most a few hundred per
host. Per-tenant series are bounded by the tenants.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from steelcup.errors import SteelcupError
from steelcup.vm.hostio import HostIo, read_host_io

if TYPE_CHECKING:
    from steelcup.net.manager import NetworkManager
    from steelcup.pool.factory import Factory
    from steelcup.runtime.containers import Runtime
    from steelcup.tenancy.manager import Tenants

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: an API call answers in ms; a VM start takes 0.1 s (a ready VM) to ~10 s (a boot
# under TCG).
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
START_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
LOOP_LAG_PERIOD_S = 1.0

# The VM sources a start reports (pool/factory.py).
SOURCES = ("cache", "clone", "direct")


class Metrics:
    """One daemon's registry: the counters and histograms its layers report into, and the
    collectors that read its state at each scrape (`watch`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("steelcup_api_requests", "API requests answered",
                                ["method", "route", "code"], registry=r)
        self.request_seconds = Histogram(
            "steelcup_api_request_seconds",
            "Time to answer an API request (to the first byte of a streamed answer)",
            ["route"], buckets=REQUEST_BUCKETS, registry=r)
        self.vm_starts = Counter("steelcup_vm_starts", "VMs handed to containers, by source "
                                 "(cache: a ready VM; clone: a template clone; direct: a boot)",
                                 ["source"], registry=r)
        self.vm_start_seconds = Histogram(
            "steelcup_vm_start_seconds", "Time to get a VM for a container, by source",
            ["source"], buckets=START_BUCKETS, registry=r)
        self.vm_start_failures = Counter(
            "steelcup_vm_start_failures", "VM starts that failed (the source that failed)",
            ["source"], registry=r)
        self.loop_lag = Gauge("steelcup_event_loop_lag_seconds",
                              "How late the daemon's event loop ran a 1 s timer, last time",
                              registry=r)
        for source in SOURCES:  # present from the start: rate() needs the zero
            self.vm_starts.labels(source)
            self.vm_start_failures.labels(source)

    # -- what the layers report ---------------------------------------------------------------

    def observe_request(self, method: str, route: str, code: int, seconds: float) -> None:
        self.requests.labels(method, route, str(code)).inc()
        self.request_seconds.labels(route).observe(seconds)

    def observe_vm_start(self, source: str, seconds: float, ok: bool) -> None:
        if ok:
            self.vm_starts.labels(source).inc()
            self.vm_start_seconds.labels(source).observe(seconds)
        else:
            self.vm_start_failures.labels(source).inc()

    # -- what is read at a scrape ---------------------------------------------------------------

    def watch(self, collector: Collector) -> None:
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def measure_loop_lag(self, period_s: float = LOOP_LAG_PERIOD_S) -> None:
        """Forever: how much later than asked a timer fires (a busy loop answers late)."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(period_s)
            self.loop_lag.set(max(0.0, loop.time() - before - period_s))


@dataclass(frozen=True)
class ContainerFigures:
    """One running container's resources as the host sees them."""

    labels: tuple[str, str, str, str]  # id, name, image, tenant
    cpu_seconds: float | None
    memory_limit_bytes: int
    host_memory_bytes: int | None
    io: HostIo | None  # the storage I/O its QEMU caused (docker stats' BlockIO)
    restarts: int
    health: str  # "" without a health check
    nics: tuple[tuple[str, dict[str, int]], ...]  # (ethN, tap statistics)


CONTAINER_LABELS = ["id", "name", "image", "tenant"]
TAP_COUNTERS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")


class StateCollector(Collector):
    """Reads the daemon's state at each scrape: containers by state, the pool, each running
    container's figures, each tenant's quotas and use."""

    def __init__(self, runtime: Runtime, pool: Factory | None, tenants: Tenants | None = None,
                 networks: NetworkManager | None = None,
                 sys_net: Path = Path("/sys/class/net")) -> None:
        self.runtime = runtime
        self.pool = pool
        self.tenants = tenants
        self.networks = networks
        self.sys_net = sys_net

    def collect(self) -> Iterator[Metric]:
        yield from self._containers()
        if self.pool is not None:
            yield from self._pool(self.pool)
        if self.tenants is not None:
            yield from self._tenants(self.tenants)

    def _containers(self) -> Iterator[Metric]:
        by_state = GaugeMetricFamily("steelcup_containers", "Containers by state",
                                     labels=["state"])
        counts: dict[str, int] = {}
        figures = []
        for record in self.runtime.list():
            state = record.state.status.value
            counts[state] = counts.get(state, 0) + 1
            if state in ("running", "paused"):
                with contextlib.suppress(SteelcupError):  # removed meanwhile
                    figures.append(self._figures(record))
        for state, n in sorted(counts.items()):
            by_state.add_metric([state], n)
        yield by_state
        yield from container_families(figures)

    def _figures(self, record: object) -> ContainerFigures:
        from steelcup.runtime.model import ContainerRecord

        assert isinstance(record, ContainerRecord)
        cpu = self.runtime.vm_cpu_time(record.id)
        pid = self.runtime.vm_pid(record.id)
        taps: tuple[str, ...] = ()
        if self.networks is not None:
            taps = self.networks.run_state(record.id)[0]
        health = record.state.health.status.value if record.state.health is not None else ""
        return ContainerFigures(
            labels=(record.id[:12], record.name.lstrip("/"), record.config.image,
                    record.config.tenant),
            cpu_seconds=cpu.total_ns / 1e9 if cpu is not None else None,
            memory_limit_bytes=self.runtime.vm_size(record.config)[1] << 20,
            host_memory_bytes=private_memory(pid) if pid is not None else None,
            io=read_host_io(pid) if pid is not None else None,
            restarts=record.restart_count,
            health=health,
            nics=tuple((f"eth{i}", tap_counters(self.sys_net, tap))
                       for i, tap in enumerate(taps)),
        )

    def _pool(self, pool: Factory) -> Iterator[Metric]:
        status = pool.status()
        ready = GaugeMetricFamily("steelcup_warm_cache_ready",
                                  "Ready VMs in the warm cache", labels=["tenant", "nics"])
        target = GaugeMetricFamily("steelcup_warm_cache_target",
                                   "Ready VMs the warm cache keeps", labels=["tenant", "nics"])
        misses = CounterMetricFamily("steelcup_warm_cache_misses",
                                     "Requests the warm cache had no ready VM for",
                                     labels=["tenant", "nics"])
        for c in status.cache:
            key = [c.tenant, str(c.nics)]
            ready.add_metric(key, c.ready)
            target.add_metric(key, c.target)
            misses.add_metric(key, c.misses)
        yield from (ready, target, misses)
        templates = GaugeMetricFamily("steelcup_templates", "VM templates built")
        templates.add_metric([], len(status.templates))
        failures = CounterMetricFamily("steelcup_template_failures",
                                       "Template builds that failed", labels=["tenant"])
        per_tenant: dict[str, int] = {}
        for t in status.templates:
            per_tenant[t.tenant] = per_tenant.get(t.tenant, 0) + t.failures
        for tenant, n in sorted(per_tenant.items()):
            failures.add_metric([tenant], n)
        yield from (templates, failures)
        fallbacks = CounterMetricFamily(
            "steelcup_clone_fallbacks", "Clones that failed and were booted directly instead")
        fallbacks.add_metric([], status.fallbacks)
        yield fallbacks
        live = GaugeMetricFamily("steelcup_vms_live",
                                 "QEMU processes: containers' and the warm cache's")
        running = sum(1 for r in self.runtime.list()
                      if r.state.status.value in ("running", "paused"))
        live.add_metric([], running + sum(c.ready + c.filling for c in status.cache))
        yield live

    def _tenants(self, tenants: Tenants) -> Iterator[Metric]:
        quota = GaugeMetricFamily("steelcup_tenant_quota", "A tenant's quota",
                                  labels=["tenant", "quota"])
        used = GaugeMetricFamily("steelcup_tenant_used", "What a tenant holds of a quota",
                                 labels=["tenant", "quota"])
        seconds = CounterMetricFamily(
            "steelcup_tenant_container_seconds",
            "Container-seconds a tenant's runs took, by size class", labels=["tenant", "size"])
        for tenant in tenants.list():
            for name, usage in sorted(tenants.quotas.usage(tenant.name).items()):
                quota.add_metric([tenant.name, name], usage.limit)
                used.add_metric([tenant.name, name], usage.used)
            if tenants.usage is not None:
                for line in tenants.usage.report(tenant.name):
                    seconds.add_metric([tenant.name, line.size or "custom"],
                                       line.seconds)
        yield from (quota, used, seconds)


def container_families(figures: Iterable[ContainerFigures]) -> Iterator[Metric]:
    """The per-container families from each running container's figures (pure)."""
    cpu = CounterMetricFamily("steelcup_container_cpu_seconds",
                              "Host CPU time of the container's VM (all QEMU threads)",
                              labels=CONTAINER_LABELS)
    limit = GaugeMetricFamily("steelcup_container_memory_limit_bytes",
                              "Memory of the container's VM (its limit)",
                              labels=CONTAINER_LABELS)
    host_mem = GaugeMetricFamily(
        "steelcup_container_host_memory_bytes",
        "Host memory the container's VM holds privately (QEMU's private pages)",
        labels=CONTAINER_LABELS)
    fs_read = CounterMetricFamily(
        "steelcup_container_fs_read_bytes",
        "Bytes the container's VM read from the host's storage (its root, volumes, binds)",
        labels=CONTAINER_LABELS)
    fs_write = CounterMetricFamily(
        "steelcup_container_fs_write_bytes",
        "Bytes the container's VM wrote to the host's storage (its root, volumes, binds)",
        labels=CONTAINER_LABELS)
    restarts = CounterMetricFamily("steelcup_container_restarts",
                                   "Restarts by the container's restart policy",
                                   labels=CONTAINER_LABELS)
    health = GaugeMetricFamily("steelcup_container_health",
                               "1 for the container's health status now",
                               labels=[*CONTAINER_LABELS, "status"])
    net: dict[str, CounterMetricFamily] = {}
    for name, what in (("receive_bytes", "Bytes the container received"),
                       ("transmit_bytes", "Bytes the container sent"),
                       ("receive_packets", "Packets the container received"),
                       ("transmit_packets", "Packets the container sent")):
        net[name] = CounterMetricFamily(f"steelcup_container_network_{name}", what,
                                        labels=[*CONTAINER_LABELS, "interface"])
    for f in figures:
        labels = list(f.labels)
        if f.cpu_seconds is not None:
            cpu.add_metric(labels, f.cpu_seconds)
        limit.add_metric(labels, f.memory_limit_bytes)
        if f.host_memory_bytes is not None:
            host_mem.add_metric(labels, f.host_memory_bytes)
        if f.io is not None:
            fs_read.add_metric(labels, f.io.read_bytes)
            fs_write.add_metric(labels, f.io.write_bytes)
        restarts.add_metric(labels, f.restarts)
        if f.health:
            health.add_metric([*labels, f.health], 1)
        for nic, stats in f.nics:
            # The tap's receive side is what the guest sent, and the other way round.
            for family, key in (("receive_bytes", "tx_bytes"), ("transmit_bytes", "rx_bytes"),
                                ("receive_packets", "tx_packets"),
                                ("transmit_packets", "rx_packets")):
                if key in stats:
                    net[family].add_metric([*labels, nic], stats[key])
    yield from (cpu, limit, host_mem, fs_read, fs_write, restarts, health, *net.values())


def tap_counters(sys_net: Path, tap: str) -> dict[str, int]:
    """The tap's statistics (missing ones left out: a tap removed meanwhile has none)."""
    out = {}
    for key in TAP_COUNTERS:
        with contextlib.suppress(OSError, ValueError):
            out[key] = int((sys_net / tap / "statistics" / key).read_text())
    return out


def private_memory(pid: int) -> int | None:
    """Bytes of the process's private pages (clean and dirty), from smaps_rollup."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    return parse_private_kib(text) * 1024


def parse_private_kib(smaps_rollup: str) -> int:
    total = 0
    for line in smaps_rollup.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Private_Clean", "Private_Dirty"):
            with contextlib.suppress(ValueError, IndexError):
                total += int(rest.split()[0])
    return total

