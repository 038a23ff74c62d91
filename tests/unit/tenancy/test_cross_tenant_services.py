"""Services and tasks are tenant objects (docs/services.md, docs/tenancy.md): tenant B naming
A's service or task by id, short id or name on every route of the table gets the answer of a
missing one; lists and filters show only one's own; names are per tenant; the `services`
quota counts; each tenant sees the one-node swarm as active while the operator's is not
initialised, and only the operator may leave it.

The real router, TLS listener, tenant tokens, runtime and orchestrator; a fake VM source."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from tests.unit.tenancy.conftest import Cloud

MISSING = {"service": "service {ref} not found", "task": "task {ref} not found"}


def spec(name: str, replicas: int = 1) -> dict[str, Any]:
    return {"Name": name, "TaskTemplate": {"ContainerSpec": {"Image": "base:1",
                                                             "Args": ["serve"]}},
            "Mode": {"Replicated": {"Replicas": replicas}}}


def running_tasks(client: httpx.Client, service: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        tasks = [t for t in client.get("/tasks", params={
            "filters": f'{{"service": ["{service}"]}}'}).json()
            if t["Status"]["State"] == "running"]
        if tasks or time.monotonic() > deadline:
            return tasks
        time.sleep(0.05)


def test_another_tenants_services_and_tasks_are_missing(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        made = alice.post("/services/create", json=spec("web"))
        assert made.status_code == 201, made.text
        sid = made.json()["ID"]
        [task] = running_tasks(alice, "web")
        refs = {"service": [sid, sid[:12], "web"], "task": [task["ID"], task["ID"][:12]]}
        before = alice.get(f"/services/{sid}").json()
        tried = 0
        for method, pattern, kind in cloud.table:
            for ref in refs.get(kind, []):
                path = pattern.replace("{id}", ref)
                answer = bob.request(method, path, params={"version": 1, "stdout": 1},
                                     json=spec("web") if method == "POST" else None)
                assert answer.status_code == 404, (method, path, answer.text)
                assert answer.json()["message"] == MISSING[kind].format(ref=ref), path
                tried += 1
        assert tried == 3 * 4 + 2 * 2  # 4 service routes, 2 task routes
        assert bob.get("/services").json() == []
        assert bob.get("/tasks").json() == []
        filtered = bob.get("/tasks", params={"filters": '{"service": ["web"]}'})
        assert filtered.status_code == 404  # the filter names a service bob does not have
        assert alice.get(f"/services/{sid}").json() == before
        # bob's container list does not show alice's task container either
        assert bob.get("/containers/json").json() == []
        # names are per tenant
        own = bob.post("/services/create", json=spec("web"))
        assert own.status_code == 201, own.text
        assert [s["ID"] for s in bob.get("/services").json()] == [own.json()["ID"]]
        assert alice.get("/services/web").json()["ID"] == sid
        # service events are their tenant's
        until = str(time.time() + 0.5)
        seen = {name: [json.loads(line) for line in client.get("/events", params={
            "since": "1", "until": until, "filters": '{"type": ["service"]}'}).text.splitlines()]
            for name, client in (("alice", alice), ("bob", bob))}
        assert [(e["Action"], e["Actor"]["ID"]) for e in seen["alice"]] == [("create", sid)]
        assert [e["Actor"]["ID"] for e in seen["bob"]] == [own.json()["ID"]]


def test_services_quota(cloud: Cloud) -> None:
    cloud.tenants.update("alice", ["services=1"])
    with cloud.client("alice") as alice:
        assert alice.post("/services/create", json=spec("one")).status_code == 201
        refused = alice.post("/services/create", json=spec("two"))
        assert refused.status_code == 403
        assert refused.json()["message"] == (
            "quota exceeded: services 1 of 1 in use (tenant alice)")
        assert alice.delete("/services/one").status_code == 200
        assert alice.post("/services/create", json=spec("two")).status_code == 201


def test_the_swarm_is_active_for_tenants_and_the_operators_to_init(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.operator() as operator:
        assert alice.get("/info").json()["Swarm"]["LocalNodeState"] == "active"
        assert alice.get("/_ping").headers["Swarm"] == "active/manager"
        node_id = alice.post("/swarm/init", json={}).json()
        assert alice.get("/nodes").json()[0]["ID"] == node_id
        assert alice.get("/swarm").json()["JoinTokens"] == {"Worker": "", "Manager": ""}
        assert alice.post("/swarm/leave", params={"force": 1}).status_code == 403
        assert operator.get("/info").json()["Swarm"]["LocalNodeState"] == "inactive"
        assert operator.get("/services").status_code == 503
        assert operator.post("/swarm/init", json={}).json() == node_id
        assert operator.get("/info").json()["Swarm"]["LocalNodeState"] == "active"
        # the operator sees every tenant's services
        assert alice.post("/services/create", json=spec("web")).status_code == 201
        assert [s["Spec"]["Name"] for s in operator.get("/services").json()] == ["web"]
        assert operator.post("/swarm/leave", params={"force": 1}).status_code == 200
        assert alice.get("/services").json()[0]["Spec"]["Name"] == "web"  # not the operator's


def test_tenant_rm_needs_force_with_services_and_force_removes_them(cloud: Cloud) -> None:
    with cloud.client("bob") as bob, cloud.operator() as operator:
        assert bob.post("/services/create", json=spec("web", replicas=3)).status_code == 201
        deadline = time.monotonic() + 10
        while len(running_tasks(bob, "web")) < 3:
            assert time.monotonic() < deadline, "3 tasks running"
            time.sleep(0.05)
        refused = operator.delete("/steelcup/tenants/bob")
        assert refused.status_code == 409 and "service web" in refused.json()["message"]
        gone = operator.delete("/steelcup/tenants/bob", params={"force": "1"})
        assert gone.status_code == 204, gone.text
        assert operator.get("/containers/json", params={"all": 1}).json() == []
        operator.post("/swarm/init", json={})
        assert operator.get("/services").json() == []
