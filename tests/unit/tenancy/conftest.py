"""Shared by the cross-tenant tests: two tenants (alice, bob) with bearer tokens on a real TLS
listener (and the operator's unix socket) in front of the real router, runtime, network and
volume managers, with a fake VM source, plain directories for rootfs and volumes, and `ip`/`nft`
commands recorded instead of run (`Cloud.host_commands`: the real kernel side is tests/vm's)
(docs/tenancy.md)."""

from __future__ import annotations

import asyncio
import io
import shutil
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from steelcup.api import tenant_routes
from steelcup.api.http import HttpServer
from steelcup.api.routes import Services, build_router
from steelcup.api.swarm_routes import Swarm
from steelcup.api.tls import server_tls_context
from steelcup.cron.jobs import RuntimeJobs
from steelcup.cron.scheduler import Crons
from steelcup.cron.store import CronStore
from steelcup.funcs.service import Funcs
from steelcup.funcs.store import FuncStore
from steelcup.image import rootfs
from steelcup.metrics import Metrics, StateCollector
from steelcup.net.manager import NetworkManager
from steelcup.net.store import NetStore
from steelcup.runtime.admission import ContainerAdmission, metered_by
from steelcup.runtime.containers import Runtime
from steelcup.runtime.execs import ExecManager
from steelcup.runtime.resources import Resources, volume_users
from steelcup.services.addressing import ServiceAddressing
from steelcup.services.manager import ServiceManager
from steelcup.services.object_store import ObjectStore
from steelcup.services.objects import ObjectManager, users_of
from steelcup.services.orchestrator import Orchestrator
from steelcup.services.store import ServiceStore
from steelcup.state.db import open_db
from steelcup.tenancy import objects as tenant_objects
from steelcup.tenancy.credentials import Authority
from steelcup.tenancy.manager import Tenants
from steelcup.tenancy.sizing import HostCapacity
from steelcup.tenancy.store import TenantStore
from steelcup.tenancy.usage import Meter, UsageLedger
from steelcup.volume.manager import VolumeManager
from tests.unit.image.tarutil import make_tar
from tests.unit.net.dry import make_host_dry, recorder
from tests.unit.runtime.fakevm import FakeVms
from tests.unit.runtime.support import make_runtime

# The host the cloud's size checks see (whatever this machine is): l2 fits, l3 does not.
CAPACITY = HostCapacity(cpus=4, mem_mib=8192)


@pytest.fixture(autouse=True)
def plain_dirs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def prepare(layers: Any, cdir: Path, disks: Any = None, size_bytes: int = 0,
                ids: Any = None, guest_overlay: bool = False) -> Path:
        (cdir / "rootfs").mkdir(parents=True, exist_ok=True)
        return cdir / "rootfs"

    monkeypatch.setattr(rootfs, "prepare", prepare)
    monkeypatch.setattr(rootfs, "release", lambda cdir: None)
    monkeypatch.setattr(rootfs, "remove", lambda cdir: shutil.rmtree(cdir, ignore_errors=True))
    yield


@dataclass
class Cloud:
    url: str
    tls: ssl.SSLContext
    tokens: dict[str, str]
    table: list[tuple[str, str, str]]
    host_commands: list[list[str]]  # every `ip`/`nft` argv (+ its input) the daemon ran
    socket: Path  # the operator's unix socket
    tenants: Tenants  # the operator's side (quotas, usage)
    vms: FakeVms  # the VMs containers got (their requests' sizes)
    crons: Crons  # the cron scheduler (its loop is not running: tests call `tick`)
    runtime: Runtime  # the daemon's runtime (owned by its loop's thread)

    def last_ruleset(self) -> str:
        """The nftables ruleset loaded last."""
        return next(cmd[-1] for cmd in reversed(self.host_commands) if "nft" in cmd)

    def operator(self) -> httpx.Client:
        return httpx.Client(base_url="http://steelcup", timeout=20,
                            transport=httpx.HTTPTransport(uds=str(self.socket)))

    def client(self, tenant: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.tls, timeout=20,
                            headers={"Authorization": f"Bearer {self.tokens[tenant]}"})


FIP_POOL = "203.0.113.16/29"  # the operator's floating IPs (6 usable)


