"""docker's -v / --mount / --tmpfs syntaxes and image VOLUMEs -> MountPlans (pure)."""

from __future__ import annotations

import pytest

from steelcup.errors import InvalidArgument, Unsupported
from steelcup.volume.spec import (
    MountKind,
    MountPlan,
    mount_from_json,
    parse_bind,
    parse_mount_flag,
    parse_size,
    parse_tmpfs,
    resolve_mounts,
)


@pytest.mark.parametrize("spec,expected", [
    ("/data", MountPlan(MountKind.VOLUME, "/data")),
    ("cache:/var/cache", MountPlan(MountKind.VOLUME, "/var/cache", "cache")),
    ("cache:/var/cache:ro", MountPlan(MountKind.VOLUME, "/var/cache", "cache", True)),
    ("cache:/c:ro,nocopy", MountPlan(MountKind.VOLUME, "/c", "cache", True, nocopy=True)),
    ("/srv/www:/www:rw,z", MountPlan(MountKind.BIND, "/www", "/srv/www",
                                     create_host_path=True)),
    ("/srv/../srv/www/:/www/:ro", MountPlan(MountKind.BIND, "/www", "/srv/www", True,
                                            create_host_path=True)),
])
def test_parse_bind(spec: str, expected: MountPlan) -> None:
    assert parse_bind(spec) == expected


