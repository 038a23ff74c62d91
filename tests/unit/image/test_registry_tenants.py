"""Pulls per tenant (docs/tenancy.md): a pull always asks the registry, with the caller's own
credentials, even when every blob of the image is already here because another tenant pulled
it; and each tenant's registry logins are its own."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from steelcup.errors import InvalidArgument, NotFound
from steelcup.image import registry
from steelcup.image.auth import Credentials
from steelcup.image.credentials import FILE_NAME, TenantCredentials

from .test_registry_client import FakeRegistry, _store


class Recording:
    """FakeRegistry (whose only user is alice:pw), also serving its manifest by digest, and
    recording each request's path."""

    def __init__(self) -> None:
        self.fake = FakeRegistry()
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.path.startswith("/v2/ns/app/manifests/sha256:"):
            request = httpx.Request(request.method,
                                    request.url.copy_with(path="/v2/ns/app/manifests/1.0"),
                                    headers=request.headers)
        return self.fake(request)


@pytest.mark.skipif(os.geteuid() != 0, reason="layer extraction as root")
def test_a_pull_by_digest_asks_the_registry_even_when_the_blobs_are_here(
        tmp_path: Path) -> None:
    reg = Recording()
    transport = httpx.MockTransport(reg)
    store = _store(tmp_path)
    first = registry.pull("reg.example/ns/app:1.0", store, credentials=Credentials("alice", "pw"),
                          transport=transport, tenant="alice")
    by_digest = f"reg.example/ns/app@{first.digest}"
    # bob knows the digest and the host has every blob, but the registry does not let him in
    for creds in (Credentials("bob", "guess"), None):
        with pytest.raises(registry.RegistryAuthError):
            registry.pull(by_digest, store, credentials=creds, transport=transport,
                          tenant="bob")
    assert store.list("bob") == []
    with pytest.raises(NotFound):
        store.get(first.image.id, "bob")
    # carol may read the repository: the registry serves her the manifest, the blobs are reused
    reg.paths.clear()
    pulled = registry.pull(by_digest, store, credentials=Credentials("alice", "pw"),
                           transport=transport, tenant="carol")
    assert f"/v2/ns/app/manifests/{first.digest}" in reg.paths
    assert not any("/blobs/" in p for p in reg.paths)
    assert pulled.image.id == first.image.id and pulled.downloaded  # as on a fresh host
    assert store.get(by_digest, "carol").id == first.image.id
    assert store.get("reg.example/ns/app:1.0", "alice").repo_tags == ("reg.example/ns/app:1.0",)
    with pytest.raises(NotFound):
        store.get("reg.example/ns/app:1.0", "carol")  # a pull by digest tags nothing


def test_registry_logins_are_per_tenant(tmp_path: Path) -> None:
    logins = TenantCredentials(tmp_path)
    logins.of("alice").set("reg.example", Credentials("alice", "pw"))
    logins.of(None).set("reg.example", Credentials("root", "secret"))
    assert logins.of("alice").get("reg.example") == Credentials("alice", "pw")
    assert logins.of("bob").get("reg.example") is None
    assert logins.of("").get("reg.example") == Credentials("root", "secret")
    assert (tmp_path / FILE_NAME).is_file()  # the operator's file is the single-user one
    assert TenantCredentials(tmp_path).of("alice").servers() == ["reg.example"]
    assert logins.of("bob").remove("reg.example") is False
    assert logins.of("alice").get("reg.example") is not None
    with pytest.raises(InvalidArgument):
        logins.of("../alice")
