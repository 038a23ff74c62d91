"""The console's listener over real TCP on loopback: pages without a token, the API behind one
(operator's console token, a tenant's key, nothing else), tenant scoping through the API's own
router, the same-origin rule, and the websocket's token in its subprotocol."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from steelcup.api.http import HttpServer, JsonResponse, Principal, Request, Response, Router
from steelcup.api.http_types import HijackedStream, HijackResponse
from steelcup.console.auth import ConsoleAuth, bearer_of, load_or_create_token
from steelcup.console.server import ConsoleRouter, StaticFiles
from steelcup.errors import NotFound

CONSOLE_TOKEN = "console-secret"
TENANT_TOKENS = {"alice-token": "alice", "bob-token": "bob"}
OWNERS = {"c-alice": "alice", "c-bob": "bob"}


def api_router() -> Router:
    """A stand-in for the API: who asked, and an object scope like the containers' one."""
    r = Router()

    def resolve(who: Principal, ref: str) -> str:
        if ref not in OWNERS or (who.tenant is not None and OWNERS[ref] != who.tenant):
            raise NotFound(f"No such container: {ref}")
        return ref

    r.scope("/containers/{id}", "id", "container", resolve)

    async def whoami(req: Request) -> Response:
        return JsonResponse({"tenant": req.principal.tenant})

    async def inspect(req: Request) -> Response:
        return JsonResponse({"Id": req.params["id"]})

    async def operator_only(req: Request) -> Response:
        return JsonResponse([])

    async def echo_ws(req: Request) -> Response:
        async def run(conn: HijackedStream) -> None:
            await conn.write(b"hello " + (req.principal.tenant or "operator").encode())
        return HijackResponse(run, websocket=True)

    r.add("GET", "/info", whoami)
    r.add("GET", "/containers/{id}/json", inspect)
    r.add("GET", "/steelcup/tenants", operator_only, operator=True)
    r.add("GET", "/containers/{id}/attach/ws", echo_ws)
    return r


def make_static(tmp_path: Path) -> Path:
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<!doctype html><title>console</title>")
    (static / "console.js").write_text("console.log('hi');" * 50)
    (static / ".hidden.js").write_text("secret")
    (tmp_path / "outside.js").write_text("outside")
    return static


Client = Callable[[httpx.AsyncClient, int], Awaitable[None]]


def serve(tmp_path: Path, body: Client) -> None:
    async def main() -> None:
        auth = ConsoleAuth(CONSOLE_TOKEN, lambda t: (Principal(TENANT_TOKENS[t])
                                                     if t in TENANT_TOKENS else None))
        router = ConsoleRouter(api_router(), auth, StaticFiles(make_static(tmp_path)))
        async with HttpServer(router, tcp=("127.0.0.1", 0)) as server:
            port = server.tcp_port
            assert port is not None
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                await body(client, port)
    asyncio.run(main())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_pages_need_no_token_and_carry_a_strict_policy(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, port: int) -> None:
        page = await client.get("/", headers={"Accept-Encoding": "identity"})
        assert page.status_code == 200
        assert page.text.startswith("<!doctype html>")
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert "connect-src 'self'" in page.headers["content-security-policy"]
        assert "access-control-allow-origin" not in page.headers
        script = await client.get("/console/console.js", headers={"Accept-Encoding": "gzip"})
        assert script.headers["content-encoding"] == "gzip"
        assert script.text == "console.log('hi');" * 50  # httpx un-gzips
        assert int(script.headers["content-length"]) < len(script.text)
    serve(tmp_path, body)


def test_no_file_outside_the_static_dir_nor_hidden_nor_unknown_kinds(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, port: int) -> None:
        for path in ("/console/../outside.js", "/console/%2e%2e/outside.js",
                     "/console/.hidden.js", "/console/missing.js", "/console/"):
            assert (await client.get(path)).status_code == 404, path
    serve(tmp_path, body)


def test_the_api_needs_a_token_and_answers_as_its_principal(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, port: int) -> None:
        assert (await client.get("/info")).status_code == 401
        assert (await client.get("/info", headers=bearer("wrong"))).status_code == 401
        assert (await client.get("/info", headers={"Authorization": "Basic eDp5"})
                ).status_code == 401
        me = await client.get("/info", headers=bearer(CONSOLE_TOKEN))
        assert me.json() == {"tenant": None}  # the console token is the operator
        alice = await client.get("/v1.43/info", headers=bearer("alice-token"))
        assert alice.json() == {"tenant": "alice"}
    serve(tmp_path, body)


