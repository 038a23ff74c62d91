"""VolumeManager on a temp root: lifecycle, in-use refusal, prune, mount preparation, and
(root only) volumes of bounded size: mounted while held, full at their size, recovered."""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from steelcup import boundedfs, sysmount
from steelcup.errors import (
    Conflict,
    Forbidden,
    InvalidArgument,
    NotFound,
    SteelcupError,
    Unsupported,
)
from steelcup.tenancy.model import Quotas, Tenant
from steelcup.tenancy.quota import QuotaExceeded, QuotaGate
from steelcup.volume.manager import FILES_TAG, GIB, VolumeManager
from steelcup.volume.spec import resolve_mounts

MIB = 1 << 20


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
    assert [v.name for v in removed] == [anon.name]  # named volumes survive a default prune
    assert vm.prune(all_volumes=True) == ([], 0)  # data is still in use
    users.clear()
    removed, reclaimed = vm.prune(all_volumes=True)
    assert [v.name for v in removed] == ["data"] and reclaimed == 1
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
    prepared = vm.prepare(plans, rootfs, holder="c1")
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
        vm.prepare(missing, holder="c1")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(Unsupported, match="neither a directory nor a regular file"):
        vm.prepare(resolve_mounts(binds=[f"{tmp_path / 'fifo'}:/f"]), holder="c1")


def test_materialize_names_anonymous_volumes_and_copy_up_later(tmp_path: Path) -> None:
    vm = VolumeManager(tmp_path / "root")
    rootfs = tmp_path / "rootfs"
    (rootfs / "seed").mkdir(parents=True)
    (rootfs / "seed" / "a").write_text("a")
    plans = vm.materialize(resolve_mounts(binds=["/seed", "named:/n"]))
    assert all(p.source for p in plans)
    anon = next(p for p in plans if p.target == "/seed")
    assert vm.get(anon.source).anonymous and not vm.get("named").anonymous
    prepared = vm.prepare(plans, rootfs, holder="c1")  # first start: the empty volume is seeded
    share = next(p.share for p in prepared if p.plan.target == "/seed")
    assert share is not None and (share.host_path / "a").read_text() == "a"


@pytest.mark.parametrize("name", ["data\n", "a\x00b", "a/b", "x" * 256])
def test_create_refuses_bad_names(tmp_path: Path, name: str) -> None:
    vm = VolumeManager(tmp_path, in_use=lambda name: [])
    with pytest.raises(InvalidArgument, match="volume name"):
        vm.create(name)
    assert vm.list() == []


def _sized(root: Path) -> VolumeManager:
    disks = boundedfs.DiskMaker(root / "cache", 64 * MIB, label="steelcup-vol",
                                empty_root=True)
    return VolumeManager(root, disks=disks)


def test_size_options_like_the_local_driver(tmp_path: Path) -> None:
    vm = _sized(tmp_path)
    sized = vm.create("sized", options={"size": "32m"})
    assert sized.size_bytes == 32 * MIB and sized.options == {"size": "32m"}
    assert (tmp_path / "volumes/sized/disk.img").stat().st_size == 32 * MIB
    assert not sized.mountpoint.exists()  # only while mounted: never exported unbounded
    default = vm.create("default")
    assert default.size_bytes == 64 * MIB and default.options == {"size": "64M"}
    assert vm.create(anonymous=True).size_bytes == 64 * MIB
    with pytest.raises(Unsupported, match="'type'"):
        vm.create("nfs", options={"type": "nfs", "o": "addr=10.0.0.1", "device": ":/x"})
    with pytest.raises(InvalidArgument, match="invalid option"):
        vm.create("typo", options={"sise": "1g"})
    for bad in ("1m", "lots"):
        with pytest.raises(InvalidArgument):
            vm.create("tiny", options={"size": bad})
    with pytest.raises(Unsupported, match="not available"):
        VolumeManager(tmp_path / "plain").create("p", options={"size": "1g"})
    assert {v.name for v in vm.list()} >= {"sized", "default"}
    assert not (tmp_path / "volumes/tiny").exists()
    plans = vm.materialize(resolve_mounts(mounts=[
        {"Target": "/m", "Source": "bymount",
         "VolumeOptions": {"DriverConfig": {"Options": {"size": "48m"}}}}]))
    assert vm.get(plans[0].source).size_bytes == 48 * MIB  # --mount volume-opt=size=


