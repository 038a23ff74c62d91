"""The multi-tenant listener (`steelcup daemon --multi-tenant --tls-listen ADDR:PORT`): every
request on it authenticates as a tenant (a client certificate `steelcup tenant key create` made,
or its bearer token) and sees only that tenant's objects; the unix socket stays the operator's.

`refusal` says why the daemon must not serve tenants (pure); `tls_for_tenants` makes the TLS
side: the daemon's own CA (which signs tenants' keys) and a server certificate for the names the
listener is reached by, unless the operator gave theirs.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from steelcup.api.router import unscoped
from steelcup.api.tls import server_tls_context
from steelcup.tenancy.credentials import Authority

WARNING_HEADER = "Steelcup-Warning"  # the CLI prints it once per session
TCG_WARNING = ("this steelcup cloud runs its VMs under QEMU TCG (no KVM), which QEMU does not "
               "treat as a security boundary: tenants are kept apart by steelcup's jail and "
               "user namespaces, not by hardware virtualization")
WILDCARDS = ("0.0.0.0", "::", "")


def refusal(accel: str, allow_tcg: bool, table: list[tuple[str, str, str]]) -> str | None:
    """Why a tenant listener must not start, or None."""
    if accel != "kvm" and not allow_tcg:
        return ("--multi-tenant needs KVM: without it guests run under QEMU TCG, which QEMU "
                "does not treat as a security boundary between tenants. Give --allow-tcg to "
                "serve tenants anyway (info and every CLI session will say so)")
    missing = unscoped(table)
    if missing:
        return ("--multi-tenant refused: these routes name an object without resolving it for "
                "the caller's tenant: " + ", ".join(missing))
    return None


def server_names(listen_host: str, extra: list[str]) -> list[str]:
    """The names a tenant may reach the listener by: the address it listens on (unless a
    wildcard), loopback, this host's name, and any the operator adds (--tls-name)."""
    names = {"localhost", "127.0.0.1", socket.gethostname(), *extra}
    if listen_host not in WILDCARDS:
        names.add(listen_host)
    return sorted(n for n in names if n)


def tls_for_tenants(authority: Authority, names: list[str], given_ca: Path | None,
                    given_cert: Path | None, given_key: Path | None) -> ssl.SSLContext:
    """The listener's TLS: clients may present a certificate (checked against the daemon's
    CA and any the operator gave) or none and a bearer token; which tenant it is, is decided
    per request against the live keys."""
    authority.ca_pem()  # made on first use
    if given_cert is not None and given_key is not None:
        cert, key = given_cert, given_key
    else:
        cert, key = authority.server_files(names)
    context = server_tls_context(authority.ca_pem_path, cert, key, client_cert_optional=True)
    if given_ca is not None:
        context.load_verify_locations(cafile=str(given_ca))
    return context
