"""When the daemon refuses to serve tenants, and the names its certificate carries."""

from __future__ import annotations

import socket

from steelcup.api.router import OPERATOR
from steelcup.api.tenant_listener import refusal, server_names

SCOPED = [("GET", "/containers/{id}/json", "container"), ("GET", "/_ping", ""),
          ("GET", "/steelcup/tenants/{name}", OPERATOR)]


def test_tcg_needs_allow_tcg() -> None:
    why = refusal("tcg", False, SCOPED)
    assert why is not None and "--allow-tcg" in why and "security boundary" in why
    assert refusal("tcg", True, SCOPED) is None
    assert refusal("kvm", False, SCOPED) is None


def test_a_route_naming_an_unscoped_object_refuses_the_listener() -> None:
    why = refusal("kvm", False, [*SCOPED, ("DELETE", "/widgets/{id}", "")])
    assert why is not None and "DELETE /widgets/{id}" in why


def test_certificate_names() -> None:
    assert server_names("0.0.0.0", ["cloud.example"]) == sorted(
        {"localhost", "127.0.0.1", socket.gethostname(), "cloud.example"})
    assert "10.1.2.3" in server_names("10.1.2.3", [])
