"""The console's listener: its static pages, and every other path handed to the API's router
after the console's authentication (a bearer token per request, same origin only), so the
pages see exactly what a Docker client of that tenant sees (docs/console.md)."""

from __future__ import annotations

import gzip
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steelcup.api.http_types import Handler, HijackResponse, RawResponse, Request, Response
from steelcup.api.router import Router
from steelcup.api.tls import listener_tls
from steelcup.console.auth import (
    WS_PROTOCOL,
    ConsoleAuth,
    bearer_of,
    check_same_origin,
    offers_console_protocol,
)
from steelcup.errors import NotFound, Unauthorized

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/console/"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png",
                 ".svg": "image/svg+xml", ".map": "application/json"}
# The pages load only their own scripts and talk only to their own origin; xterm.js sets
# inline styles on its elements.
PAGE_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; connect-src 'self'; "
     "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; "
     "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
]


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    gzipped: bytes
    content_type: str


class StaticFiles:
    """Files under one directory by their relative path; read and gzipped once, on first ask."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._cache: dict[str, StaticFile] = {}

    def get(self, rel: str) -> StaticFile:
        cached = self._cache.get(rel)
        if cached is not None:
            return cached
        path = (self.root / rel).resolve()
        content_type = CONTENT_TYPES.get(path.suffix)
        if (content_type is None or not path.is_relative_to(self.root)
                or any(part.startswith(".") for part in Path(rel).parts)):
            raise NotFound(f"no console file {rel}")
        try:
            body = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no console file {rel}") from None
        found = StaticFile(body, gzip.compress(body, mtime=0), content_type)
        self._cache[rel] = found
        return found


class ConsoleRouter(Router):
    """`/` and `/console/...`: the pages (no token needed to load them); anything else: the
    API router's route, called as the token's principal, so its tenant scoping applies."""

    def __init__(self, api: Router, auth: ConsoleAuth, static: StaticFiles) -> None:
        super().__init__()
        self.api = api
        self.auth = auth
        self.static = static
        self.table = api.table

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str], str] | None:
        if method in ("GET", "HEAD") and (path == "/" or path.startswith(STATIC_PREFIX)):
            rel = "index.html" if path == "/" else path[len(STATIC_PREFIX):]
            return self._page(rel), {}, "/console/{file}"
        found = self.api.resolve(method, path)
        if found is None:
            return None
        handler, params, pattern = found
        return self._authenticated(handler), params, pattern

    def _page(self, rel: str) -> Handler:
        async def page(req: Request) -> Response:
            found = self.static.get(rel)
            if "gzip" in req.headers.get("accept-encoding", ""):
                return RawResponse(found.gzipped, found.content_type,
                                   headers=[*PAGE_HEADERS, ("Content-Encoding", "gzip"),
                                            ("Vary", "Accept-Encoding")])
            return RawResponse(found.body, found.content_type,
                               headers=[*PAGE_HEADERS, ("Vary", "Accept-Encoding")])
        return page

    def _authenticated(self, handler: Handler) -> Handler:
        async def authenticated(req: Request) -> Any:
            check_same_origin(req.headers)
            principal = self.auth.principal(bearer_of(req.headers))
            if principal is None:
                raise Unauthorized("log in with a tenant key's token (or, single-user, the "
                                   "console token the daemon printed at start)")
            req.principal = principal
            response = await handler(req)
            if (isinstance(response, HijackResponse) and response.websocket
                    and offers_console_protocol(req.headers)):
                response.headers.append(("Sec-WebSocket-Protocol", WS_PROTOCOL))
            return response
        return authenticated


def console_tls(host: str, cert: Path | None, key: Path | None,
                made_for: Any) -> ssl.SSLContext | None:
    """The listener's TLS: the operator's certificate if given, else one the daemon's CA
    issues for `made_for()`'s names; None (plain HTTP) only on loopback with none given.
    Browsers are not asked for client certificates: the token says who they are."""
    return listener_tls(host, cert, key, made_for, what="the console")
