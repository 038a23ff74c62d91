"""HostConfig.SteelcupRootfs (steelcup-runtime's bundles): a container whose root is a host
directory needs no image, survives a daemon restart, and is refused to a tenant."""

from __future__ import annotations

from pathlib import Path

import pytest

from steelcup.api import docker_codec as codec
from steelcup.errors import Forbidden, InvalidArgument
from steelcup.runtime.model import ContainerConfig
from steelcup.state.db import open_db
from tests.unit.runtime.support import make_runtime


def _config(root: Path, tenant: str = "") -> ContainerConfig:
    return ContainerConfig(image="", image_id="", entrypoint=("/bin/true",),
                           network_mode="none", rootfs_dir=str(root), tenant=tenant)


def test_a_host_directory_root_needs_no_image_and_is_kept(tmp_path: Path) -> None:
    bundle_root = tmp_path / "bundle" / "rootfs"
    bundle_root.mkdir(parents=True)
    db = open_db(tmp_path)
    runtime = make_runtime(tmp_path, db)
    record = runtime.create(_config(bundle_root), "oci1")
    assert record.config.rootfs_dir == str(bundle_root)
    assert record.config.image_id == "" and record.path == "/bin/true"
    restarted = make_runtime(tmp_path, db)
    restarted.recover()
    assert restarted.record("oci1").config.rootfs_dir == str(bundle_root)
    shown = codec.encode_inspect(restarted.record("oci1"), "/x.log")["HostConfig"]
    assert shown["SteelcupRootfs"] == str(bundle_root)
    plain = runtime.create(ContainerConfig(image="base:1", image_id="", cmd=("true",),
                                           network_mode="none"), "plain")
    assert "SteelcupRootfs" not in codec.encode_inspect(plain, "/x.log")["HostConfig"]


def test_a_tenant_cannot_use_a_host_directory_as_root(tmp_path: Path) -> None:
    bundle_root = tmp_path / "rootfs"
    bundle_root.mkdir()
    runtime = make_runtime(tmp_path, open_db(tmp_path))
    with pytest.raises(Forbidden, match="operator only"):
        runtime.create(_config(bundle_root, tenant="acme"), "stolen")
    assert runtime.list() == []


def test_a_missing_directory_is_refused_at_create(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path, open_db(tmp_path))
    with pytest.raises(InvalidArgument, match="does not exist"):
        runtime.create(_config(tmp_path / "absent"), "nope")


def test_the_codec_takes_the_field_without_an_image_and_wants_an_absolute_path() -> None:
    config = codec.decode_create({"Entrypoint": ["/bin/true"],
                                  "HostConfig": {"SteelcupRootfs": "/srv/bundle/rootfs"}})
    assert config.rootfs_dir == "/srv/bundle/rootfs" and config.image == ""
    with pytest.raises(InvalidArgument, match="absolute"):
        codec.decode_create({"HostConfig": {"SteelcupRootfs": "rootfs"}})
    with pytest.raises(InvalidArgument, match="Config cannot be empty"):
        codec.decode_create({"HostConfig": {}})