def test_a_tenant_sees_only_its_objects_and_no_operator_route(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, port: int) -> None:
        own = await client.get("/containers/c-alice/json", headers=bearer("alice-token"))
        assert own.json() == {"Id": "c-alice"}
        other = await client.get("/containers/c-bob/json", headers=bearer("alice-token"))
        assert other.status_code == 404
        assert (await client.get("/steelcup/tenants", headers=bearer("alice-token"))
                ).status_code == 403
        assert (await client.get("/steelcup/tenants", headers=bearer(CONSOLE_TOKEN))
                ).status_code == 200
    serve(tmp_path, body)


def test_requests_from_another_origin_are_refused(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, port: int) -> None:
        same = await client.get("/info", headers={**bearer("alice-token"),
                                                  "Origin": f"http://127.0.0.1:{port}"})
        assert same.status_code == 200
        for origin in ("http://evil.example", "null", f"http://127.0.0.1:{port + 1}"):
            cross = await client.get("/info", headers={**bearer("alice-token"),
                                                       "Origin": origin})
            assert cross.status_code == 403, origin
            assert "cross-origin" in cross.json()["message"]
    serve(tmp_path, body)


async def ws_handshake(port: int, protocols: str) -> tuple[str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /containers/c-alice/attach/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nOrigin: http://127.0.0.1:{port}\r\n"
                  f"Sec-WebSocket-Protocol: {protocols}\r\n\r\n").encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    frame = b""
    if head.startswith("HTTP/1.1 101"):
        first = await reader.readexactly(2)
        frame = await reader.readexactly(first[1] & 0x7F)
    writer.close()
    return head, frame


def test_a_websocket_carries_its_token_in_the_subprotocol(tmp_path: Path) -> None:
    encoded = base64.urlsafe_b64encode(b"alice-token").decode().rstrip("=")

    async def body(client: httpx.AsyncClient, port: int) -> None:
        head, frame = await ws_handshake(port, f"steelcup.console, steelcup.bearer.{encoded}")
        assert head.startswith("HTTP/1.1 101"), head
        assert "Sec-WebSocket-Protocol: steelcup.console\r\n" in head
        assert frame == b"hello alice"
        refused, _ = await ws_handshake(port, "steelcup.console, steelcup.bearer.bm9wZQ")
        assert refused.startswith("HTTP/1.1 401"), refused
    serve(tmp_path, body)


def test_bearer_of_reads_the_header_first_then_the_subprotocol() -> None:
    assert bearer_of({"authorization": "Bearer abc"}) == "abc"
    assert bearer_of({"authorization": "bearer  abc "}) == "abc"
    assert bearer_of({"sec-websocket-protocol": "steelcup.console, steelcup.bearer.YWJj"}) \
        == "abc"
    assert bearer_of({"sec-websocket-protocol": "steelcup.bearer.!!!"}) is None
    assert bearer_of({}) is None


def test_the_console_token_is_made_once_and_kept_private(tmp_path: Path) -> None:
    first = load_or_create_token(tmp_path)
    assert len(first) >= 40
    assert load_or_create_token(tmp_path) == first
    mode = stat.S_IMODE((tmp_path / "console-token").stat().st_mode)
    assert mode == 0o600


def test_served_pages_exist_in_the_package() -> None:
    from steelcup.console.server import STATIC_DIR
    for name in ("index.html", "console.js", "console.css"):
        assert (STATIC_DIR / name).stat().st_size > 0




def test_tls_is_optional_only_on_loopback(tmp_path: Path) -> None:
    from steelcup.console.server import console_tls
    from steelcup.errors import InvalidArgument
    from steelcup.tenancy.credentials import Authority

    made: list[list[str]] = []
    authority = Authority(tmp_path / "tls")
    authority.ca_pem()

    def made_for() -> tuple[Path, Path]:
        made.append(["0.0.0.0"])
        return authority.server_files(["localhost", "127.0.0.1"])

    assert console_tls("127.0.0.1", None, None, made_for) is None
    assert console_tls("localhost", None, None, made_for) is None
    assert made == []
    context = console_tls("0.0.0.0", None, None, made_for)
    assert context is not None and made  # off loopback: a certificate from the daemon's CA
    cert, key = authority.server_files(["localhost", "127.0.0.1"])
    assert console_tls("127.0.0.1", cert, key, made_for) is not None  # given: used anywhere
    with pytest.raises(InvalidArgument, match="both --tlscert and --tlskey"):
        console_tls("0.0.0.0", cert, None, made_for)
