"""Daemon-wide routes seen by a tenant: events and info only ever show the caller's objects;
the operator's routes answer 403."""

from __future__ import annotations

import json
import time

from tests.unit.tenancy.conftest import Cloud


def _events(client: object, since: float) -> list[dict[str, object]]:
    answer = client.get("/events", params={"since": f"{since:.3f}",  # type: ignore[attr-defined]
                                           "until": f"{time.time():.3f}"})
    assert answer.status_code == 200, answer.text
    return [json.loads(line) for line in answer.text.splitlines() if line]


def test_events_and_info_are_the_callers_own(cloud: Cloud) -> None:
    since = time.time() - 1
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        made = alice.post("/containers/create", params={"name": "web"},
                          json={"Image": "base:1", "Cmd": ["serve"]})
        assert made.status_code == 201, made.text
        cid = made.json()["Id"]
        assert alice.post(f"/containers/{cid}/rename", params={"name": "web2"}
                          ).status_code in (204, 404)  # rename may be absent: create is enough
        assert [e["Action"] for e in _events(alice, since)][:1] == ["create"]
        assert _events(bob, since) == []
        assert alice.get("/info").json()["Containers"] == 1
        assert bob.get("/info").json()["Containers"] == 0


def test_the_pool_and_tenant_admin_are_the_operators(cloud: Cloud) -> None:
    with cloud.client("bob") as bob:
        for method, path in (("GET", "/steelcup/pool"), ("GET", "/steelcup/tenants"),
                             ("POST", "/steelcup/tenants")):
            answer = bob.request(method, path, json={} if method == "POST" else None)
            assert answer.status_code == 403, (path, answer.text)
            assert "operator only" in answer.json()["message"]


def test_image_events_are_the_callers_own(cloud: Cloud) -> None:
    since = time.time() - 1
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        assert alice.post("/images/base:1/tag", params={"repo": "mine", "tag": "2"}
                          ).status_code == 201
        assert alice.delete("/images/mine:2").status_code == 200
        assert bob.post("/images/prune").status_code == 200
        assert {e["Type"] for e in _events(bob, since)} <= {"image"}
        assert all(e["Action"] == "prune" for e in _events(bob, since))
        assert "prune" not in [e["Action"] for e in _events(alice, since)]


def test_info_says_what_a_container_that_asks_for_no_size_gets(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.operator() as operator:
        assert alice.get("/info").json()["Labels"] == [
            "sh.steelcup.default-size=s4 (1 vCPU, 512 MiB; --size or -m/--cpus ask for "
            "another)"]
        assert operator.get("/info").json()["Labels"] == [
            "sh.steelcup.default-memory=256 MiB (-m asks for another)"]
