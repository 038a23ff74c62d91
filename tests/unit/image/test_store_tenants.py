"""ImageStore per tenant (docs/tenancy.md): tags and the images a tenant has are its own; an
image's record, layers and blobs are shared and go only when no tenant has the image; a store
from before tenants opens with everything the operator's ("")."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest

from steelcup.errors import Conflict, InvalidArgument, NotFound
from steelcup.image.store import Image, ImageStore

from .tarutil import make_tar
from .test_store import LAYER1, LAYER2, docker_archive


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "root", sqlite3.connect(tmp_path / "state.db"))


def load(store: ImageStore, archive: bytes, tenant: str | None) -> Image:
    (loaded,) = store.load(io.BytesIO(archive), tenant=tenant)
    return loaded.image


def refs_of(image: Image) -> list[str]:
    """Every way to name an image: id, bare hex, short id, name:tag, name@digest."""
    return [image.id, image.id[7:], image.short_id, *image.repo_tags,
            *[t.rsplit(":", 1)[0] + "@" + image.id for t in image.repo_tags]]


def test_another_tenants_image_is_missing_by_every_name(store: ImageStore) -> None:
    mine = load(store, docker_archive([LAYER1], ["app:1"]), "alice")
    assert mine.repo_tags == ("app:1",)
    for ref in refs_of(mine):
        assert store.get(ref, "alice").id == mine.id
        assert store.get(ref).id == mine.id  # the operator sees every tenant's
        with pytest.raises(NotFound) as missing:
            store.get(ref, "bob")
        assert str(missing.value) == f"No such image: {ref}"
        with pytest.raises(NotFound):
            store.scoped_ref(ref, "bob")
        assert store.scoped_ref(ref, "alice") == ref
        for call in (lambda r: store.history(r, "bob"), lambda r: store.tag(r, "x:1", "bob"),
                     lambda r: store.remove(r, tenant="bob"),
                     lambda r: store.save([r], io.BytesIO(), "bob")):
            with pytest.raises(NotFound, match="No such image"):
                call(ref)
    assert store.list("bob") == [] and [i.id for i in store.list("alice")] == [mine.id]
    assert store.prune(dangling_only=False, tenant="bob").deleted == []
    assert store.get("app:1", "alice").repo_tags == ("app:1",)
    # a bare repository name passes the scope only for a tenant with a tag in it (push all)
    assert store.scoped_ref("app", "alice") == "app"
    with pytest.raises(NotFound, match="No such image: app"):
        store.scoped_ref("app", "bob")


def test_names_are_per_tenant(store: ImageStore) -> None:
    alices = store.import_rootfs(io.BytesIO(make_tar([("file", "a", b"a")])), "app:1",
                                 tenant="alice")
    bobs = store.import_rootfs(io.BytesIO(make_tar([("file", "b", b"b")])), "app:1",
                               tenant="bob")
    assert store.get("app:1", "alice").id == alices.id
    assert store.get("app:1", "bob").id == bobs.id
    with pytest.raises(InvalidArgument, match="2 tenants"):
        store.get("app:1")  # the operator: ambiguous unless one is its own
    ours = store.import_rootfs(io.BytesIO(make_tar([("file", "o", b"o")])), "app:1")
    assert store.get("app:1").id == ours.id and store.get("app:1", "").id == ours.id
    # bob moves his tag to his other image; alice's is untouched
    store.tag(bobs.id, "app:2", "bob")
    assert store.get("app:2", "bob").id == bobs.id
    with pytest.raises(NotFound):
        store.get("app:2", "alice")
    assert store.remove("app:1", tenant="bob") == ["Untagged: app:1"]
    assert store.get("app:1", "alice").id == alices.id
    assert store.get("app:1", "alice").repo_tags == ("app:1",)


def test_a_shared_image_stays_until_no_tenant_has_it(store: ImageStore) -> None:
    archive = docker_archive([LAYER1, LAYER2], ["app:1"])
    alices = load(store, archive, "alice")
    bobs = load(store, archive, "bob")
    assert bobs.id == alices.id  # one record, one set of layers underneath
    layers = store.layer_dirs(alices)
    # bob's rmi answers as if the image were gone (it is, for him); alice keeps everything
    assert store.remove(bobs.id, tenant="bob") == ["Untagged: app:1", f"Deleted: {bobs.id}"]
    with pytest.raises(NotFound):
        store.get(bobs.id, "bob")
    assert store.get("app:1", "alice").id == alices.id
    assert all(d.is_dir() for d in layers)
    store.save(["app:1"], io.BytesIO(), "alice")  # blobs are all still there
    # bob's prune -a reclaims what he had, and touches nothing of alice's
    load(store, archive, "bob")
    result = store.prune(dangling_only=False, tenant="bob")
    assert result.deleted == ["Untagged: app:1", f"Deleted: {alices.id}"]
    assert result.reclaimed_bytes == alices.size_bytes
    assert all(d.is_dir() for d in layers)
    # once the last tenant lets go, the record, layers and blobs go
    store.remove("app:1", tenant="alice")
    assert store.list() == []
    assert not any(d.exists() for d in layers)
    assert list((store.root / "blobs/sha256").iterdir()) == []


def test_in_use_is_per_tenant_and_keeps_the_layers(store: ImageStore) -> None:
    archive = docker_archive([LAYER1], ["app:1"])
    image = load(store, archive, "alice")
    load(store, archive, "bob")
    users = {"bob"}  # a container of bob's runs the image
    store.in_use = lambda image_id, tenant: image_id == image.id and (
        bool(users) if tenant is None else tenant in users)
    with pytest.raises(Conflict, match="used by a container"):
        store.remove("app:1", tenant="bob")
    assert store.remove(image.id, tenant="alice") == ["Untagged: app:1", f"Deleted: {image.id}"]
    store.remove("app:1", force=True, tenant="bob")  # untags only: his container still uses it
    assert store.list("bob")[0].repo_tags == ()
    assert store.layer_dirs(store.get(image.id, "bob"))[0].is_dir()
    users.clear()
    assert store.prune(tenant="bob").deleted == [f"Deleted: {image.id}"]
    assert store.list() == []


def test_commit_and_pull_records_are_the_callers(store: ImageStore) -> None:
    base = load(store, docker_archive([LAYER1], ["base:1"]), "alice")
    made = store.commit(base.id, io.BytesIO(LAYER2), config=base.config, ref="mine:1",
                        tenant="alice")
    assert store.get("mine:1", "alice").id == made.id
    with pytest.raises(NotFound):
        store.get("mine:1", "bob")
    assert made.repo_tags == ("mine:1",)


def test_a_store_from_before_tenants_becomes_the_operators(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "state.db")
    old = ImageStore(tmp_path / "root", db)
    image = load(old, docker_archive([LAYER1], ["app:1"]), None)
    old.tag("app:1", "app:2")
    # rewrite the per-tenant tables in their form before tenants
    db.executescript("""
        DROP TABLE image_owners;
        CREATE TABLE tags_v0 (ref TEXT PRIMARY KEY, image_id TEXT NOT NULL);
        INSERT INTO tags_v0 SELECT ref, image_id FROM image_tags;
        DROP TABLE image_tags;
        ALTER TABLE tags_v0 RENAME TO image_tags;
        DROP TABLE image_repo_digests;
        CREATE TABLE image_repo_digests (repo TEXT NOT NULL, digest TEXT NOT NULL,
            image_id TEXT NOT NULL, PRIMARY KEY (repo, digest));
        INSERT INTO image_repo_digests VALUES ('reg.example/app', 'sha256:' || hex(zeroblob(32)),
                                               (SELECT id FROM image_records));
        DROP TABLE blob_sources;
        CREATE TABLE blob_sources (digest TEXT NOT NULL, registry TEXT NOT NULL,
            repo TEXT NOT NULL, PRIMARY KEY (digest, registry, repo));
        INSERT INTO blob_sources VALUES ((SELECT id FROM image_records), 'reg.example', 'app');
    """)
    store = ImageStore(tmp_path / "root", db)
    for tenant in (None, ""):
        got = store.get("app:2", tenant)
        assert got.id == image.id and got.repo_tags == ("app:1", "app:2")
        assert any(d.startswith("reg.example/app@") for d in got.repo_digests)
    with pytest.raises(NotFound):
        store.get("app:1", "alice")
    assert [i.id for i in store.list("")] == [image.id]
    assert store.blob_sources(image.id, "reg.example", "") == ["app"]
    ImageStore(tmp_path / "root", db)  # a second open migrates nothing again
    assert store.remove("app:1", tenant="") == ["Untagged: app:1"]


def test_the_operator_removes_a_tag_as_its_holder(store: ImageStore) -> None:
    archive = docker_archive([LAYER1], ["app:1"])
    image = load(store, archive, "alice")
    load(store, archive, None)
    assert store.get("app:1").repo_tags == ("app:1",)
    # its own "app:1" goes; alice's, on the same image, stays hers
    assert store.remove("app:1") == ["Untagged: app:1", f"Deleted: {image.id}"]
    assert store.get("app:1", "alice").id == image.id
    with pytest.raises(NotFound):
        store.get("app:1", "")
    # by id, the operator removes the image for every tenant
    assert store.remove(image.id) == ["Untagged: app:1", f"Deleted: {image.id}"]
    assert store.list() == []


def test_blob_mount_sources_are_per_tenant(store: ImageStore) -> None:
    blob = "sha256:" + "1" * 64
    store.record_blob_sources("reg.example", "alice/private", [blob], "alice")
    store.record_blob_sources("reg.example", "bob/app", [blob], "bob")
    assert store.blob_sources(blob, "reg.example", "alice") == ["alice/private"]
    assert store.blob_sources(blob, "reg.example", "bob") == ["bob/app"]
    assert store.blob_sources(blob, "reg.example", "carol") == []
    assert store.blob_sources(blob, "reg.example") == ["alice/private", "bob/app"]
