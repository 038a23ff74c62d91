"""The gateway over a real HTTP server (`--func-listen`'s router) with funcs on fake VMs: who
may call (secret in the path or the query, a tenant's bearer token), the answers of a done,
failed, over-cap, queued-out and async call, and the func events."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from steelcup.api.func_routes import gateway_router
from steelcup.api.http import HttpServer
from steelcup.config import DaemonOptions
from steelcup.daemon import func_gateway
from steelcup.funcs.model import Auth, Limits
from steelcup.funcs.service import Funcs
from steelcup.runtime.containers import Runtime
from steelcup.state.db import open_db
from steelcup.tenancy.credentials import Authority
from steelcup.tenancy.manager import Tenants
from steelcup.tenancy.store import TenantStore
from tests.unit.funcs.test_service import SPEC, echo, fed, run
from tests.unit.runtime.fakevm import FakeVms


def test_the_gateway_authenticates_each_call_and_answers_its_end(tmp_path: Path) -> None:
    async def body(unscoped: Funcs, rt: Runtime, vms: FakeVms) -> None:
        tenants = Tenants(TenantStore(open_db(tmp_path / "t")), Authority(tmp_path / "tls"))
        tenants.create("alice")
        tenants.create("bob")
        alice, bob = (tenants.issue_key(n).token for n in ("alice", "bob"))
        funcs = Funcs(unscoped.store, rt, rt.create, rt.events, tenants)
        image = rt.images.get("base:1")
        rt.images.get = lambda ref, tenant=None: image  # type: ignore[method-assign]
        events = rt.events.subscribe()
        open_ = funcs.create("", "echo", SPEC, Auth.SECRET,
                             Limits(max_input_bytes=100, concurrency=1, queue=1))
        funcs.create("alice", "hers", SPEC, Auth.TOKEN, Limits())
        server = HttpServer(gateway_router(funcs, tenants), tcp=("127.0.0.1", 0),
                            default_headers=(), plain_tcp_anywhere=True)
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.tcp_port}",
                                         timeout=10) as http:
                async def call(path: str, process_code: int | None = 0, **kw: object
                               ) -> httpx.Response:
                    request = asyncio.create_task(http.post(path, **kw))  # type: ignore[arg-type]
                    if process_code is not None:
                        await echo(await vms.next_process(), process_code)
                    return await request

                ok = await call(f"/call/echo/{open_.secret}", content=b"hi",
                                headers={"X-Trace": "7"})
                assert (ok.status_code, ok.content) == (200, b"hi")
                assert ok.headers["steelcup-exit-code"] == "0"
                assert "HTTP_X_TRACE=7" in vms.machines[-1].processes[0].spec.env
                by_query = await call("/call/echo", content=b"q",
                                      params={"secret": open_.secret})
                assert by_query.content == b"q"
                failed = await call(f"/call/echo/{open_.secret}", 3, content=b"x")
                assert failed.status_code == 500 and failed.json()["ExitCode"] == 3
                assert failed.json()["CallId"] == failed.headers["steelcup-call-id"]
                for path, headers in ((f"/call/echo/{'0' * 32}", {}), ("/call/echo", {}),
                                      ("/call/hers", {"Authorization": f"Bearer {bob}"}),
                                      ("/call/hers", {"Authorization": "Bearer forged"})):
                    refused = await http.post(path, headers=headers)
                    assert refused.status_code == 404, (path, refused.text)
                mine = await call("/call/hers", content=b"a",
                                  headers={"Authorization": f"Bearer {alice}"})
                assert mine.content == b"a"
                too_big = await http.post(f"/call/echo/{open_.secret}", content=b"x" * 101)
                assert too_big.status_code == 413 and vms.started.empty()
                # one running, one queued, the next refused (429); then the async results
                first = await http.post(f"/call/echo/{open_.secret}", content=b"1",
                                        params={"async": "1"})
                second = await http.post(f"/call/echo/{open_.secret}", content=b"2",
                                         params={"async": "1"})
                assert (first.status_code, second.status_code) == (202, 202)
                busy = await http.post(f"/call/echo/{open_.secret}", content=b"3")
                assert busy.status_code == 429 and "retry later" in busy.json()["message"]
                ids = [r.json()["CallId"] for r in (first, second)]
                process = await vms.next_process()
                queued = await http.get(f"/calls/{ids[1]}", params={"secret": open_.secret})
                assert queued.status_code == 202 and queued.json()["Status"] == "queued"
                assert (await http.get(f"/calls/{ids[1]}")).status_code == 404  # no secret
                waiting = asyncio.create_task(http.get(
                    f"/calls/{ids[1]}", params={"secret": open_.secret, "wait": "1"}))
                await echo(process)
                second_process = await vms.next_process()
                assert await fed(second_process) == b"2"
                await echo(second_process)
                done = await waiting
                assert (done.status_code, done.content) == (200, b"2")
        finally:
            await server.close()
            await funcs.close()
        seen = []
        while not events.empty():
            event = events.get_nowait()
            if event["Type"] == "func" and event["Actor"]["ID"] == "echo":
                seen.append(event["Action"])
        assert seen[:4] == ["create", "call", "done", "call"]
        assert seen.count("failed") == 1 and seen.count("done") == 4

    run(tmp_path, body)


def test_a_refused_call_is_answered_without_reading_its_upload(tmp_path: Path) -> None:
    async def body(funcs: Funcs, rt: Runtime, vms: FakeVms) -> None:
        server = HttpServer(gateway_router(funcs, None), tcp=("127.0.0.1", 0),
                            default_headers=(), plain_tcp_anywhere=True)
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.tcp_port)
            writer.write(b"POST /call/nothing/x HTTP/1.1\r\nHost: g\r\n"
                         b"Content-Length: 1000000000\r\n\r\n" + b"x" * 1000)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)  # to EOF: closed after it
            assert answer.startswith(b"HTTP/1.1 404 ") and b"no such func" in answer
            writer.close()
        finally:
            await server.close()

    run(tmp_path, body)


def test_the_gateway_speaks_tls_with_the_daemons_certificate(tmp_path: Path) -> None:
    """`--func-listen` as the daemon builds it (`daemon.func_gateway`): TLS on any address
    that is not loopback, and on loopback with --func-listen-tls, with a certificate of the
    daemon's CA under ROOT/tls; a real client that trusts only that CA calls a func."""
    async def body(unscoped: Funcs, rt: Runtime, vms: FakeVms) -> None:
        tenants = Tenants(TenantStore(open_db(tmp_path / "t")), Authority(tmp_path / "tls"))
        funcs = Funcs(unscoped.store, rt, rt.create, rt.events, tenants)
        image = rt.images.get("base:1")
        rt.images.get = lambda ref, tenant=None: image  # type: ignore[method-assign]
        echoing = funcs.create("", "echo", SPEC, Auth.SECRET, Limits())
        options = DaemonOptions(root=tmp_path, func_listen=("127.0.0.1", 0))
        plain = func_gateway(options, funcs, tenants)
        assert plain is not None and plain.tls is None  # loopback, not asked: plain
        wide = func_gateway(replace(options, func_listen=("0.0.0.0", 0)), funcs, tenants)
        assert wide is not None and wide.tls is not None  # never plain off loopback
        server = func_gateway(replace(options, func_listen_tls=True), funcs, tenants)
        assert server is not None and server.tls is not None
        await server.start()
        try:
            trust = ssl.create_default_context(cafile=str(tenants.authority.ca_pem_path))
            async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{server.tcp_port}",
                                         verify=trust, timeout=10) as https:
                request = asyncio.create_task(https.post(f"/call/echo/{echoing.secret}",
                                                         content=b"over tls"))
                await echo(await vms.next_process())
                answer = await request
                assert (answer.status_code, answer.content) == (200, b"over tls")
                assert answer.headers["steelcup-exit-code"] == "0"
            # plain HTTP to the TLS listener gets no answer from a func
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.tcp_port}",
                                         timeout=5) as http:
                with pytest.raises(httpx.HTTPError):
                    await http.post(f"/call/echo/{echoing.secret}", content=b"x")
            assert vms.started.empty()
        finally:
            await server.close()
            await funcs.close()

    run(tmp_path, body)
