"""Shared by the cross-tenant tests: two tenants (alice, bob) with bearer tokens on a real TLS
listener in front of the real router and runtime, with a fake VM source and plain directories
for rootfs (docs/tenancy.md)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
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
from steelcup.api.tls import server_tls_context
from steelcup.image import rootfs
from steelcup.runtime.admission import metered_by
from steelcup.runtime.execs import ExecManager
from steelcup.state.db import open_db
from steelcup.tenancy.credentials import Authority
from steelcup.tenancy.manager import Tenants
from steelcup.tenancy.sizing import HostCapacity
from steelcup.tenancy.store import TenantStore
from steelcup.tenancy.usage import Meter, UsageLedger
from tests.unit.runtime.fakevm import FakeVms
from tests.unit.runtime.support import make_runtime

# The host the cloud's size checks see (whatever this machine is): l2 fits, l3 does not.
CAPACITY = HostCapacity(cpus=4, mem_mib=8192)


@pytest.fixture(autouse=True)
def plain_dirs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def prepare(layers: Any, cdir: Path, disks: Any = None, size_bytes: int = 0,
                ids: Any = None) -> Path:
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
    tenants: Tenants  # the operator's side (quotas, usage)
    vms: FakeVms  # the VMs containers got (their requests' sizes)

    def client(self, tenant: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.tls, timeout=20,
                            headers={"Authorization": f"Bearer {self.tokens[tenant]}"})


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
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
    vms = FakeVms()

    async def run() -> None:
        runtime = make_runtime(tmp_path, open_db(tmp_path), vms=vms.source())
        assert tenants.usage is not None
        runtime.events.listen(Meter(tenants.usage, metered_by(runtime)).observe)
        svc = Services(runtime=runtime, execs=ExecManager(runtime), images=runtime.images,
                       events=runtime.events, root=tmp_path, accel="tcg", tenants=tenants,
                       capacity=CAPACITY)
        router = build_router(svc)
        server = HttpServer(router, tcp=("127.0.0.1", 0), tls=server_tls,
                            identify=tenant_routes.identify_with(tenants))
        await server.start()
        stop = asyncio.Event()
        box.extend([asyncio.get_running_loop(), stop, server, router])
        ready.set()
        await stop.wait()
        await server.close()
        await runtime.shutdown()

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    loop, stop, server, router = box
    yield Cloud(f"https://127.0.0.1:{server.tcp_port}",
                ssl.create_default_context(cafile=str(tenants.authority.ca_pem_path)), tokens,
                router.table, tenants, vms)
    loop.call_soon_threadsafe(stop.set)
    thread.join(20)
