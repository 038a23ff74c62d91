"""HostConfig.SteelcupRootfs, SteelcupNetns and SteelcupCgroup over the real TLS listener: a
tenant asking for a host directory as its container's root, a host netns for its NIC or a
host cgroup for its VM gets 403 and nothing is made; the operator (unix socket) may."""

from __future__ import annotations

from pathlib import Path

from tests.unit.tenancy.conftest import Cloud


def test_a_tenant_cannot_make_a_host_directory_its_root(cloud: Cloud, tmp_path: Path) -> None:
    host = tmp_path / "engine-rootfs"
    host.mkdir()
    body = {"Entrypoint": ["/bin/true"], "HostConfig": {"SteelcupRootfs": str(host)}}
    with cloud.client("bob") as bob, cloud.operator() as operator:
        for image in ("", "base:1"):
            refused = bob.post("/containers/create", json={**body, "Image": image})
            assert refused.status_code == 403, refused.text
            assert "operator only" in refused.json()["message"]
        assert bob.get("/containers/json", params={"all": 1}).json() == []
        made = operator.post("/containers/create", json=body)
        assert made.status_code == 201, made.text


def test_a_tenant_cannot_put_its_nic_into_a_host_netns(cloud: Cloud) -> None:
    body = {"Image": "base:1", "Cmd": ["true"],
            "HostConfig": {"SteelcupNetns": "/proc/1/ns/net"}}
    with cloud.client("bob") as bob:
        refused = bob.post("/containers/create", json=body)
        assert refused.status_code == 403, refused.text
        assert "operator only" in refused.json()["message"]
        assert bob.get("/containers/json", params={"all": 1}).json() == []


def test_a_tenant_cannot_put_its_vm_into_a_host_cgroup(cloud: Cloud) -> None:
    body = {"Image": "base:1", "Cmd": ["true"],
            "HostConfig": {"SteelcupCgroup": "/kubepods/besteffort/pod1/x"}}
    with cloud.client("bob") as bob:
        refused = bob.post("/containers/create", json=body)
        assert refused.status_code == 403, refused.text
        assert "operator only" in refused.json()["message"]
        assert bob.get("/containers/json", params={"all": 1}).json() == []
