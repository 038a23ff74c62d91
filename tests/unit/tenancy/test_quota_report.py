"""`GET /steelcup/quotas`: a tenant reads its own quotas, its use of each and its
container-seconds, never another tenant's; the operator names the tenant."""

from __future__ import annotations

from typing import Any

from tests.unit.tenancy.conftest import Cloud
from tests.unit.tenancy.test_quotas import create


def by_name(answer: dict[str, Any]) -> dict[str, tuple[int, int | None]]:
    return {q["Name"]: (q["Limit"], q["Used"]) for q in answer["Quotas"]}


def test_a_tenant_reads_its_own_quotas_and_use(cloud: Cloud) -> None:
    cloud.tenants.update("alice", ["containers=4", "crons=3"])
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        for _ in range(2):
            assert create(alice).status_code == 201
        assert create(bob).status_code == 201
        mine = alice.get("/steelcup/quotas")
        assert mine.status_code == 200, mine.text
        body = mine.json()
        assert body["Tenant"] == "alice"
        quotas = by_name(body)
        assert quotas["containers"] == (4, 2)
        assert quotas["crons"] == (3, 0)
        assert quotas["cpus"][1] is not None and quotas["cpus"][1] > 0
        assert set(quotas) >= {"containers", "cpus", "memory_mib", "volumes", "images",
                               "networks", "services", "fips", "funcs"}
        assert body["Usage"]["Tenant"] == "alice"
        assert body["Usage"]["TotalSeconds"] == 0  # created, never started
        # bob's answer is bob's: his one container, default quotas
        theirs = by_name(bob.get("/steelcup/quotas").json())
        assert theirs["containers"] == (10, 1)
        # naming another tenant is the operator's
        assert alice.get("/steelcup/quotas", params={"tenant": "bob"}).status_code == 403
        assert alice.get("/steelcup/quotas", params={"tenant": "alice"}).status_code == 200


def test_the_operator_names_the_tenant(cloud: Cloud) -> None:
    with cloud.client("alice") as alice:
        assert create(alice).status_code == 201
    with cloud.operator() as op:
        unnamed = op.get("/steelcup/quotas")
        assert unnamed.status_code == 400
        assert "?tenant=NAME" in unnamed.json()["message"]
        assert by_name(op.get("/steelcup/quotas", params={"tenant": "alice"}).json()
                       )["containers"] == (10, 1)
        assert op.get("/steelcup/quotas", params={"tenant": "nobody"}).status_code == 404
        bad = op.get("/steelcup/quotas", params={"tenant": "alice", "since": "yesterday"})
        assert bad.status_code == 400
