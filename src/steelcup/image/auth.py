"""Registry auth, the pure parts: WWW-Authenticate challenges, token scopes, X-Registry-Auth.

No I/O here; `registry.py` drives the HTTP exchanges and `credentials.py` stores secrets.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from dataclasses import dataclass, field

from steelcup.errors import InvalidArgument
from steelcup.untrusted_json import decode_json

DOCKER_HUB_DOMAIN = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_LEGACY_HUB_ADDRESSES = (
    "https://index.docker.io/v1/",
    "index.docker.io",
    "registry-1.docker.io",
    "docker.io",
)
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True)
class Challenge:
    """One auth challenge: scheme lowercased (`bearer`, `basic`), params with lowercased keys."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Credentials:
    """What a user gave us for one registry. Empty username and no token = anonymous."""

    username: str = ""
    password: str = ""
    identity_token: str = ""  # an OAuth refresh token (docker login with a token)
    registry_token: str = ""  # a bearer token to use as-is

    @property
    def anonymous(self) -> bool:
        return not (self.username or self.identity_token or self.registry_token)


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate value (RFC 7235): `Bearer realm="x",service="y", Basic ...`.

    Quoted values may contain commas and backslash escapes. Malformed parts are skipped, not
    fatal: a registry's odd header should still yield whatever challenge we can use.
    """
    challenges: list[Challenge] = []
    pos = 0
    n = len(header)
    current: Challenge | None = None
    while pos < n:
        pos = _skip(header, pos, " \t,")
        m = _TOKEN_RE.match(header, pos)
        if m is None:
            pos += 1
            continue
        word = m.group(0)
        after = _skip(header, m.end(), " \t")
        if after < n and header[after] == "=" and current is not None:
            value, pos = _param_value(header, _skip(header, after + 1, " \t"))
            current.params[word.lower()] = value
            continue
        if after < n and header[after] == "=" and current is None:
            # a token68 or a param before any scheme: skip to the next comma
            pos = header.find(",", after)
            pos = n if pos < 0 else pos
            continue
        current = Challenge(word.lower(), {})
        challenges.append(current)
        pos = m.end()
    return challenges


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _param_value(text: str, pos: int) -> tuple[str, int]:
    if pos < len(text) and text[pos] == '"':
        out = []
        pos += 1
        while pos < len(text):
            ch = text[pos]
            if ch == "\\" and pos + 1 < len(text):
                out.append(text[pos + 1])
                pos += 2
                continue
            if ch == '"':
                return "".join(out), pos + 1
            out.append(ch)
            pos += 1
        return "".join(out), pos  # unterminated: take the rest
    m = _TOKEN_RE.match(text, pos)
    if m is None:
        return "", pos
    return m.group(0), m.end()


def repository_scope(repo: str, actions: tuple[str, ...]) -> str:
    """The token scope for `repo`, e.g. `repository:library/app:pull,push`."""
    return f"repository:{repo}:{','.join(actions)}"


def basic_authorization(username: str, password: str) -> str:
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def registry_api_host(domain: str) -> str:
    """The host serving /v2/ for a reference domain (docker.io's API lives elsewhere)."""
    return DOCKER_HUB_API_HOST if domain == DOCKER_HUB_DOMAIN else domain


def normalize_server_address(address: str) -> str:
    """`https://127.0.0.1:5000/v2/`, `127.0.0.1:5000` -> `127.0.0.1:5000`; hub aliases -> docker.io.

    This is the key credentials are stored under, the same for login, pull and push.
    """
    text = address.strip()
    if not text or text in _LEGACY_HUB_ADDRESSES:
        return DOCKER_HUB_DOMAIN
    for prefix in ("https://", "http://"):
        text = text.removeprefix(prefix)
    host = text.split("/", 1)[0]
    if not host:
        raise InvalidArgument(f"invalid registry address {address!r}")
    if host in _LEGACY_HUB_ADDRESSES:
        return DOCKER_HUB_DOMAIN
    return host.lower()


def is_loopback_registry(host: str) -> bool:
    """localhost / 127.0.0.0/8 / ::1 (with or without port): plain HTTP is allowed, as in docker."""
    name = host
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def decode_registry_auth(header: str) -> Credentials | None:
    """Decode docker's X-Registry-Auth (base64url JSON); None when the header is empty.

    Docker sends URL-safe base64, sometimes without padding; an empty object means anonymous.
    """
    text = header.strip()
    if not text:
        return None
    padded = text + "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        doc = decode_json(raw, "X-Registry-Auth header") if raw.strip() else {}
    except binascii.Error as exc:
        raise InvalidArgument(f"invalid X-Registry-Auth header: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("invalid X-Registry-Auth header: expected a JSON object")
    return credentials_from_json(doc)


def credentials_from_json(doc: dict[str, object]) -> Credentials:
    """Docker's AuthConfig object (`username`, `password`, `identitytoken`, `registrytoken`)."""

    def text(key: str) -> str:
        for k, v in doc.items():
            if k.lower() == key:
                if v is None:
                    return ""
                if not isinstance(v, str):
                    raise InvalidArgument(f"auth config: {key} must be a string")
                return v
        return ""

    username, password = text("username"), text("password")
    auth = text("auth")
    if auth and not username:
        try:
            username, _, password = base64.b64decode(auth).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"auth config: invalid auth field: {exc}") from None
    return Credentials(
        username=username,
        password=password,
        identity_token=text("identitytoken"),
        registry_token=text("registrytoken"),
    )


def encode_registry_auth(creds: Credentials, server_address: str = "") -> str:
    """The X-Registry-Auth value the CLI sends (the inverse of `decode_registry_auth`)."""
    doc: dict[str, str] = {}
    if creds.username:
        doc["username"] = creds.username
        doc["password"] = creds.password
    if creds.identity_token:
        doc["identitytoken"] = creds.identity_token
    if creds.registry_token:
        doc["registrytoken"] = creds.registry_token
    if server_address:
        doc["serveraddress"] = server_address
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode("ascii")