@pytest.fixture
def cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cloud]:
    host_commands: list[list[str]] = []
    make_host_dry(monkeypatch, host_commands, recorder(host_commands))
    tenant_db = open_db(tmp_path / "t")
    tenants = Tenants(TenantStore(tenant_db), Authority(tmp_path / "tls"),
                      usage=UsageLedger(tenant_db))
    tokens = {}
    for name in ("alice", "bob"):
        tenants.create(name)
        tokens[name] = tenants.issue_key(name).token
    cert, key = tenants.authority.server_files(["127.0.0.1"])
    server_tls = server_tls_context(tenants.authority.ca_pem_path, cert, key,
                                    client_cert_optional=True)
    ready = threading.Event()
    box: list[Any] = []
    socket_dir = Path(tempfile.mkdtemp(prefix="scup-"))  # short: a socket path has a limit
    socket = socket_dir / "api.sock"

    vms = FakeVms()

    async def run() -> None:
        networks = NetworkManager(NetStore(open_db(tmp_path)), upstreams=[],
                                  host_routes=lambda: [], fip_pool=FIP_POOL,
                                  fip_interface="fipx0")
        await networks.startup()
        runtimes: list[Runtime] = []
        volumes = VolumeManager(tmp_path, in_use=lambda key: volume_users(runtimes[0].list(),
                                                                          key))
        runtime = make_runtime(tmp_path, open_db(tmp_path), Resources(networks, volumes),
                               vms=vms.source())
        runtimes.append(runtime)
        assert tenants.usage is not None
        runtime.events.listen(Meter(tenants.usage, metered_by(runtime)).observe)
        for name in tokens:  # images are per tenant: each imports a "base:1" of its own
            runtime.images.import_rootfs(io.BytesIO(make_tar([("dir", "bin")])), "base:1",
                                         tenant=name)
        service_store = ServiceStore(open_db(tmp_path))
        services = ServiceManager(service_store, runtime.events)
        swarm_objects = ObjectManager(ObjectStore(open_db(tmp_path), tmp_path / "objects"),
                                      runtime.events)
        swarm_objects.users = users_of(services)
        runtime.resources.swarm_data = lambda _kind, oid: swarm_objects.data(oid)
        admission = ContainerAdmission(runtime, tenants, CAPACITY)
        crons = Crons(CronStore(open_db(tmp_path)), RuntimeJobs(runtime, admission),
                      runtime.events)
        tenant_objects.wire(tenants, runtime, runtime.images, networks, volumes, crons,
                            services=services, swarm_objects=swarm_objects)
        funcs = Funcs(FuncStore(open_db(tmp_path)), runtime, runtime.create, runtime.events,
                      tenants)
        tenant_objects.wire_funcs(tenants, funcs)
        orchestrator = Orchestrator(services, service_store, runtime, admission.create)
        addressing = ServiceAddressing.attach(orchestrator, networks)  # services' VIPs
        orchestrator.start()
        addressing.start()
        metrics = Metrics()
        metrics.watch(StateCollector(runtime, None, tenants, networks))
        svc = Services(runtime=runtime, execs=ExecManager(runtime), images=runtime.images,
                       events=runtime.events, root=tmp_path, accel="tcg", tenants=tenants,
                       networks=networks, volumes=volumes, capacity=CAPACITY, crons=crons,
                       funcs=funcs, metrics=metrics, admission=admission,
                       swarm=Swarm(services, orchestrator, runtime, swarm_objects,
                                   addressing=addressing))
        router = build_router(svc)
        server = HttpServer(router, unix_path=socket, tcp=("127.0.0.1", 0), tls=server_tls,
                            identify=tenant_routes.identify_with(tenants))
        await server.start()
        stop = asyncio.Event()
        box.extend([asyncio.get_running_loop(), stop, server, router, crons, runtime])
        ready.set()
        await stop.wait()
        await server.close()
        await orchestrator.close()
        await addressing.close()
        await crons.close()
        await runtime.shutdown()
        await networks.close()

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    loop, stop, server, router, crons, runtime = box
    yield Cloud(f"https://127.0.0.1:{server.tcp_port}",
                ssl.create_default_context(cafile=str(tenants.authority.ca_pem_path)), tokens,
                router.table, host_commands, socket, tenants, vms, crons, runtime)
    loop.call_soon_threadsafe(stop.set)
    thread.join(20)
    shutil.rmtree(socket_dir, ignore_errors=True)