def _mounts_under(path: Path) -> list[str]:
    return [line for line in Path("/proc/self/mounts").read_text().splitlines()
            if str(path) in line]


@pytest.fixture
def sized_root(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("loop mounts need root")
    yield tmp_path
    VolumeManager(tmp_path).recover()  # a failed test leaves no mount behind


def _fill(path: Path, mib: int) -> int:
    """Write up to `mib` MiB to `path` like a guest would; what was written before ENOSPC."""
    written = 0
    with pytest.raises(OSError) as caught, open(path, "wb") as f:  # noqa: PT012
        for _ in range(mib):
            f.write(b"x" * MIB)
            f.flush()
            written += MIB
        os.fsync(f.fileno())
    assert caught.value.errno == errno.ENOSPC
    return written


def test_a_sized_volume_is_mounted_while_held_and_bounded(sized_root: Path) -> None:
    """The attack, on the host: write past a volume's size. Without a bounded volume the write
    succeeds (and the host's disk is what fills)."""
    vm = _sized(sized_root)
    vol = vm.create("data", options={"size": "32m"})
    image = sized_root / "volumes/data/disk.img"
    plans = vm.materialize(resolve_mounts(binds=["data:/data"]))
    [first] = vm.prepare(plans, holder="c1")
    assert first.share is not None and first.share.host_path == vol.mountpoint
    assert sysmount.is_mountpoint(vol.mountpoint) and not any(vol.mountpoint.iterdir())
    assert "nosuid" in "".join(_mounts_under(vol.mountpoint))
    assert _fill(vol.mountpoint / "fill", 64) <= 32 * MIB
    assert image.stat().st_blocks * 512 <= 33 * MIB
    (vol.mountpoint / "fill").unlink()
    (vol.mountpoint / "kept").write_text("data")
    vm.prepare(plans, holder="c2")  # a second container shares the mount
    vm.release("c1")
    assert (vol.mountpoint / "kept").read_text() == "data"
    with pytest.raises(Conflict, match="in use"):
        vm.remove("data")
    vm.release("c2")
    vm.release("c2")  # idempotent
    assert not vol.mountpoint.exists() and not _mounts_under(sized_root)
    assert 0 < vm.usage(vol) <= 33 * MIB  # read from the image, without mounting it
    vm.prepare(plans, holder="c3")
    assert (vol.mountpoint / "kept").read_text() == "data"
    vm.release("c3")
    assert [v.name for v in vm.prune(all_volumes=True)[0]] == ["data"]
    assert not image.exists() and not _mounts_under(sized_root)
    loops = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True)
    assert loops.stdout.strip() == ""


def test_copy_up_into_a_sized_volume_and_failure_releases(sized_root: Path) -> None:
    vm = _sized(sized_root)
    rootfs = sized_root / "rootfs"
    (rootfs / "seed").mkdir(parents=True)
    (rootfs / "seed/a").write_text("a")
    (rootfs / "big").mkdir()
    with open(rootfs / "big/blob", "wb") as f:
        f.truncate(40 * MIB)  # sparse in the image, 40 MiB once copied
    plans = vm.materialize(resolve_mounts(binds=["/seed"]))
    [seeded] = vm.prepare(plans, rootfs, holder="c1")
    assert seeded.share is not None and (seeded.share.host_path / "a").read_text() == "a"
    vm.release("c1")
    vm.create("small", options={"size": "16m"})
    too_big = vm.materialize(resolve_mounts(binds=["/seed", "small:/big"]))
    with pytest.raises(SteelcupError, match="into volume small"):
        vm.prepare(too_big, rootfs, holder="c2")
    assert not _mounts_under(sized_root)  # what it had mounted is released


