"""Funcs are tenant objects: through the TLS listener and the real router, tenant B reaches
none of A's funcs by name on any `/funcs/{name}` route, lists only its own, may have a func of
the same name; the `funcs` quota; `tenant rm` refused while a tenant has a func."""

from __future__ import annotations

from tests.unit.tenancy.conftest import Cloud

SPEC = {"Image": "base:1", "Cmd": ["cat"]}


def test_another_tenants_func_is_missing_on_every_route(cloud: Cloud) -> None:
    routes = [(m, p) for m, p, kind in cloud.table if p.startswith("/funcs/{name}")]
    assert all(kind == "func" for _, p, kind in cloud.table if p.startswith("/funcs/{name}"))
    assert len(routes) == 5
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        made = alice.post("/funcs", json={"Name": "hers", "Spec": SPEC})
        assert made.status_code == 201, made.text
        assert made.json()["Secret"] and made.json()["Tenant"] == "alice"
        for method, pattern in routes:
            path = pattern.replace("{name}", "hers")
            answer = bob.request(method, path, json={} if method == "POST" else None)
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.json()["message"] == "no such func: hers"
        assert bob.get("/funcs").json() == []
        assert [f["Name"] for f in alice.get("/funcs").json()] == ["hers"]
        # the same name is free for bob; alice's is unchanged
        assert bob.post("/funcs", json={"Name": "hers", "Spec": SPEC}).status_code == 201
        assert alice.get("/funcs/hers").json()["Secret"] == made.json()["Secret"]
        # the operator sees both, by key
        with cloud.operator() as op:
            assert sorted(f["Tenant"] for f in op.get("/funcs").json()) == ["alice", "bob"]
            assert op.get("/funcs/alice/hers").status_code == 404  # a key is one segment
            assert op.get("/funcs/hers").status_code == 400  # ambiguous


def test_funcs_quota_and_tenant_rm(cloud: Cloud) -> None:
    cloud.tenants.update("alice", ["funcs=1"])
    with cloud.client("alice") as alice:
        assert alice.post("/funcs", json={"Name": "one", "Spec": SPEC}).status_code == 201
        refused = alice.post("/funcs", json={"Name": "two", "Spec": SPEC})
        assert refused.status_code == 403
        assert refused.json()["message"] == "quota exceeded: funcs 1 of 1 in use (tenant alice)"
        with cloud.operator() as op:
            kept = op.delete("/steelcup/tenants/alice")
            assert kept.status_code == 409 and "func one" in kept.text, kept.text
        assert alice.delete("/funcs/one").status_code == 204
        assert alice.post("/funcs", json={"Name": "two", "Spec": SPEC}).status_code == 201


def test_tenant_rm_force_removes_its_funcs(cloud: Cloud) -> None:
    with cloud.client("alice") as alice:
        assert alice.post("/funcs", json={"Name": "f", "Spec": SPEC}).status_code == 201
    with cloud.operator() as op:
        assert op.delete("/steelcup/tenants/alice", params={"force": "1"}).status_code == 204
        assert op.get("/funcs").json() == []
