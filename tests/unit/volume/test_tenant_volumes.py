"""Volumes and snapshots per tenant in the store (docs/tenancy.md): names unique per tenant,
each tenant's in a dir of its own, lookups that answer another tenant's as missing, lists and
prune of one tenant, binds of host paths refused to tenants, and the operator's volumes of
before tenancy where they were."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steelcup.errors import Conflict, Forbidden, InvalidArgument, NotFound
from steelcup.volume import namespace
from steelcup.volume.manager import VolumeManager
from steelcup.volume.spec import resolve_mounts


def test_keys_and_dirs_of_namespaces(tmp_path: Path) -> None:
    assert namespace.key("", "data") == "data"
    assert namespace.key("alice", "data") == "alice/data"
    assert namespace.split("alice/data") == ("alice", "data")
    assert namespace.split("data") == ("", "data")
    for bad in ("Alice/data", "a/b/c", "../data", "alice/", "/data", "alice/.x"):
        with pytest.raises(InvalidArgument):
            namespace.split(bad)
    assert namespace.tenant_dir(tmp_path, "") == tmp_path
    assert namespace.tenant_dir(tmp_path, "alice") == tmp_path / "@alice"
    with pytest.raises(InvalidArgument):
        namespace.tenant_dir(tmp_path, "../x")


def test_the_same_name_in_each_namespace_is_a_volume_of_its_own(tmp_path: Path) -> None:
    vm = VolumeManager(tmp_path)
    mine = vm.create("data")
    alice = vm.create("data", tenant="alice")
    bob = vm.create("data", tenant="bob")
    assert mine.mountpoint == tmp_path / "volumes/data/_data"  # the operator's: where it was
    assert alice.mountpoint == tmp_path / "volumes/@alice/data/_data"
    assert len({mine.mountpoint, alice.mountpoint, bob.mountpoint}) == 3
    (alice.mountpoint / "f").write_text("alice's")
    assert not (bob.mountpoint / "f").exists()
    assert vm.create("data", tenant="alice").created == alice.created  # idempotent, per tenant
    assert (alice.key, bob.key, mine.key) == ("alice/data", "bob/data", "data")
    assert json.loads((tmp_path / "volumes/@bob/data/meta.json").read_text())["Tenant"] == "bob"
    assert [v.key for v in vm.list("bob")] == ["bob/data"]
    assert [v.key for v in vm.list("")] == ["data"]
    assert {v.key for v in vm.list()} == {"data", "alice/data", "bob/data"}
    assert vm.list("carol") == []


def test_a_tenant_resolves_only_its_own_and_anothers_is_missing(tmp_path: Path) -> None:
    vm = VolumeManager(tmp_path)
    vm.create("data", tenant="alice")
    vm.create("only-alice", tenant="alice")
    vm.create("data", tenant="bob")
    assert vm.resolve("data", "bob") == "bob/data"
    for ref in ("only-alice", "alice/data", "alice/only-alice", "../x", "nope", ""):
        with pytest.raises(NotFound) as caught:
            vm.resolve(ref, "bob")
        assert str(caught.value) == f"get {ref}: no such volume"  # as for a missing one
    # the operator: keys; a plain name is its own, else the only tenant's of that name
    assert vm.resolve("alice/data", None) == "alice/data"
    assert vm.resolve("only-alice", None) == "alice/only-alice"
    with pytest.raises(InvalidArgument, match="2 volumes of different tenants"):
        vm.resolve("data", None)
    vm.create("data")
    assert vm.resolve("data", None) == "data"
    with pytest.raises(NotFound, match="get carol/data: no such volume"):
        vm.resolve("carol/data", None)


def test_prune_and_remove_touch_only_the_tenants_own(tmp_path: Path) -> None:
    users: dict[str, list[str]] = {}
    vm = VolumeManager(tmp_path, in_use=lambda key: users.get(key, []))
    alice_anon = vm.create(tenant="alice", anonymous=True)
    vm.create("data", tenant="alice")
    bob_anon = vm.create(tenant="bob", anonymous=True)
    vm.create("data", tenant="bob")
    users["alice/data"] = ["c1"]
    removed, _ = vm.prune("bob", all_volumes=True)
    assert {v.key for v in removed} == {bob_anon.key, "bob/data"}
    assert {v.key for v in vm.list()} == {alice_anon.key, "alice/data"}
    with pytest.raises(Conflict, match=r"remove data: volume is in use - \[c1\]"):
        vm.remove("alice/data")  # in use is per volume, not per name
    vm.create("data", tenant="bob")
    vm.remove("bob/data")
    assert [v.key for v in vm.prune(None)[0]] == [alice_anon.key]  # the operator's: all


def test_container_mounts_resolve_in_its_tenants_namespace_and_binds_are_refused(
        tmp_path: Path) -> None:
    vm = VolumeManager(tmp_path / "root")
    alice = vm.create("data", tenant="alice")
    (alice.mountpoint / "secret").write_text("alice's")
    plans = vm.materialize(resolve_mounts(
        binds=["data:/d", "/anon"],
        mounts=[{"Type": "volume", "Source": "bymount", "Target": "/m"}]), "bob")
    assert [v.key for v in vm.list("alice")] == ["alice/data"]  # nothing made for alice
    assert {v.name for v in vm.list("bob") if not v.anonymous} == {"data", "bymount"}
    assert [v.anonymous for v in vm.list("bob")].count(True) == 1
    prepared = {p.plan.target: p for p in vm.prepare(plans, holder="c1", tenant="bob")}
    share = prepared["/d"].share
    assert share is not None and prepared["/d"].volume == "bob/data"
    assert share.host_path == tmp_path / "root/volumes/@bob/data/_data"
    assert not (share.host_path / "secret").exists()
    vm.release("c1")
    host = tmp_path / "host"
    host.mkdir()
    for binds, mounts in (([f"{host}:/h"], []),
                          ([], [{"Type": "bind", "Source": str(host), "Target": "/h"}])):
        bind = resolve_mounts(binds=binds, mounts=mounts)
        with pytest.raises(Forbidden, match="not available to tenants"):
            vm.materialize(bind, "bob")
        with pytest.raises(Forbidden, match="not available to tenants"):
            vm.prepare(bind, holder="c2", tenant="bob")
        assert len(vm.prepare(bind, holder="c3")) == 1  # the operator's own containers may
        vm.release("c3")


def test_snapshots_are_the_tenants_own(tmp_path: Path) -> None:
    vm = VolumeManager(tmp_path)
    alice = vm.create("data", tenant="alice")
    (alice.mountpoint / "f").write_text("alice's")
    bob = vm.create("data", tenant="bob")
    (bob.mountpoint / "f").write_text("bob's")
    snap = vm.snapshots.create("alice/data", "s1")
    assert (snap.key, snap.volume, snap.tenant) == ("alice/s1", "data", "alice")
    assert (tmp_path / "snapshots/@alice/s1/meta.json").is_file()
    assert snap.to_json()["Name"] == "s1" and snap.to_json(keys=True)["Volume"] == "alice/data"
    assert vm.snapshots.create("bob/data", "s1").key == "bob/s1"  # names per tenant
    assert [s.key for s in vm.snapshots.list("alice")] == ["alice/s1"]
    assert [s.key for s in vm.snapshots.list("bob", "data")] == ["bob/s1"]
    assert {s.key for s in vm.snapshots.list()} == {"alice/s1", "bob/s1"}
    vm.snapshots.create("alice/data", "only-alice")
    for ref in ("only-alice", "alice/s1", "nope"):
        with pytest.raises(NotFound) as caught:
            vm.snapshots.resolve(ref, "bob")
        assert str(caught.value) == f"no such snapshot: {ref}"
    assert vm.snapshots.resolve("s1", "bob") == "bob/s1"
    assert vm.snapshots.resolve("alice/s1", None) == "alice/s1"
    # a volume from a snapshot: only from one's own
    with pytest.raises(NotFound, match="no such snapshot: only-alice"):
        vm.create("copy", tenant="bob", options={"snapshot": "only-alice"})
    with pytest.raises(NotFound):
        vm.create("copy", tenant="bob", options={"snapshot": "alice/s1"})
    copy = vm.create("copy", tenant="bob", options={"snapshot": "s1"})
    assert (copy.mountpoint / "f").read_text() == "bob's"
    # a volume stays while its own snapshots do, not another tenant's of the same name
    vm.snapshots.remove("bob/s1")
    vm.remove("bob/data")
    with pytest.raises(Conflict, match="has snapshots"):
        vm.remove("alice/data")


def test_volumes_of_before_tenancy_stay_the_operators_and_leftovers_are_cleaned(
        tmp_path: Path) -> None:
    legacy = tmp_path / "volumes/old"
    (legacy / "_data").mkdir(parents=True)
    (legacy / "_data/f").write_text("old")
    (legacy / "meta.json").write_text('{"CreatedAt": "x", "Labels": {}, "Options": {}}')
    vm = VolumeManager(tmp_path)
    vm.create("data", tenant="alice")
    (tmp_path / "volumes/@alice/.tmp-half").mkdir()
    (tmp_path / "volumes/@alice/.rm-gone").mkdir()
    (tmp_path / "snapshots/@alice/.tmp-half").mkdir(parents=True)
    vm.recover()
    assert sorted(p.name for p in (tmp_path / "volumes/@alice").iterdir()) == ["data"]
    assert not (tmp_path / "snapshots/@alice/.tmp-half").exists()
    old = vm.get("old")
    assert old.tenant == "" and (old.mountpoint / "f").read_text() == "old"
    assert vm.resolve("old", None) == "old" and [v.key for v in vm.list("")] == ["old"]
    with pytest.raises(NotFound):
        vm.resolve("old", "alice")
    # a volume dir whose meta names another tenant (moved by hand) is nobody's
    moved = tmp_path / "volumes/@bob/data"
    moved.parent.mkdir()
    (tmp_path / "volumes/@alice/data").rename(moved)
    with pytest.raises(NotFound):
        vm.get("bob/data")
    assert vm.list("bob") == []
