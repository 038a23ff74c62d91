"""Legacy links on a user network (docker-compose's `links:`), at create and at `network
connect`: kept on the linking container's endpoint (its DNS answers them to it alone); the
target must be on the network; a tenant links only to its own containers."""

from __future__ import annotations

from typing import Any

from tests.unit.tenancy.conftest import Cloud


def _create(client: Any, name: str, network: str, **endpoint: Any) -> Any:
    return client.post("/containers/create", params={"name": name}, json={
        "Image": "base:1", "Cmd": ["x"], "HostConfig": {"NetworkMode": network},
        "NetworkingConfig": {"EndpointsConfig": {network: endpoint}}})


def test_links_at_create_and_connect(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        assert alice.post("/networks/create", json={"Name": "appnet"}).status_code == 201
        db = _create(alice, "proj_db_1", "appnet", Aliases=["db"])
        assert db.status_code == 201
        # what compose sends for `links: [db]`
        web = _create(alice, "proj_web_1", "appnet",
                      Links=["proj_db_1:db", "proj_db_1:proj_db_1", "proj_db_1:db_1"])
        assert web.status_code == 201, web.text
        with cloud.operator() as operator:
            net = operator.get("/networks/appnet").json()
            assert net["Containers"][web.json()["Id"]]["Name"] == "proj_web_1"
        # network connect: the same, and a target off the network is refused
        assert alice.post("/networks/create", json={"Name": "side"}).status_code == 201
        assert _create(alice, "lone", "side").status_code == 201
        joined = alice.post("/networks/appnet/connect", json={
            "Container": "lone", "EndpointConfig": {"Links": ["proj_db_1:database"]}})
        assert joined.status_code == 200, joined.text
        assert _create(alice, "off", "side").status_code == 201
        away = _create(alice, "w3", "appnet", Links=["off:off"])
        assert away.status_code == 400 and "off: it is not on network appnet" in away.text
        malformed = _create(alice, "w4", "appnet", Links="proj_db_1")
        assert malformed.status_code == 400 and "Links must be an array" in malformed.text
        # another tenant's container is as missing as a missing one
        assert bob.post("/networks/create", json={"Name": "appnet"}).status_code == 201
        theirs = _create(bob, "spy", "appnet", Links=["proj_db_1:db"])
        assert theirs.status_code == 404
        assert theirs.json()["message"] == "No such container: proj_db_1"
