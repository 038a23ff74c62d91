"""VolumeManager on a temp root: lifecycle, in-use refusal, prune, and mount preparation."""

from __future__ import annotations

from pathlib import Path

import pytest

from steelcup.errors import Conflict, InvalidArgument, NotFound, Unsupported
from steelcup.volume.manager import VolumeManager
from steelcup.volume.spec import resolve_mounts


def test_lifecycle_in_use_and_prune(tmp_path: Path) -> None:
    users: dict[str, list[str]] = {}
    vm = VolumeManager(tmp_path, in_use=lambda name: users.get(name, []))
    v = vm.create("data", labels={"k": "v"})
    assert v.mountpoint == tmp_path / "volumes" / "data" / "_data" and v.mountpoint.is_dir()
    (v.mountpoint / "f").write_text("x")
    assert vm.create("data").created == v.created  # idempotent, keeps content
    assert (v.mountpoint / "f").read_text() == "x"
    anon = vm.create(anonymous=True)
    assert anon.anonymous and len(anon.name) == 64
    assert {x.name for x in vm.list()} == {"data", anon.name}
    users["data"] = ["c0ffee"]
    with pytest.raises(Conflict, match="in use"):
        vm.remove("data")
    removed, _ = vm.prune()
    assert removed == [anon.name]  # named volumes survive a default prune
    assert vm.prune(all_volumes=True) == ([], 0)  # data is still in use
    users.clear()
    assert vm.prune(all_volumes=True) == (["data"], 1)
    with pytest.raises(NotFound):
        vm.get("data")
    with pytest.raises(InvalidArgument):
        vm.create("../etc")
    with pytest.raises(Unsupported):
        vm.create("x1", options={"type": "nfs"})


def test_prepare_shares_requests_and_copy_up(tmp_path: Path) -> None:
    vm = VolumeManager(tmp_path / "root")
    rootfs = tmp_path / "rootfs"
    (rootfs / "var" / "lib" / "db").mkdir(parents=True)
    (rootfs / "var" / "lib" / "db" / "seed.sql").write_text("seed")
    host_dir = tmp_path / "host"
    plans = resolve_mounts(binds=[f"{host_dir}:/mnt/host:ro", "named:/named"],
                           mounts=[{"Type": "tmpfs", "Target": "/scratch",
                                    "TmpfsOptions": {"SizeBytes": 1 << 20}}],
                           image_volumes=["/var/lib/db"])
    prepared = vm.prepare(plans, rootfs)
    by_target = {p.plan.target: p for p in prepared}
    assert host_dir.is_dir()  # -v creates a missing host dir, like docker
    host = by_target["/mnt/host"]
    assert host.share is not None and host.share.readonly and host.request.readonly
    assert host.request.source == host.share.tag and host.request.fstype == "9p"
    tmp = by_target["/scratch"]
    assert tmp.share is None and tmp.request.options == "size=1048576,mode=1777"
    db = by_target["/var/lib/db"]
    assert db.share is not None and (db.share.host_path / "seed.sql").read_text() == "seed"
    assert vm.get(db.volume).anonymous
    assert len({p.share.tag for p in prepared if p.share}) == 3
    missing = resolve_mounts(mounts=[{"Type": "bind", "Source": str(tmp_path / "nope"),
                                      "Target": "/x"}])
    with pytest.raises(InvalidArgument, match="does not exist"):
        vm.prepare(missing)
    (tmp_path / "file").write_text("f")
    with pytest.raises(Unsupported):
        vm.prepare(resolve_mounts(binds=[f"{tmp_path / 'file'}:/f"]))


def test_materialize_names_anonymous_volumes_and_copy_up_later(tmp_path: Path) -> None:
    vm = VolumeManager(tmp_path / "root")
    rootfs = tmp_path / "rootfs"
    (rootfs / "seed").mkdir(parents=True)
    (rootfs / "seed" / "a").write_text("a")
    plans = vm.materialize(resolve_mounts(binds=["/seed", "named:/n"]))
    assert all(p.source for p in plans)
    anon = next(p for p in plans if p.target == "/seed")
    assert vm.get(anon.source).anonymous and not vm.get("named").anonymous
    prepared = vm.prepare(plans, rootfs)  # first start: the empty volume is seeded
    share = next(p.share for p in prepared if p.plan.target == "/seed")
    assert share is not None and (share.host_path / "a").read_text() == "a"


@pytest.mark.parametrize("name", ["data\n", "a\x00b", "a/b", "x" * 256])
def test_create_refuses_bad_names(tmp_path: Path, name: str) -> None:
    vm = VolumeManager(tmp_path, in_use=lambda name: [])
    with pytest.raises(InvalidArgument, match="volume name"):
        vm.create(name)
    assert vm.list() == []
