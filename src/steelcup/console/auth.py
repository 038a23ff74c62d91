"""Who a console request speaks for: the operator's console token (single-user installs) or a
tenant's bearer token, from the Authorization header or, for a websocket (browsers cannot set
headers on one), from the offered subprotocols; and the same-origin rule."""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from steelcup.api.http_types import OPERATOR, Principal
from steelcup.errors import Forbidden, SteelcupError

TOKEN_FILE = "console-token"
# A websocket client offers ["steelcup.console", "steelcup.bearer.<base64url token>"]; the
# server answers with the first (a browser fails a handshake whose offer is not answered).
WS_PROTOCOL = "steelcup.console"
WS_BEARER_PREFIX = "steelcup.bearer."

# A tenant's bearer token -> its principal, None if no live key has it.
TenantLookup = Callable[[str], Principal | None]


def load_or_create_token(root: Path) -> str:
    """The operator's console token, kept in ROOT (mode 0600); made on first start."""
    path = root / TOKEN_FILE
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    except OSError as exc:
        raise SteelcupError(f"cannot read the console token {path}: {exc}") from exc
    if token:
        return token
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token


def bearer_of(headers: dict[str, str]) -> str | None:
    """The token of `Authorization: Bearer T`, else of a websocket's offered subprotocol."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for offered in headers.get("sec-websocket-protocol", "").split(","):
        offered = offered.strip()
        if offered.startswith(WS_BEARER_PREFIX):
            encoded = offered[len(WS_BEARER_PREFIX):]
            try:
                token = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_",
                                         validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            return token or None
    return None


def offers_console_protocol(headers: dict[str, str]) -> bool:
    return WS_PROTOCOL in (p.strip() for p in headers.get("sec-websocket-protocol", "").split(","))


def check_same_origin(headers: dict[str, str]) -> None:
    """A browser names the page that made a request in Origin: only the console's own pages
    may call the API on its listener (no CORS is ever granted). Requests with no Origin are
    not a browser's cross-site ones (curl, the CLI) and pass; they still need a token."""
    origin = headers.get("origin")
    if origin is None:
        return
    host = headers.get("host", "")
    if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
        raise Forbidden(f"cross-origin request from {origin} refused: the console's API "
                        "answers its own pages only")


class ConsoleAuth:
    """Bearer token -> principal: the console token is the operator; any other must be a
    live tenant key's."""

    def __init__(self, console_token: str, tenants: TenantLookup) -> None:
        self._token = console_token
        self._tenants = tenants

    def principal(self, bearer: str | None) -> Principal | None:
        if not bearer:
            return None
        if hmac.compare_digest(bearer.encode(), self._token.encode()):
            return OPERATOR
        return self._tenants(bearer)
