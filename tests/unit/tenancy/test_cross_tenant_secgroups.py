"""Security groups per tenant through the real router and tenant listener (docs/tenancy.md):
bob cannot see, change, remove, join or name as remote_group alice's group, a name is per
tenant, and a container joins at create (the label `run --sg` sends) only its tenant's groups.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.unit.tenancy.conftest import Cloud

LABEL = "sh.steelcup.security-groups"
SPEC = {"rules": [{"direction": "ingress", "protocol": "tcp", "ports": 80}]}


def _group(client: httpx.Client, name: str, spec: dict[str, Any] = SPEC) -> httpx.Response:
    return client.post("/security-groups", json={"Name": name, "Spec": spec})


def _container(client: httpx.Client, name: str, groups: str = "") -> httpx.Response:
    labels = {LABEL: groups} if groups else {}
    return client.post("/containers/create", params={"name": name},
                       json={"Image": "base:1", "Cmd": ["serve"], "Labels": labels})


def test_another_tenants_group_is_missing_everywhere(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        assert _group(alice, "web").status_code == 201
        assert bob.get("/security-groups").json() == []
        assert bob.get("/security-groups/web").status_code == 404
        assert bob.post("/security-groups/web", json={"Spec": {"rules": []}}).status_code == 404
        assert bob.delete("/security-groups/web").status_code == 404
        remote = _group(bob, "app", {"rules": [{"direction": "ingress",
                                                "remote_group": "web"}]})
        assert remote.status_code == 400 and "no such security group" in remote.text
        joined = _container(bob, "c1", "web")
        assert joined.status_code == 404, joined.text
        # bob's own `web` is another group of the same name
        assert _group(bob, "web", {"rules": []}).status_code == 201
        assert alice.get("/security-groups/web").json()["Rules"] == [
            {"direction": "ingress", "protocol": "tcp", "ports": "80"}]


def test_join_at_create_and_change_and_remove(cloud: Cloud) -> None:
    with cloud.client("alice") as alice:
        assert _group(alice, "web").status_code == 201
        assert _group(alice, "admin", {"rules": []}).status_code == 201
        made = _container(alice, "srv", "web")
        assert made.status_code == 201, made.text
        cid = made.json()["Id"]
        assert alice.get(f"/containers/{cid}/security-groups").json() == {
            "SecurityGroups": ["web"]}
        assert alice.get("/security-groups/web").json()["Members"] == [cid]
        gone = alice.delete("/security-groups/web")
        assert gone.status_code == 409 and "in use" in gone.text
        changed = alice.post(f"/containers/{cid}/security-groups",
                             json={"Add": ["admin"], "Remove": ["web"]})
        assert changed.json() == {"SecurityGroups": ["admin"]}
        assert alice.delete("/security-groups/web").status_code == 204
        bad = alice.post("/security-groups", json={"Name": "x", "Spec": {"rules": [
            {"direction": "sideways"}]}})
        assert bad.status_code == 400 and "rule 1: direction" in bad.text
        assert alice.delete(f"/containers/{cid}").status_code == 204
        assert alice.get("/security-groups/admin").json()["Members"] == []
