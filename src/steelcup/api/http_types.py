"""The request and response types handlers see: a parsed request with its body read on
demand, and JSON, raw, empty, streamed and hijacking responses.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from steelcup.api.hijack import HijackedStream
from steelcup.errors import InvalidArgument
from steelcup.untrusted_json import decode_json

JSON_BODY_MAX = 16 * 1024 * 1024
RAW_STREAM = "application/vnd.docker.raw-stream"
_VERSION_PREFIX = re.compile(r"^/v(\d+(?:\.\d+)?)(?=/)")
_TRUE = {"1", "true", "True", "TRUE", "yes"}
_FALSE = {"", "0", "false", "False", "FALSE", "no"}


class BodyTooLarge(InvalidArgument):
    """A request body over the endpoint's limit (answered without reading it)."""


class BodySource(Protocol):
    """Where a request's body comes from: the server's connection."""

    abandon_body: bool

    def body_chunks(self) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True)
class Principal:
    """Who a request speaks for: a tenant, or (tenant None) the operator."""

    tenant: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.tenant is None


OPERATOR = Principal()


class Request:
    """One parsed request. The body is read on demand: `await json()` or `stream()`."""

    def __init__(
        self,
        conn: BodySource,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
    ) -> None:
        self._conn = conn
        self.method = method
        split = urlsplit(target)
        self.raw_path = split.path
        prefix = _VERSION_PREFIX.match(split.path)
        self.api_version: str | None = prefix.group(1) if prefix else None
        self.path = _VERSION_PREFIX.sub("", split.path, count=1) or "/"
        self.query: dict[str, list[str]] = parse_qs(split.query, keep_blank_values=True)
        self.headers: dict[str, str] = {}
        for name, value in headers:
            key = name.lower()
            self.headers[key] = f"{self.headers[key]}, {value}" if key in self.headers else value
        self.params: dict[str, str] = {}
        self.principal = OPERATOR  # the listener's authentication may say otherwise
        self._body_started = False

    # ----- query helpers
    def q(self, name: str, default: str = "") -> str:
        """The last value of query parameter `name` (docker reads the last one too)."""
        values = self.query.get(name)
        return values[-1] if values else default

    def q_all(self, name: str) -> list[str]:
        return list(self.query.get(name, []))

    def q_bool(self, name: str, default: bool = False) -> bool:
        """Docker's boolean form: 1/true/True are true, 0/false/empty are false."""
        if name not in self.query:
            return default
        value = self.q(name)
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise InvalidArgument(f"invalid boolean value for query parameter {name!r}: {value!r}")

    def q_int(self, name: str, default: int | None = None) -> int | None:
        value = self.q(name)
        if value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise InvalidArgument(
                f"invalid integer for query parameter {name!r}: {value!r}"
            ) from None

    @property
    def wants_upgrade(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        upgrade = self.headers.get("upgrade", "").lower()
        return "upgrade" in conn and "tcp" in upgrade

    # ----- body
    async def stream(self) -> AsyncIterator[bytes]:
        """The body in chunks as they arrive (Content-Length or chunked), never buffered whole."""
        if self._body_started:
            raise RuntimeError("request body already consumed")
        self._body_started = True
        async for chunk in self._conn.body_chunks():
            yield chunk

    @property
    def wants_websocket(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        upgrade = self.headers.get("upgrade", "").lower()
        return "upgrade" in conn and upgrade == "websocket"

    def refuse_body(self) -> None:
        """The answer goes out without the body being read; the connection closes after it
        (for a refusal that must not cost the server the upload: the func gateway's 404)."""
        self._conn.abandon_body = True

    async def body(self, limit: int = JSON_BODY_MAX) -> bytes:
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            self._conn.abandon_body = True
            raise BodyTooLarge(f"request body larger than {limit} bytes")
        parts: list[bytes] = []
        size = 0
        async for chunk in self.stream():
            size += len(chunk)
            if size > limit:
                self._conn.abandon_body = True
                raise BodyTooLarge(f"request body larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def json(self, expect: type = dict, *, allow_empty: bool = False) -> Any:
        """The body decoded as JSON; `expect` is the required top-level type (dict or list)."""
        raw = await self.body()
        if not raw.strip():
            if allow_empty:
                return expect()
            raise InvalidArgument("request body is empty; expected JSON")
        value = decode_json(raw, "request body")
        if not isinstance(value, expect):
            raise InvalidArgument(
                f"invalid JSON in request body: expected {_json_kind(expect)} "
                f"at top level, got {_json_kind(type(value))}"
            )
        return value


def _json_kind(kind: type) -> str:
    names: dict[type, str] = {dict: "object", list: "array", str: "string", int: "number"}
    return names.get(kind, kind.__name__)


class Response:
    """Base of all responses: a status and extra headers."""

    def __init__(self, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.status = status
        self.headers = list(headers)


class RawResponse(Response):
    def __init__(
        self,
        body: bytes,
        content_type: str = "application/octet-stream",
        status: int = 200,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(status, headers)
        self.body = body
        self.content_type = content_type


class JsonResponse(RawResponse):
    def __init__(
        self, obj: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        super().__init__(
            json.dumps(obj, separators=(",", ":")).encode() + b"\n",
            "application/json",
            status,
            headers,
        )
        self.obj = obj


class EmptyResponse(Response):
    def __init__(self, status: int = 204, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(status, headers)


class StreamResponse(Response):
    """A chunked body produced by `chunks`; headers go out at once (docker's wait needs that)."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        content_type: str = "application/json",
        status: int = 200,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(status, headers)
        self.chunks = chunks
        self.content_type = content_type


class HijackResponse(Response):
    """Hand the connection to `handler` after `101 UPGRADED` (or `200 OK`, docker's old way)."""

    def __init__(
        self,
        handler: Callable[[HijackedStream], Awaitable[None]],
        content_type: str = RAW_STREAM,
        *,
        websocket: bool = False,
    ) -> None:
        super().__init__(200)
        self.handler = handler
        self.content_type = content_type
        self.websocket = websocket  # RFC 6455 handshake and framing instead of a raw stream


Handler = Callable[[Request], Awaitable[Response]]
