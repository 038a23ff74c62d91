"""The optional TCP listener: TLS with client-certificate verification (docker's --tlsverify)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from steelcup.api.http import HttpServer, RawResponse, Request, Response, Router, server_tls_context
from steelcup.errors import InvalidArgument

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def make_pki(d: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
        "-keyout", "ca.key", "-out", "ca.crt")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
            f"{name}.key", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt")


async def ping(req: Request) -> Response:
    return RawResponse(b"OK", "text/plain")


async def _get_ping(port: int, context: ssl.SSLContext) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    writer.write(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


def test_tls_requires_a_client_certificate(tmp_path: Path) -> None:
    make_pki(tmp_path)
    router = Router()
    router.add("GET", "/_ping", ping)
    tls = server_tls_context(tmp_path / "ca.crt", tmp_path / "server.crt",
                             tmp_path / "server.key")

    async def scenario() -> None:
        async with HttpServer(router, tcp=("127.0.0.1", 0), tls=tls) as server:
            port = server.tcp_port
            assert port is not None
            client = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
            client.load_cert_chain(str(tmp_path / "client.crt"), str(tmp_path / "client.key"))
            assert (await _get_ping(port, client)).endswith(b"\r\n\r\nOK")
            anonymous = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                data = await _get_ping(port, anonymous)
                if not data:  # TLS 1.3: the refusal arrives after the handshake "succeeded"
                    raise ConnectionResetError("closed")

    asyncio.run(scenario())


def test_plain_tcp_only_on_loopback() -> None:
    with pytest.raises(InvalidArgument, match="loopback"):
        HttpServer(Router(), tcp=("0.0.0.0", 2375))
    HttpServer(Router(), tcp=("127.0.0.1", 0))  # allowed (when asked for)
