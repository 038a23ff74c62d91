"""The cross-tenant matrix, generated from the router's own table (docs/tenancy.md): for every
route that names a container or an exec, tenant B using tenant A's id, short id or name gets
exactly the answer of a missing object; lists never show A's objects; A's objects are unchanged.

A route added later under a scoped prefix is covered automatically; a route with a path
parameter that is neither scoped, operator-only nor declared to name nothing fails
`test_every_route_naming_an_object_is_scoped` (and stops `--multi-tenant` at start).
Images, networks, volumes and snapshots have their own files: test_cross_tenant_*.py.

The real router, HTTP server with TLS and tenant tokens, and runtime; a fake VM source.
"""

from __future__ import annotations

from steelcup.api.router import OPERATOR, unscoped
from tests.unit.tenancy.conftest import Cloud

MISSING = {"container": "No such container: {ref}", "exec": "No such exec instance: {ref}"}


def test_every_route_naming_an_object_is_scoped(cloud: Cloud) -> None:
    assert unscoped(cloud.table) == []
    kinds = {kind for _, _, kind in cloud.table}
    assert {"container", "exec", "image", "network", "volume", OPERATOR} <= kinds, kinds


def test_another_tenants_containers_and_execs_are_missing_on_every_route(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        made = alice.post("/containers/create", params={"name": "web"},
                          json={"Image": "base:1", "Cmd": ["serve"]})
        assert made.status_code == 201, made.text
        cid = made.json()["Id"]
        assert alice.post(f"/containers/{cid}/start").status_code == 204
        exec_made = alice.post(f"/containers/{cid}/exec", json={"Cmd": ["true"]})
        assert exec_made.status_code == 201, exec_made.text
        refs = {"container": [cid, cid[:12], "web"], "exec": [exec_made.json()["Id"]]}
        before = alice.get(f"/containers/{cid}/json").json()

        tried = 0
        for method, pattern, kind in cloud.table:
            for ref in refs.get(kind, []):
                path = pattern.replace("{id}", ref)
                answer = bob.request(method, path, json={} if method in ("POST", "PUT") else None)
                assert answer.status_code == 404, (method, path, answer.text)
                if method != "HEAD":
                    assert answer.json()["message"] == MISSING[kind].format(ref=ref), path
                tried += 1
        # networks, images, volumes: test_cross_tenant_{networks,images,volumes}.py
        scoped = [kind for _, _, kind in cloud.table if kind in refs]
        assert len(scoped) >= 25 and tried == sum(len(refs[k]) for k in scoped)  # it ran
        # a commit names its container in the query
        committed = bob.post("/commit", params={"container": "web"})
        assert committed.status_code == 404 and "No such container: web" in committed.text
        # lists and prunes see only one's own
        assert bob.get("/containers/json", params={"all": 1}).json() == []
        assert bob.post("/containers/prune").json()["ContainersDeleted"] in (None, [])
        # names are per tenant: bob may have a "web" of his own, and sees only it
        own = bob.post("/containers/create", params={"name": "web"},
                       json={"Image": "base:1", "Cmd": ["serve"]})
        assert own.status_code == 201, own.text
        assert bob.get("/containers/web/json").json()["Id"] == own.json()["Id"]
        assert [c["Id"] for c in bob.get("/containers/json", params={"all": 1}).json()] == [
            own.json()["Id"]]
        # alice's container is as it was
        after = alice.get(f"/containers/{cid}/json").json()
        assert after["State"] == before["State"] and after["Name"] == "/web"
        assert alice.get("/containers/web/json").json()["Id"] == cid
        assert alice.post(f"/containers/{cid}/kill").status_code == 204