def test_recover_unmounts_what_a_dead_daemon_left(sized_root: Path) -> None:
    vm = _sized(sized_root)
    plans = vm.materialize(resolve_mounts(binds=["va:/a", "vb:/b"]))
    vm.prepare(plans, holder="c1")
    (sized_root / "volumes/.rm-gone").mkdir()
    legacy = sized_root / "volumes/old"  # a volume from before volumes had a size
    (legacy / "_data").mkdir(parents=True)
    (legacy / "_data/f").write_text("old")
    (legacy / "meta.json").write_text('{"CreatedAt": "x", "Labels": {}, "Options": {}}')
    assert len(_mounts_under(sized_root)) == 2
    again = _sized(sized_root)
    again.recover()
    assert not _mounts_under(sized_root)
    assert not (sized_root / "volumes/va/_data").exists()
    assert not (sized_root / "volumes/.rm-gone").exists()
    old = again.get("old")
    assert old.size_bytes == 0 and not old.options
    [prepared] = again.prepare(resolve_mounts(binds=["old:/o"]), holder="c2")
    assert prepared.share is not None and (prepared.share.host_path / "f").read_text() == "old"
    assert not _mounts_under(sized_root)  # unbounded: a plain directory, nothing mounted
    again.release("c2")
    assert (legacy / "_data/f").exists()


def test_with_a_vm_id_range_volumes_hold_its_ids_and_binds_are_idmapped(tmp_path: Path) -> None:
    """A volume's files are stored as the VMs' range (copied from the image with their owners,
    an older volume shifted on its next use); a bind reaches QEMU through an idmapped mount
    that is gone after release, the host dir untouched."""
    from steelcup import userns
    from steelcup.idmap import IdRange

    if os.geteuid() != 0 or not userns.supported():
        pytest.skip("needs root and idmapped mounts")
    ids = IdRange(1_000_000_000)
    B = ids.base
    old = VolumeManager(tmp_path / "root")  # an older daemon: no range
    old.create("older")
    (old.get("older").mountpoint / "f").write_text("x")
    vm = VolumeManager(tmp_path / "root", ids=ids)
    rootfs = tmp_path / "rootfs"
    (rootfs / "data").mkdir(parents=True)
    (rootfs / "data" / "seed").write_text("seed")
    os.chown(rootfs / "data", B, B)  # as the idmapped layers show the image
    os.chown(rootfs / "data" / "seed", B + 1000, B + 1000)
    os.chmod(rootfs / "data" / "seed", 0o4750)
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    plans = resolve_mounts(binds=[f"{host_dir}:/h", "older:/older"], image_volumes=["/data"])
    prepared = {p.plan.target: p for p in vm.prepare(plans, rootfs, holder="c1")}
    try:
        data = prepared["/data"].share
        assert data is not None
        seed = (data.host_path / "seed").stat()
        assert (seed.st_uid, seed.st_gid, seed.st_mode & 0o7777) == (B + 1000, B + 1000, 0o4750)
        assert data.host_path.stat().st_uid == B
        assert vm.ids_of(prepared["/data"].volume) == ids
        older = vm.get("older").mountpoint
        assert (older / "f").stat().st_uid == B and vm.ids_of("older") == ids
        bind = prepared["/h"].share
        assert bind is not None and bind.host_path != host_dir
        assert sysmount.is_mountpoint(bind.host_path)
        assert bind.host_path.stat().st_uid not in range(B, B + 65536)  # host root: nobody
    finally:
        vm.release("c1")  # a failed assertion leaves no bind mounted
    assert not bind.host_path.exists() and host_dir.is_dir()
    assert not (tmp_path / "root" / "binds" / "c1").exists()


def test_a_bind_the_containers_root_cannot_reach_is_refused_with_what_to_do(
        tmp_path: Path) -> None:
    """With a VM id range the container's root is an unprivileged host uid: a host-root dir
    of mode 0700 is out of its reach, said before any VM boots (not as a QEMU failure)."""
    from steelcup import userns
    from steelcup.idmap import IdRange

    if os.geteuid() != 0 or not userns.supported():
        pytest.skip("needs root and idmapped mounts")
    vm = VolumeManager(tmp_path / "root", ids=IdRange(1_000_000_000))
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    with pytest.raises(InvalidArgument, match=r"out of the container's reach.*chmod o\+rx"):
        vm.prepare(resolve_mounts(binds=[f"{closed}:/c"]), holder="c1")
    assert not (tmp_path / "root" / "binds" / "c1").exists()
    closed.chmod(0o755)
    users = tmp_path / "users"
    users.mkdir(mode=0o700)
    os.chown(users, 1000, 1000)  # a user's private dir: the guest's uid 1000 is that user
    try:
        prepared = vm.prepare(resolve_mounts(binds=[f"{closed}:/c", f"{users}:/u"]),
                              holder="c1")
        assert len(prepared) == 2
    finally:
        vm.release("c1")


