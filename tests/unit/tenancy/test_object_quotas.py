"""Quotas of volumes, volume size, networks and images, and `tenant rm` refused while a tenant
owns anything, through the TLS listener and the real router (tenancy/objects.py)."""

from __future__ import annotations

import io
import tarfile

from tests.unit.tenancy.conftest import Cloud


def _message(answer: object) -> str:
    assert answer.status_code == 403, answer.text  # type: ignore[attr-defined]
    return str(answer.json()["message"])  # type: ignore[attr-defined]


def _image_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("etc")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    return buf.getvalue()


def test_volume_quotas_count_named_and_anonymous_volumes(cloud: Cloud) -> None:
    cloud.tenants.update("alice", ["volumes=2"])
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        first = alice.post("/volumes/create", json={"Name": "va"})
        assert first.status_code == 201, first.text
        assert alice.post("/volumes/create", json={"Name": "va"}).status_code == 201  # the same
        made = alice.post("/containers/create", json={
            "Image": "base:1", "Cmd": ["x"], "HostConfig": {"Binds": ["vb:/b"]}})
        assert made.status_code == 201, made.text
        assert _message(alice.post("/volumes/create", json={"Name": "vc"})) == (
            "quota exceeded: volumes 2 of 2 in use (tenant alice)")
        anon = alice.post("/containers/create", json={"Image": "base:1", "Cmd": ["x"],
                                                      "HostConfig": {"Binds": ["/anon"]}})
        assert "quota exceeded: volumes" in _message(anon)
        assert bob.post("/volumes/create", json={"Name": "vc"}).status_code == 201
        assert alice.delete("/volumes/va").status_code == 204  # removal frees
        assert alice.post("/volumes/create", json={"Name": "vc"}).status_code == 201


def test_network_quota_leaves_out_the_default_bridge(cloud: Cloud) -> None:
    cloud.tenants.update("alice", ["networks=1"])
    with cloud.client("alice") as alice:
        assert alice.get("/networks/bridge").status_code == 200  # made on first use
        assert alice.post("/networks/create", json={"Name": "one"}).status_code == 201
        assert _message(alice.post("/networks/create", json={"Name": "two"})) == (
            "quota exceeded: networks 1 of 1 in use (tenant alice)")


def test_image_quota_counts_images_not_tags(cloud: Cloud) -> None:
    cloud.tenants.update("alice", ["images=2"])  # alice has base:1 already
    with cloud.client("alice") as alice:
        assert alice.post("/images/base:1/tag", params={"repo": "again", "tag": "1"}
                          ).status_code == 201  # a name for an image it has: no new image
        imported = alice.post("/images/create", params={"fromSrc": "-", "repo": "two:1"},
                              content=_image_tar())
        assert imported.status_code == 200, imported.text
        refused = alice.post("/images/create", params={"fromSrc": "-", "repo": "three:1",
                                                       "changes": "ENV X=1"},
                             content=_image_tar())
        assert "quota exceeded: images 2 of 2 in use (tenant alice)" in refused.text
        assert [t for i in alice.get("/images/json").json() for t in i["RepoTags"]
                if t.startswith("three")] == []


def test_tenant_rm_is_refused_while_it_owns_anything(cloud: Cloud) -> None:
    with cloud.client("bob") as bob, cloud.operator() as operator:
        assert bob.post("/volumes/create", json={"Name": "keep"}).status_code == 201
        refused = operator.delete("/steelcup/tenants/bob")
        assert refused.status_code == 409
        assert "tenant bob still owns image base:1, volume keep" in refused.json()["message"]
        assert bob.delete("/volumes/keep").status_code == 204
        assert bob.delete("/images/base:1").status_code == 200
        assert operator.delete("/steelcup/tenants/bob").status_code == 204


def test_tenant_rm_force_removes_all_it_owns_and_nothing_of_others(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.client("bob") as bob, \
            cloud.operator() as operator:
        for client in (alice, bob):
            assert client.post("/volumes/create", json={"Name": "data"}).status_code == 201
            assert client.post("/networks/create", json={"Name": "appnet"}).status_code == 201
            made = client.post("/containers/create", params={"name": "web"}, json={
                "Image": "base:1", "Cmd": ["x"], "HostConfig": {"Binds": ["data:/d"]}})
            assert made.status_code == 201, made.text
            assert client.post(f"/containers/{made.json()['Id']}/start").status_code == 204
        before = {path: alice.get(path).json() for path in (
            "/containers/json?all=1", "/volumes", "/networks", "/images/json")}
        assert operator.delete("/steelcup/tenants/bob").status_code == 409
        gone = operator.delete("/steelcup/tenants/bob", params={"force": "1"})
        assert gone.status_code == 204, gone.text
        assert operator.get("/steelcup/tenants/bob").status_code == 404
        after = {path: alice.get(path).json() for path in before}
        for path in before:  # alice's objects as they were (containers' status may move on)
            ids = [o.get("Id") or o.get("Name") for o in (
                before[path]["Volumes"] if path == "/volumes" else before[path])]
            now = [o.get("Id") or o.get("Name") for o in (
                after[path]["Volumes"] if path == "/volumes" else after[path])]
            assert ids == now, path
        everyone = operator.get("/containers/json", params={"all": 1}).json()
        assert [c["Names"] for c in everyone] == [["/web"]]
        # bob's appnet and default bridge went with him; alice's (and the operator's) stay
        names = sorted(n["Name"] for n in operator.get("/networks").json())
        assert names.count("appnet") == 1 and names.count("bridge") == 2
