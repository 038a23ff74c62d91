"""Tenants, quotas, size classes, keys and authentication (real CA, real sqlite)."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from steelcup.errors import Conflict, InvalidArgument, NotFound
from steelcup.state.db import open_db
from steelcup.tenancy.credentials import Authority
from steelcup.tenancy.manager import Tenants
from steelcup.tenancy.model import SIZE_CLASSES, Quotas, parse_quotas, size_class
from steelcup.tenancy.store import TenantStore


def test_quota_words_sizes_and_refusals() -> None:
    q = parse_quotas(["containers=5", "memory=8G", "volume-size=1T", "func-calls=3"])
    assert (q.containers, q.memory_mib, q.volume_gib, q.func_calls) == (5, 8192, 1024, 3)
    assert q.images == Quotas().images  # untouched keys keep the default
    assert parse_quotas(["images=1"], q).containers == 5  # an update keeps what was set
    for bad in ("containers", "nope=1", "containers=-1", "containers=lots", "memory=huge"):
        with pytest.raises(InvalidArgument):
            parse_quotas([bad])


def test_size_classes_are_hyper_sh_shapes() -> None:
    assert (size_class("s1").cpus, size_class("s1").mem_mib) == (1, 64)
    assert (size_class("m2").cpus, size_class("m2").mem_mib) == (2, 2048)
    assert (size_class("l3").cpus, size_class("l3").mem_mib) == (8, 16384)
    assert len(SIZE_CLASSES) == 10
    with pytest.raises(InvalidArgument, match="unknown size class"):
        size_class("xl")


@pytest.fixture
def tenants(tmp_path: Path) -> Tenants:
    return Tenants(TenantStore(open_db(tmp_path)), Authority(tmp_path / "tls"))


def test_tenant_lifecycle_survives_a_reopen(tmp_path: Path) -> None:
    t = Tenants(TenantStore(open_db(tmp_path)), Authority(tmp_path / "tls"))
    alice = t.create("alice", ["containers=3"], "m1")
    with pytest.raises(Conflict):
        t.create("alice")
    for bad in ("", "Alice", "-x", "a/b", "x" * 64):
        with pytest.raises(InvalidArgument):
            t.create(bad)
    with pytest.raises(InvalidArgument):
        t.create("bob", size_default="huge")
    t.create("bob")
    again = Tenants(TenantStore(open_db(tmp_path)), Authority(tmp_path / "tls"))
    assert again.get("alice") == alice
    assert [x.name for x in again.list()] == ["alice", "bob"]
    updated = again.update("alice", ["memory=2G"], "s2")
    assert (updated.quotas.containers, updated.quotas.memory_mib, updated.size_default) == (
        3, 2048, "s2")
    again.remove("bob")
    with pytest.raises(NotFound):
        again.get("bob")
    with pytest.raises(NotFound):
        again.update("bob")


def test_remove_is_refused_while_the_tenant_owns_objects(tenants: Tenants) -> None:
    tenants.create("alice")
    owned = ["container web"]
    tenants.owned = lambda name: owned if name == "alice" else []
    with pytest.raises(Conflict, match="container web"):
        tenants.remove("alice")
    owned.clear()
    tenants.remove("alice")


def test_a_key_is_a_ca_signed_client_cert_and_a_token_and_dies_when_removed(
        tenants: Tenants, tmp_path: Path) -> None:
    tenants.create("alice")
    issued = tenants.issue_key("alice", days=30)
    cert = x509.load_pem_x509_certificate(issued.credential.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    ca = x509.load_pem_x509_certificate(issued.ca_pem)
    cert.verify_directly_issued_by(ca)
    # what docker's client does with DOCKER_CERT_PATH: the pair loads into a TLS context
    (tmp_path / "cert.pem").write_bytes(issued.credential.cert_pem)
    (tmp_path / "key.pem").write_bytes(issued.credential.key_pem)
    ssl.create_default_context().load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    der = issued.credential.cert_der
    assert tenants.authenticate(cert_der=der) == tenants.get("alice")
    assert tenants.authenticate(bearer=issued.token) == tenants.get("alice")
    assert tenants.authenticate(bearer="scup_guess") is None
    assert tenants.authenticate() is None
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=31)
    assert tenants.authenticate(cert_der=der, now=later) is None  # expired
    assert [k.key_id for k in tenants.keys("alice")] == [issued.key.key_id]
    # the daemon keeps digests only: neither the token nor the private key
    stored = tenants.keys("alice")[0]
    assert issued.token not in repr(stored) and stored.token_sha256 != issued.token
    tenants.remove_key("alice", issued.key.key_id)
    assert tenants.authenticate(cert_der=der) is None
    assert tenants.authenticate(bearer=issued.token) is None
    with pytest.raises(NotFound):
        tenants.remove_key("alice", issued.key.key_id)


def test_keys_go_with_their_tenant_and_another_cas_cert_names_nobody(
        tenants: Tenants, tmp_path: Path) -> None:
    tenants.create("alice")
    issued = tenants.issue_key("alice")
    other = Authority(tmp_path / "other").issue_client("alice", "k", 30)
    assert tenants.authenticate(cert_der=other.cert_der) is None
    tenants.remove("alice")
    assert tenants.authenticate(cert_der=issued.credential.cert_der) is None
    with pytest.raises(InvalidArgument):
        tenants.issue_key("alice2" if tenants.create("alice2") else "", days=0)


def test_the_ca_is_made_once_and_private(tmp_path: Path) -> None:
    a = Authority(tmp_path / "tls")
    pem = a.ca_pem()
    assert Authority(tmp_path / "tls").ca_pem() == pem
    assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "tls" / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    cert, key = a.server_files(["localhost", "127.0.0.1"])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    assert a.server_files(["127.0.0.1", "localhost"]) == (cert, key)


def test_each_tenant_gets_its_own_id_range_and_a_freed_slot_is_reused_only_after_removal(
        tenants: Tenants) -> None:
    from steelcup.idmap import IdRange
    from steelcup.tenancy.model import id_range

    a, b, c = (tenants.create(n) for n in ("a", "b", "c"))
    assert (a.id_slot, b.id_slot, c.id_slot) == (1, 2, 3)
    base = 1_000_000_000
    ranges = [id_range(base, t.id_slot) for t in (a, b, c)]
    assert ranges[0] == IdRange(base + 65536)
    for i, r in enumerate(ranges):  # disjoint, and none is the operator's slot 0
        assert not r.contains(base)
        for other in ranges[i + 1:]:
            assert not r.contains(other.base) and not other.contains(r.base)
    tenants.remove("b")
    assert tenants.create("d").id_slot == 2
    assert tenants.get("c").id_slot == 3


def test_a_container_table_of_before_tenants_is_migrated_keeping_every_row(
        tmp_path: Path) -> None:
    """Names were unique daemon-wide; now per tenant. Old rows become the operator's."""
    import json

    from steelcup.runtime.model import ContainerConfig, ContainerRecord, ContainerState
    from steelcup.runtime.store import ContainerStore

    db = open_db(tmp_path)
    db.execute("CREATE TABLE containers (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
               "data TEXT NOT NULL)")
    old = ContainerRecord(id="a" * 64, name="web", created="2026-01-01T00:00:00Z", path="sh",
                          args=(), config=ContainerConfig(image="x", image_id="sha256:x"),
                          state=ContainerState())
    data = old.to_json()
    data["config"].pop("tenant")  # as an older daemon wrote it
    db.execute("INSERT INTO containers VALUES (?, ?, ?)", (old.id, "web", json.dumps(data)))
    store = ContainerStore(db)
    assert [r.id for r in store.load_all()] == [old.id]
    assert store.load_all()[0].config.tenant == ""
    other = ContainerRecord(id="b" * 64, name="web", created=old.created, path="sh", args=(),
                            config=ContainerConfig(image="x", image_id="sha256:x",
                                                   tenant="alice"),
                            state=ContainerState())
    store.insert(other)  # the same name in another tenant
    with pytest.raises(Conflict):
        store.insert(ContainerRecord(id="c" * 64, name="web", created=old.created, path="sh",
                                     args=(), config=ContainerConfig(image="x", image_id="y"),
                                     state=ContainerState()))