def test_a_tenants_volume_sizes_count_against_its_volume_size_quota(tmp_path: Path) -> None:
    """The quota gate around every creation (tenancy/objects.py wires the same counts)."""
    vm = _sized(tmp_path)
    gate = QuotaGate(lambda name: Tenant(name, "x", "", Quotas(volumes=10, volume_gib=3)))
    gate.register("volumes", lambda t: len(vm.list(t)))
    gate.register("volume_gib", lambda t: sum(-(-v.size_bytes // GIB) for v in vm.list(t)))
    vm.admit = gate.admit
    vm.create("big", tenant="alice", options={"size": "2g"})
    with pytest.raises(QuotaExceeded, match=re.escape(
            "quota exceeded: volume-size 2 GiB of 3 GiB in use, 2 GiB more asked "
            "(tenant alice)")):
        vm.create("more", tenant="alice", options={"size": "2g"})
    assert [v.name for v in vm.list("alice")] == ["big"]  # nothing half-made
    vm.create("small", tenant="alice", options={"size": "1g"})  # exactly at the quota
    vm.create("same", options={"size": "2g"})  # the operator's own: never limited
    vm.remove("alice/big")
    vm.create("more", tenant="alice", options={"size": "2g"})  # removal freed its share


def test_single_file_binds_are_bound_on_one_files_share_and_stay_live(tmp_path: Path) -> None:
    """`-v /host/file:/in/ctr/file[:ro]`: each file is bound (a symlink resolved, then held) on
    a point of the container's one `files` share; writes go both ways through it, a read-only
    one is read-only on the host's bind (the guest could write through the share), and release
    and a daemon's recovery leave the host's files alone."""
    if os.geteuid() != 0:
        pytest.skip("needs root to bind")
    vm = VolumeManager(tmp_path / "root")
    log, hosts, real = tmp_path / "termination-log", tmp_path / "hosts", tmp_path / "real"
    log.write_text("")
    real.write_text("127.0.0.1 localhost\n")
    hosts.symlink_to(real)
    plans = resolve_mounts(binds=[f"{log}:/dev/termination-log", f"{hosts}:/etc/hosts:ro"])
    prepared = vm.prepare(plans, holder="c1")
    try:
        shares = {p.share for p in prepared}
        assert len(shares) == 1
        (share,) = shares
        assert share is not None and share.tag == FILES_TAG and share.remap_devices
        requests = [p.request for p in prepared]
        assert [(r.fstype, r.source, r.subdir, r.readonly) for r in requests] == [
            ("bind", FILES_TAG, "0", False), ("bind", FILES_TAG, "1", True)]
        point_log, point_hosts = share.host_path / "0", share.host_path / "1"
        point_log.write_text("bye")  # as the container writes it, through the share
        assert log.read_text() == "bye"
        real.write_text("10.0.0.1 web\n")  # the host's change is seen
        assert point_hosts.read_text() == "10.0.0.1 web\n"
        with pytest.raises(OSError) as exc:
            point_hosts.write_text("evil")
        assert exc.value.errno == errno.EROFS
        # the symlink was resolved when bound: pointing it elsewhere changes nothing
        hosts.unlink()
        hosts.symlink_to(log)
        assert point_hosts.read_text() == "10.0.0.1 web\n"
    finally:
        vm.release("c1")
    assert not (tmp_path / "root" / "binds" / "c1").exists()
    assert log.read_text() == "bye" and real.read_text() == "10.0.0.1 web\n"
    vm.release("c1")  # idempotent
    # a daemon that died with a file bound: the next one's recovery unbinds it
    vm.prepare(resolve_mounts(binds=[f"{log}:/f"]), holder="c2")
    assert sysmount.is_mountpoint(tmp_path / "root" / "binds" / "c2" / "files" / "0")
    VolumeManager(tmp_path / "root").recover()
    assert not (tmp_path / "root" / "binds" / "c2").exists() and log.read_text() == "bye"


def test_a_tenant_still_cannot_bind_a_host_file(tmp_path: Path) -> None:
    vm = VolumeManager(tmp_path / "root")
    (tmp_path / "f").write_text("secret")
    with pytest.raises(Forbidden, match="not available to tenants"):
        vm.prepare(resolve_mounts(binds=[f"{tmp_path / 'f'}:/f"]), holder="c1", tenant="acme")
    assert not (tmp_path / "root" / "binds" / "c1").exists()
