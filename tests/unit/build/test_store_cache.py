"""The build cache in the image store: a step's image is held by its cache row until a build
adopts it, it is the tenant's own, intermediate images are not listed, prune collects them."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest

from steelcup.errors import NotFound
from steelcup.image.store import Image, ImageStore
from steelcup.tenancy.quota import QuotaExceeded
from tests.unit.image.tarutil import make_tar


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "root", sqlite3.connect(tmp_path / "state.db"))


def step(store: ImageStore, base: Image | None, tenant: str | None, key: str,
         data: bytes | None = None) -> Image:
    layer = io.BytesIO(make_tar([("file", "f", data)])) if data is not None else None
    return store.derive(base.id if base else None, layer, config={"Cmd": ["x"]},
                        history={"created_by": key}, cache=(tenant, key))


def test_steps_chain_layers_and_history(store: ImageStore) -> None:
    scratch = store.derive(None, None, config={}, history=None, cache=(None, "s"))
    assert scratch.diff_ids == () and store.history(scratch.id) == []
    one = step(store, scratch, None, "k1", b"1")
    two = step(store, one, None, "k2")  # a metadata step: no layer
    assert len(two.diff_ids) == 1 and two.diff_ids == one.diff_ids
    entries = store.history(two.id)
    assert [(e.created_by, e.empty_layer) for e in entries] == [("k1", False), ("k2", True)]
    assert two.config.cmd == ("x",)
    assert store.cached(None, "k2") == two and store.cached(None, "nope") is None


def test_cache_is_per_tenant_and_intermediates_are_not_listed(store: ImageStore) -> None:
    img = step(store, None, "alice", "k", b"a")
    assert store.cached("alice", "k") == img and store.cached("bob", "k") is None
    assert store.get(img.id, "alice").id == img.id  # a step of hers: hers to run
    with pytest.raises(NotFound):
        store.get(img.id, "bob")
    assert store.list("alice") == [] and store.list() == []
    assert store.list("alice", intermediates=True) == [img]  # docker images -a
    assert store.list("bob", intermediates=True) == []
    final = store.adopt(img.id, ["app:1"], "alice")
    assert final.repo_tags == ("app:1",)
    assert [i.id for i in store.list("alice")] == [img.id] and store.list("bob") == []


def test_adopt_counts_against_the_images_quota(store: ImageStore) -> None:
    store.images_quota = lambda tenant: 1
    first = step(store, None, "alice", "k1", b"1")
    second = step(store, None, "alice", "k2", b"2")  # intermediates do not count
    store.adopt(first.id, ["a:1"], "alice")
    with pytest.raises(QuotaExceeded):
        store.adopt(second.id, ["a:2"], "alice")


def test_prune_build_cache_deletes_what_only_it_held(store: ImageStore) -> None:
    kept = step(store, None, "alice", "k1", b"kept")
    gone = step(store, kept, "alice", "k2", b"gone")
    other = step(store, None, "bob", "k1", b"bob's")
    store.adopt(kept.id, ["a:1"], "alice")
    result = store.prune_build_cache("alice")
    assert result.deleted == [f"Deleted: {gone.id}"] and result.reclaimed_bytes > 0
    assert store.cached("alice", "k1") is None  # forgotten, though the image stays hers
    assert store.get("a:1", "alice").id == kept.id
    with pytest.raises(NotFound):
        store.get(gone.id)
    assert store.cached("bob", "k1") == other  # another tenant's cache is untouched


def test_removing_an_adopted_image_forgets_its_cache_row(store: ImageStore) -> None:
    img = step(store, None, None, "k", b"x")
    store.adopt(img.id, ["t:1"], None)
    store.remove("t:1")
    assert store.cached(None, "k") is None
    with pytest.raises(NotFound):
        store.get(img.id)


def test_a_step_built_again_replaces_and_drops_the_old_one(store: ImageStore) -> None:
    old = step(store, None, None, "k", b"old")
    new = step(store, None, None, "k", b"new")  # --no-cache: the same key, a new image
    assert store.cached(None, "k") == new
    with pytest.raises(NotFound):
        store.get(old.id)
    kept = step(store, None, None, "k2", b"kept")
    store.adopt(kept.id, ["kept:1"], None)
    step(store, None, None, "k2", b"other")
    assert store.get("kept:1").id == kept.id  # an adopted image stays
