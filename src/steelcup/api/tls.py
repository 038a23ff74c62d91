"""TLS for the API's TCP listener: dockerd's `--tlsverify` server context, and which hosts
may be served without it.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

from steelcup.errors import InvalidArgument


def server_tls_context(ca: Path, cert: Path, key: Path, *,
                       client_cert_optional: bool = False) -> ssl.SSLContext:
    """dockerd's `--tlsverify`: our certificate, and clients must present one signed by `ca`.
    With `client_cert_optional` (the tenant listener) a client may present none and say who it
    is with a bearer token instead; one it presents must still be signed by `ca`."""
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_OPTIONAL if client_cert_optional else ssl.CERT_REQUIRED
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise InvalidArgument(f"cannot set up TLS from {ca}, {cert}, {key}: {exc}") from exc
    return context


def is_loopback_host(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def listener_tls(host: str, cert: Path | None, key: Path | None,
                 made_for: Callable[[], tuple[Path, Path]], *, what: str,
                 force: bool = False) -> ssl.SSLContext | None:
    """A listener whose clients say who they are in each request (a token, a secret), not
    with a certificate (the web console, the func gateway): the operator's `cert` and `key`
    if given, else a certificate the daemon's CA issues (`made_for()`: its files); None
    (plain HTTP) only on loopback with none given and TLS not `force`d. `what` names the
    listener in errors."""
    if cert is None and key is None and is_loopback_host(host) and not force:
        return None
    if (cert is None) != (key is None):
        raise InvalidArgument(f"{what}'s TLS needs both --tlscert and --tlskey (or neither: "
                              "the daemon's CA makes one)")
    if cert is None or key is None:
        cert, key = made_for()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise InvalidArgument(f"cannot set up {what}'s TLS from {cert}, {key}: {exc}"
                              ) from exc
    return context
