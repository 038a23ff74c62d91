"""The tenant listener: TLS with the daemon's CA, every request authenticated by a tenant key
(client certificate or bearer token), operator-only routes refused to tenants. Real TLS on
loopback, real httpx clients."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from steelcup.api import tenant_routes
from steelcup.api.http import HttpServer, JsonResponse, Request, Response, Router
from steelcup.api.tls import server_tls_context
from steelcup.state.db import open_db
from steelcup.tenancy.credentials import Authority
from steelcup.tenancy.manager import Tenants
from steelcup.tenancy.store import TenantStore


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[Tenants, str, Path]]:
    tenants = Tenants(TenantStore(open_db(tmp_path)), Authority(tmp_path / "tls"))
    router = Router()

    async def whoami(req: Request) -> Response:
        return JsonResponse({"Tenant": req.principal.tenant})

    router.add("GET", "/whoami", whoami)
    tenant_routes.register(router, tenants)
    cert, key = tenants.authority.server_files(["127.0.0.1"])
    tls = server_tls_context(tenants.authority.ca_pem_path, cert, key,
                             client_cert_optional=True)
    ready = threading.Event()
    box: list[tuple[asyncio.AbstractEventLoop, asyncio.Event, HttpServer]] = []

    async def run() -> None:
        stop = asyncio.Event()
        server = HttpServer(router, tcp=("127.0.0.1", 0), tls=tls,
                            identify=tenant_routes.identify_with(tenants))
        await server.start()
        box.append((asyncio.get_running_loop(), stop, server))
        ready.set()
        await stop.wait()
        await server.close()

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    loop, stop, server = box[0]
    yield tenants, f"https://127.0.0.1:{server.tcp_port}", tenants.authority.ca_pem_path
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)


def _tls(ca: Path, cert_pem: bytes | None = None, key_pem: bytes | None = None,
         where: Path | None = None) -> ssl.SSLContext:
    """What docker's client does with DOCKER_CERT_PATH: trust `ca`, present the key pair."""
    context = ssl.create_default_context(cafile=str(ca))
    if cert_pem is not None and key_pem is not None and where is not None:
        where.mkdir()
        (where / "cert.pem").write_bytes(cert_pem)
        (where / "key.pem").write_bytes(key_pem)
        context.load_cert_chain(where / "cert.pem", where / "key.pem")
    return context


def test_each_request_speaks_for_the_tenant_whose_key_it_presents(
        listener: tuple[Tenants, str, Path], tmp_path: Path) -> None:
    tenants, url, ca = listener
    tenants.create("alice")
    tenants.create("bob")
    alice = tenants.issue_key("alice")
    bob = tenants.issue_key("bob")
    with httpx.Client(verify=_tls(ca, alice.credential.cert_pem, alice.credential.key_pem,
                                  tmp_path / "a")) as client:
        assert client.get(f"{url}/whoami").json() == {"Tenant": "alice"}
        # a tenant never reaches the operator's endpoints
        refused = client.get(f"{url}/steelcup/tenants")
        assert refused.status_code == 403 and "operator" in refused.json()["message"]
        assert client.post(f"{url}/steelcup/tenants/alice/keys", json={}).status_code == 403
        # a removed key is refused on its very next request, on the same connection
        tenants.remove_key("alice", alice.key.key_id)
        assert client.get(f"{url}/whoami").status_code == 401
    with httpx.Client(verify=_tls(ca)) as client:
        no_key = client.get(f"{url}/whoami")
        assert no_key.status_code == 401 and "authentication required" in no_key.json()["message"]
        assert client.get(f"{url}/whoami", headers={"Authorization": f"Bearer {bob.token}"}
                          ).json() == {"Tenant": "bob"}
        assert client.get(f"{url}/whoami", headers={"Authorization": "Bearer scup_forged"}
                          ).status_code == 401
    # a certificate from another CA does not get through TLS at all
    other = Authority(tmp_path / "other")
    forged = other.issue_client("alice", alice.key.key_id, 30)
    with httpx.Client(verify=_tls(ca, forged.cert_pem, forged.key_pem, tmp_path / "f")
                      ) as client:
        with pytest.raises(httpx.HTTPError):
            client.get(f"{url}/whoami")