@pytest.mark.parametrize("spec", [
    "data", "a:/x:ro:extra", ":/x", "vol:", "vol:relative", "vol:/x:bogus", "./rel:/x",
    "-bad:/x", "v:/", "v:/a/../..",
])
def test_parse_bind_rejects(spec: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_bind(spec)


def test_mount_flag_to_api_json_and_back() -> None:
    j = parse_mount_flag("type=volume,src=data,dst=/data,readonly,volume-nocopy")
    assert j == {"Type": "volume", "Source": "data", "Target": "/data", "ReadOnly": True,
                 "VolumeOptions": {"NoCopy": True}}
    assert mount_from_json(j) == MountPlan(MountKind.VOLUME, "/data", "data", True, nocopy=True)
    j = parse_mount_flag("type=tmpfs,destination=/run,tmpfs-size=64m,tmpfs-mode=1770")
    assert mount_from_json(j) == MountPlan(MountKind.TMPFS, "/run", "", False, 64 << 20, 0o1770)
    j = parse_mount_flag("type=volume,src=sized,dst=/s,volume-opt=size=64m,volume-label=a=b")
    assert j["VolumeOptions"] == {"DriverConfig": {"Options": {"size": "64m"}},
                                  "Labels": {"a": "b"}}  # docker's shape
    plan = mount_from_json(j)
    assert plan.volume_options == (("size", "64m"),)
    assert MountPlan.from_json(plan.to_json()) == plan
    with pytest.raises(Unsupported):
        mount_from_json({"Target": "/x", "VolumeOptions": {"DriverConfig": {"Name": "nfs"}}})
    j = parse_mount_flag("type=bind,source=/srv,target=/srv,ro=false")
    assert mount_from_json(j) == MountPlan(MountKind.BIND, "/srv", "/srv")
    for bad in ("type=volume,src=x", "type=bind,src=/a,dst=/b,colour=red",
                "dst=/x,readonly=maybe"):
        with pytest.raises(InvalidArgument):
            parse_mount_flag(bad)
    for bad_json in ({"Type": "bind", "Source": "rel", "Target": "/x"},
                     {"Type": "tmpfs", "Source": "x", "Target": "/x"},
                     {"Type": "npipe", "Target": "/x"},
                     {"Type": "volume", "Source": "b@d", "Target": "/x"}):
        with pytest.raises(InvalidArgument):
            mount_from_json(bad_json)


def test_tmpfs_and_sizes() -> None:
    assert parse_tmpfs("/run", "size=1g,mode=755,noexec") == MountPlan(
        MountKind.TMPFS, "/run", "", False, 1 << 30, 0o755)
    assert parse_tmpfs("/t", "").tmpfs_options() == "mode=1777"
    assert parse_tmpfs("/t", "size=4k").tmpfs_options() == "size=4096,mode=1777"
    assert parse_size("512") == 512 and parse_size("2M") == 2 << 20 and parse_size("1kb") == 1024
    with pytest.raises(InvalidArgument):
        parse_size("lots")
    with pytest.raises(Unsupported):
        parse_tmpfs("/t", "uid=1000")


def test_resolve_orders_parents_first_and_adds_anonymous_image_volumes() -> None:
    plans = resolve_mounts(
        binds=["/srv:/data/srv", "logs:/data"],
        mounts=[{"Type": "tmpfs", "Target": "/tmp"}],
        image_volumes=["/data", "/var/lib/db"],
        tmpfs={"/run": "size=1m"},
    )
    assert [p.target for p in plans] == ["/data", "/run", "/tmp", "/data/srv", "/var/lib/db"]
    assert plans[0].source == "logs"  # the explicit mount wins over the image VOLUME
    anon = plans[-1]
    assert anon.kind is MountKind.VOLUME and anon.source == ""


def test_duplicate_targets_rejected() -> None:
    with pytest.raises(InvalidArgument, match="Duplicate mount point"):
        resolve_mounts(binds=["aa:/x"], mounts=[{"Type": "tmpfs", "Target": "/x/"}])


def test_plan_json_round_trip() -> None:
    for plan in resolve_mounts(binds=["/h:/a:ro", "v1:/b", "/c"], tmpfs={"/t": "size=1k"}):
        assert MountPlan.from_json(plan.to_json()) == plan


@pytest.mark.parametrize("spec", ["/h:/c:shared", "/h:/c:rslave", "/h:/c:ro,rshared"])
def test_bind_propagation_a_vm_cannot_have_is_refused(spec: str) -> None:
    with pytest.raises(InvalidArgument, match="propagation"):
        parse_bind(spec)


def test_private_propagation_and_no_op_bind_options_are_accepted() -> None:
    assert parse_bind("/h:/c:ro,rprivate,z").readonly


@pytest.mark.parametrize(("mount", "named"), [
    ({"Type": "bind", "Source": "/h", "Target": "/c",
      "BindOptions": {"Propagation": "rshared"}}, "BindOptions.Propagation"),
    ({"Type": "bind", "Source": "/h", "Target": "/c", "BindOptions": {"NonRecursive": True}},
     "BindOptions.NonRecursive"),
    ({"Type": "volume", "Source": "vol", "Target": "/c", "VolumeOptions": {"Subpath": "a"}},
     "VolumeOptions.Subpath"),
    ({"Type": "tmpfs", "Target": "/c", "TmpfsOptions": {"Options": [["noexec"]]}},
     "TmpfsOptions.Options"),
    ({"Type": "tmpfs", "Target": "/c", "BindOptions": {"Propagation": "rprivate"}},
     "BindOptions cannot be used"),
])
def test_mount_settings_not_honoured_are_refused(mount: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidArgument, match=named):
        mount_from_json(mount)


def test_mount_create_mountpoint_and_volume_labels_are_applied() -> None:
    bind = mount_from_json({"Type": "bind", "Source": "/h", "Target": "/c",
                            "BindOptions": {"Propagation": "rprivate", "CreateMountpoint": True}})
    assert bind.create_host_path
    vol = mount_from_json({"Type": "volume", "Source": "vol", "Target": "/c",
                           "VolumeOptions": {"Labels": {"tier": "gold"}}})
    assert vol.volume_labels == (("tier", "gold"),)
    assert MountPlan.from_json(vol.to_json()) == vol
    flag = parse_mount_flag("type=bind,src=/h,dst=/c,bind-propagation=rshared")
    with pytest.raises(InvalidArgument, match="Propagation"):
        mount_from_json(flag)
