"""`steelcup tenant ...` end to end: the real CLI, the real HTTP server and tenant routes, a
real store and CA (no VMs involved)."""

from __future__ import annotations

import asyncio
import json
import ssl
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from steelcup.api import tenant_routes
from steelcup.api.http import HttpServer, Router
from steelcup.cli.main import main
from steelcup.state.db import open_db
from steelcup.tenancy.credentials import Authority
from steelcup.tenancy.manager import Tenants
from steelcup.tenancy.store import TenantStore
from steelcup.tenancy.usage import NS, Metered, UsageLedger


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Tenants, str]]:
    db = open_db(tmp_path)
    tenants = Tenants(TenantStore(db), Authority(tmp_path / "tls"), usage=UsageLedger(db))
    router = Router()
    tenant_routes.register(router, tenants)
    sock = tmp_path / "d.sock"
    ready = threading.Event()
    stop: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def run() -> None:
        event = asyncio.Event()
        stop.append((asyncio.get_running_loop(), event))
        async with HttpServer(router, unix_path=sock):
            ready.set()
            await event.wait()

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield tenants, f"unix://{sock}"
    loop, event = stop[0]
    loop.call_soon_threadsafe(event.set)
    thread.join(10)


def cli(host: str, *args: str) -> int:
    return main(["-H", host, "tenant", *args])


def test_the_operator_manages_tenants_and_keys_from_the_cli(
        served: tuple[Tenants, str], tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    tenants, host = served
    assert cli(host, "create", "alice", "--quota", "containers=3", "--quota", "memory=2G",
               "--size-default", "m1") == 0
    assert cli(host, "create", "bob") == 0
    capfd.readouterr()
    assert cli(host, "create", "alice") == 1
    assert "already exists" in capfd.readouterr().err
    assert cli(host, "create", "carol", "--quota", "bananas=3") == 1
    err = capfd.readouterr().err
    assert "bad quota 'bananas=3'" in err and "containers" in err  # says what is allowed
    assert cli(host, "ls", "-q") == 0
    assert capfd.readouterr().out.split() == ["alice", "bob"]
    assert cli(host, "inspect", "alice") == 0
    shown = json.loads(capfd.readouterr().out)[0]
    assert shown["Quotas"]["containers"] == 3 and shown["Quotas"]["memory_mib"] == 2048
    assert shown["SizeDefault"] == "m1"
    assert cli(host, "update", "alice", "--quota", "containers=5") == 0
    assert tenants.get("alice").quotas.containers == 5

    capfd.readouterr()
    out = tmp_path / "alice-cred"
    assert cli(host, "key", "create", "alice", "--out", str(out), "--days", "30") == 0
    key_id = capfd.readouterr().out.strip()
    assert sorted(p.name for p in out.iterdir()) == ["ca.pem", "cert.pem", "key.pem", "token"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    ssl.create_default_context(cafile=str(out / "ca.pem")).load_cert_chain(
        out / "cert.pem", out / "key.pem")
    token = (out / "token").read_text().strip()
    assert tenants.authenticate(bearer=token) == tenants.get("alice")
    assert cli(host, "key", "create", "alice", "--out", str(out)) == 1  # never overwritten
    assert "not empty" in capfd.readouterr().err
    assert cli(host, "key", "ls", "alice") == 0
    assert key_id in capfd.readouterr().out
    assert cli(host, "key", "rm", "alice", key_id) == 0
    assert tenants.authenticate(bearer=token) is None
    assert cli(host, "rm", "alice", "bob") == 0
    capfd.readouterr()
    assert cli(host, "inspect", "alice") == 1
    assert "no such tenant" in capfd.readouterr().err


def test_tenant_usage_prints_a_bill_per_size_class(
        served: tuple[Tenants, str], capfd: pytest.CaptureFixture[str]) -> None:
    tenants, host = served
    tenants.create("alice")
    ledger = tenants.usage
    assert ledger is not None
    t0 = 1_700_000_000 * NS
    ledger.started("c1", Metered("alice", 2, 2048), t0)
    ledger.stopped("c1", t0 + 3600 * NS)
    ledger.started("c2", Metered("alice", 1, 300), t0 + 100 * NS)
    ledger.stopped("c2", t0 + 160 * NS)
    assert cli(host, "usage", "alice") == 0
    out = capfd.readouterr().out.splitlines()
    assert out[0] == "tenant alice, the beginning .. now"
    assert out[1].split() == ["CLASS", "VCPUS", "MEMORY", "CONTAINERS", "CONTAINER-SECONDS"]
    assert [line.split() for line in out[2:]] == [["m2", "2", "2048MiB", "1", "3600"],
                                                  ["-", "1", "300MiB", "1", "60"],
                                                  ["TOTAL", "3660"]]
    assert cli(host, "usage", "alice", "--since", "1700000130", "--until",
               "2023-11-14T22:21:40Z", "--format", "json") == 0  # t0+130 .. t0+500
    bill = json.loads(capfd.readouterr().out)
    assert bill["Since"] == "2023-11-14T22:15:30Z" and bill["Until"] == "2023-11-14T22:21:40Z"
    assert [(ln["Size"], ln["Seconds"]) for ln in bill["Lines"]] == [("m2", 370), ("", 30)]
    assert cli(host, "usage", "nobody") == 1
    assert "no such tenant" in capfd.readouterr().err
    assert cli(host, "usage", "alice", "--since", "soon") == 1
    assert "invalid value for --since" in capfd.readouterr().err


def test_quota_shows_a_tenants_limits_and_use(
        served: tuple[Tenants, str], capfd: pytest.CaptureFixture[str]) -> None:
    tenants, host = served
    tenants.create("alice", ["containers=4"])
    ledger = tenants.usage
    assert ledger is not None
    ledger.started("c1", Metered("alice", 1, 300), 1_700_000_000 * NS)
    ledger.stopped("c1", 1_700_000_090 * NS)
    assert main(["-H", host, "quota", "--tenant", "alice"]) == 0
    out = capfd.readouterr().out.splitlines()
    assert out[0] == "tenant alice (default size s4)"
    assert out[1].split() == ["QUOTA", "LIMIT", "USED"]
    rows = {line.split()[0]: line.split()[1:] for line in out[2:-1]}
    assert rows["containers"] == ["4", "-"]  # no runtime here registers a count
    assert out[-1] == "container-seconds since the beginning: 90"
    assert main(["-H", host, "quota", "--tenant", "alice", "--format", "json"]) == 0
    assert json.loads(capfd.readouterr().out)["Tenant"] == "alice"
    assert main(["-H", host, "quota"]) == 1  # the operator must name a tenant
    assert "?tenant=NAME" in capfd.readouterr().err
    assert main(["-H", host, "quota", "--tenant", "nobody"]) == 1
