"""Volumes and snapshots across tenants (docs/tenancy.md), over the real TLS listener: every
`/volumes/` and `/steelcup/snapshots/` route of the router's own table, called by bob with
alice's name or key, answers exactly as for a missing object; lists, filters, prune and `df`
are bob's; both may have a volume `data`, with data of their own; a container of bob's naming
alice's volume gets a new volume of bob's; a tenant's bind of a host path is refused; alice's
volumes and snapshots are unchanged after.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.unit.tenancy.conftest import Cloud

MISSING = {"volume": "get {ref}: no such volume", "snapshot": "no such snapshot: {ref}"}
PARAM = "{name:path}"


def _ok(answer: httpx.Response, status: int = 200) -> Any:
    assert answer.status_code == status, answer.text
    return answer.json() if answer.content else None


def _alice_state(alice: httpx.Client) -> Any:
    return (_ok(alice.get("/volumes"))["Volumes"], _ok(alice.get("/steelcup/snapshots")))


def test_another_tenants_volumes_and_snapshots_are_missing_on_every_route(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        vol = _ok(alice.post("/volumes/create", json={"Name": "private"}), 201)
        Path(vol["Mountpoint"], "secret").write_text("alice's")
        _ok(alice.post("/steelcup/snapshots", json={"Volume": "private", "Name": "snap"}),
            201)
        before = _alice_state(alice)
        refs = {"volume": ["private", "alice/private"], "snapshot": ["snap", "alice/snap"]}

        tried = 0
        for method, pattern, kind in cloud.table:
            for ref in refs.get(kind, []) if kind in MISSING else []:
                assert pattern.count(PARAM) == 1, pattern
                path = pattern.replace(PARAM, ref)
                answer = bob.request(method, path)
                assert answer.status_code == 404, (method, path, answer.text)
                assert answer.json()["message"] == MISSING[kind].format(ref=ref), path
                tried += 1
        assert tried == 8  # volume inspect and rm, snapshot inspect and rm, two refs each

        # what names a volume in a body or query is bob's namespace too
        made = bob.post("/steelcup/snapshots", json={"Volume": "private", "Name": "mine"})
        assert made.status_code == 404
        assert made.json()["message"] == "get private: no such volume"
        assert _ok(bob.get("/steelcup/snapshots", params={"volume": "private"})) == []
        copy = bob.post("/volumes/create", json={"Name": "copy",
                                                  "DriverOpts": {"snapshot": "snap"}})
        assert copy.status_code == 404 and copy.json()["message"] == "no such snapshot: snap"
        # lists, filters, prune and df are bob's own
        assert _ok(bob.get("/volumes"))["Volumes"] == []
        assert _ok(bob.get("/volumes", params={"filters": '{"name": ["private"]}'})
                   )["Volumes"] == []
        assert _ok(bob.get("/steelcup/snapshots")) == []
        assert _ok(bob.get("/system/df"))["Volumes"] == []
        pruned = _ok(bob.post("/volumes/prune", params={"filters": '{"all": ["true"]}'}))
        assert pruned["VolumesDeleted"] == []
        assert _alice_state(alice) == before
        assert Path(vol["Mountpoint"], "secret").read_text() == "alice's"


def test_the_same_name_for_both_with_data_of_their_own(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        mine = _ok(alice.post("/volumes/create", json={"Name": "data"}), 201)
        theirs = _ok(bob.post("/volumes/create", json={"Name": "data"}), 201)
        assert mine["Name"] == theirs["Name"] == "data"
        assert mine["Mountpoint"] != theirs["Mountpoint"]
        Path(mine["Mountpoint"], "f").write_text("alice's")
        assert not Path(theirs["Mountpoint"], "f").exists()
        assert _ok(bob.get("/volumes/data"))["Mountpoint"] == theirs["Mountpoint"]
        _ok(bob.post("/steelcup/snapshots", json={"Volume": "data", "Name": "s1"}), 201)
        _ok(alice.post("/steelcup/snapshots", json={"Volume": "data", "Name": "s1"}), 201)
        restored = _ok(bob.post("/volumes/create", json={
            "Name": "restored", "DriverOpts": {"snapshot": "s1"}}), 201)
        assert not Path(restored["Mountpoint"], "f").exists()  # bob's snapshot, not alice's
        assert [v["Name"] for v in _ok(bob.get("/volumes"))["Volumes"]] == ["data", "restored"]
        assert [v["Name"] for v in _ok(bob.get("/system/df"))["Volumes"]] == [
            "data", "restored"]
        # bob's prune removes his, never alice's of the same name
        assert bob.delete("/steelcup/snapshots/s1").status_code == 204
        pruned = _ok(bob.post("/volumes/prune", params={"filters": '{"all": ["true"]}'}))
        assert sorted(pruned["VolumesDeleted"]) == ["data", "restored"]
        assert _ok(alice.get("/volumes/data"))["Mountpoint"] == mine["Mountpoint"]
        assert Path(mine["Mountpoint"], "f").read_text() == "alice's"
        assert [s["Name"] for s in _ok(alice.get("/steelcup/snapshots"))] == ["s1"]


def test_a_container_naming_anothers_volume_gets_a_new_one_of_its_tenant(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        vol = _ok(alice.post("/volumes/create", json={"Name": "private"}), 201)
        Path(vol["Mountpoint"], "secret").write_text("alice's")
        made = _ok(bob.post("/containers/create", json={
            "Image": "base:1", "Cmd": ["true"], "Volumes": {"/anon": {}},
            "HostConfig": {"Binds": ["private:/d"],
                           "Mounts": [{"Type": "volume", "Source": "bymount",
                                       "Target": "/m"}]}}), 201)
        names = {v["Name"] for v in _ok(bob.get("/volumes"))["Volumes"]}
        assert {"private", "bymount"} <= names and len(names) == 3  # and the anonymous one
        own = _ok(bob.get("/volumes/private"))
        assert own["Mountpoint"] != vol["Mountpoint"]
        assert not Path(own["Mountpoint"], "secret").exists()
        mounts = _ok(bob.get(f"/containers/{made['Id']}/json"))["Mounts"]
        assert {m["Name"] for m in mounts if m["Type"] == "volume"} == names
        # in use by bob's container: bob cannot remove it, alice's is still free to go
        assert bob.delete("/volumes/private").status_code == 409
        assert [v["Name"] for v in _ok(alice.get("/volumes"))["Volumes"]] == ["private"]
        assert Path(vol["Mountpoint"], "secret").read_text() == "alice's"
        assert alice.delete("/volumes/private").status_code == 204


def test_a_tenant_cannot_bind_a_host_directory(cloud: Cloud, tmp_path: Path) -> None:
    host = tmp_path / "host-dir"
    host.mkdir()
    with cloud.client("bob") as bob:
        for host_config in ({"Binds": [f"{host}:/h"]},
                            {"Mounts": [{"Type": "bind", "Source": str(host), "Target": "/h"}]}):
            refused = bob.post("/containers/create", json={
                "Image": "base:1", "Cmd": ["true"], "HostConfig": host_config})
            assert refused.status_code == 403, refused.text
            assert "bind mounts of host paths are not available to tenants" in (
                refused.json()["message"])
        assert _ok(bob.get("/containers/json", params={"all": 1})) == []
        assert _ok(bob.get("/volumes"))["Volumes"] == []


def test_the_operator_sees_every_tenants_by_key_and_may_bind(cloud: Cloud,
                                                              tmp_path: Path) -> None:
    with cloud.client("alice") as alice, cloud.client("bob") as bob, \
            cloud.operator() as operator:
        _ok(alice.post("/volumes/create", json={"Name": "data"}), 201)
        _ok(bob.post("/volumes/create", json={"Name": "data"}), 201)
        _ok(bob.post("/steelcup/snapshots", json={"Volume": "data", "Name": "s1"}), 201)
        assert sorted(v["Name"] for v in _ok(operator.get("/volumes"))["Volumes"]) == [
            "alice/data", "bob/data"]
        # as the docker CLI sends a name: the key unescaped in the path
        assert _ok(operator.get("/volumes/bob/data"))["Name"] == "bob/data"
        ambiguous = operator.get("/volumes/data")
        assert ambiguous.status_code == 400 and "bob/data" not in ambiguous.text
        assert [s["Volume"] for s in _ok(operator.get("/steelcup/snapshots"))] == ["bob/data"]
        assert _ok(operator.get("/steelcup/snapshots/bob/s1"))["Name"] == "bob/s1"
        assert operator.delete("/volumes/alice/data").status_code == 204
        assert _ok(alice.get("/volumes"))["Volumes"] == []
        assert _ok(bob.get("/volumes/data"))["Name"] == "data"
        host = tmp_path / "host-dir"
        host.mkdir()
        _ok(operator.post("/containers/create", json={
            "Image": "base:1", "Cmd": ["true"], "HostConfig": {"Binds": [f"{host}:/h"]}}), 201)
