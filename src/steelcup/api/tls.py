"""TLS for the API's TCP listener: dockerd's `--tlsverify` server context, and which hosts
may be served without it.
"""

from __future__ import annotations

import ssl
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
