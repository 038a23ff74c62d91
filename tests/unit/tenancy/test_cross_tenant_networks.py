"""Networks per tenant (docs/tenancy.md): every route of the router's table under
/networks/{id}, called by bob with alice's network id, short id or name, answers exactly as for a
missing network; lists, filters and prune show or touch only the caller's; names are per tenant;
each tenant's containers land on its own default `bridge`; a container never joins another
tenant's network; alice's objects are unchanged afterwards.

The real router, TLS listener with tenant tokens, runtime and network manager (`ip`/`nft`
recorded, not run; tests/vm/test_tenant_networks.py has the real bridges and VMs).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.unit.tenancy.conftest import Cloud

NET_ROUTES_MIN = 4  # inspect, remove, connect, disconnect: every one there is


def _network(client: httpx.Client, name: str, **body: Any) -> str:
    made = client.post("/networks/create", json={"Name": name, **body})
    assert made.status_code == 201, made.text
    return str(made.json()["Id"])


def _container(client: httpx.Client, name: str, **body: Any) -> str:
    made = client.post("/containers/create", params={"name": name},
                       json={"Image": "base:1", "Cmd": ["serve"], **body})
    assert made.status_code == 201, made.text
    return str(made.json()["Id"])


def _listed(client: httpx.Client, **filters: list[str]) -> list[tuple[str, str]]:
    params = {"filters": json.dumps(filters)} if filters else {}
    got = client.get("/networks", params=params)
    assert got.status_code == 200, got.text
    return sorted((n["Name"], n["Id"]) for n in got.json())


def _networks_of(client: httpx.Client, cid: str) -> dict[str, Any]:
    inspected = client.get(f"/containers/{cid}/json")
    assert inspected.status_code == 200, inspected.text
    return dict(inspected.json()["NetworkSettings"]["Networks"])


def test_another_tenants_network_is_missing_on_every_route(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        net = _network(alice, "appnet", Labels={"team": "a"})
        web = _container(alice, "web", HostConfig={"NetworkMode": "appnet"})
        before = alice.get(f"/networks/{net}").json()
        assert list(before["Containers"]) == [web]
        mine = _container(bob, "mine")

        # what bob gets for a network that does not exist at all: dockerd's 404
        missing = bob.get("/networks/nosuchnet")
        assert missing.status_code == 404
        assert missing.json()["message"] == "network nosuchnet not found"

        tried = 0
        routes = [(m, p) for m, p, kind in cloud.table if kind == "network"]
        assert len(routes) >= NET_ROUTES_MIN, routes
        for method, pattern in routes:
            for ref in (net, net[:12], "appnet"):
                path = pattern.replace("{id}", ref)
                body = {"Container": mine, "Force": True} if method == "POST" else None
                answer = bob.request(method, path, json=body)
                assert answer.status_code == 404, (method, path, answer.text)
                assert answer.json()["message"] == f"network {ref} not found", path
                tried += 1
        assert tried == 3 * len(routes)

        # bob's container was joined to nothing of alice's, and alice's network is as it was
        assert set(_networks_of(bob, mine)) == {"bridge"}
        after = alice.get(f"/networks/{net}").json()
        assert after == before
        assert alice.get("/networks/appnet").json()["Id"] == net


def test_lists_filters_and_prune_are_the_callers_own(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        net = _network(alice, "appnet")
        spare = _network(alice, "spare")  # unused: a prune of alice's would take it
        alice_names = [name for name, _ in _listed(alice)]
        assert alice_names == ["appnet", "bridge", "host", "none", "spare"]

        bob_listed = _listed(bob)
        assert [name for name, _ in bob_listed] == ["bridge", "host", "none"]
        alice_ids = {i for _, i in _listed(alice)} - {i for n, i in _listed(alice)
                                                      if n in ("host", "none")}
        assert not alice_ids & {i for _, i in bob_listed}  # not even alice's bridge
        assert _listed(bob, name=["appnet"]) == []
        assert _listed(bob, id=[net[:12]]) == []
        assert _listed(bob, type=["custom"]) == []

        pruned = bob.post("/networks/prune")
        assert pruned.status_code == 200 and pruned.json()["NetworksDeleted"] in ([], None)
        assert alice.get(f"/networks/{spare}").status_code == 200
        # alice's own prune takes her unused network, never her bridge
        assert alice.post("/networks/prune").json()["NetworksDeleted"] == ["appnet", "spare"]
        assert [name for name, _ in _listed(alice)] == ["bridge", "host", "none"]


def test_names_are_per_tenant(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        a = _network(alice, "appnet")
        b = _network(bob, "appnet")
        assert a != b
        a_net = alice.get("/networks/appnet").json()
        b_net = bob.get("/networks/appnet").json()
        assert (a_net["Id"], b_net["Id"]) == (a, b)
        assert a_net["IPAM"]["Config"] != b_net["IPAM"]["Config"]
        assert (a_net["Options"]["com.docker.network.bridge.name"]
                != b_net["Options"]["com.docker.network.bridge.name"])
        again = alice.post("/networks/create", json={"Name": "appnet"})
        assert again.status_code == 409, again.text
        # the same name in a container's NetworkMode is each one's own network
        a_web = _container(alice, "web", HostConfig={"NetworkMode": "appnet"})
        b_web = _container(bob, "web", HostConfig={"NetworkMode": "appnet"})
        assert _networks_of(alice, a_web)["appnet"]["NetworkID"] == a
        assert _networks_of(bob, b_web)["appnet"]["NetworkID"] == b


def test_each_tenant_has_its_own_default_bridge(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        a_web = _container(alice, "web")  # no network: docker's default
        b_web = _container(bob, "web", HostConfig={"NetworkMode": "bridge"})
        a_bridge = alice.get("/networks/bridge").json()
        b_bridge = bob.get("/networks/bridge").json()
        bridges = {a_bridge["Options"]["com.docker.network.bridge.name"],
                   b_bridge["Options"]["com.docker.network.bridge.name"]}
        assert len(bridges) == 2 and "steelcup0" not in bridges  # not the operator's either
        assert a_bridge["IPAM"]["Config"][0]["Subnet"] != b_bridge["IPAM"]["Config"][0]["Subnet"]
        assert _networks_of(alice, a_web)["bridge"]["NetworkID"] == a_bridge["Id"]
        assert _networks_of(bob, b_web)["bridge"]["NetworkID"] == b_bridge["Id"]
        assert list(a_bridge["Containers"]) == [a_web]
        # the default cannot be removed, nor made twice
        assert alice.delete("/networks/bridge").status_code == 409
        assert alice.post("/networks/create", json={"Name": "bridge"}).status_code == 409
        # a started container's NIC is on its tenant's bridge, and the firewall now keeps
        # the two tenants' bridges apart
        assert alice.post(f"/containers/{a_web}/start").status_code == 204
        a_br, b_br = (n["Options"]["com.docker.network.bridge.name"]
                      for n in (a_bridge, b_bridge))
        ruleset = cloud.last_ruleset()
        assert f'iifname {{ "{a_br}" }} oifname {{ ' in ruleset, ruleset
        cut = ruleset.split(f'iifname {{ "{a_br}" }} oifname {{ ', 1)[1].split("}", 1)[0]
        assert f'"{b_br}"' in cut and '"steelcup0"' in cut
        assert alice.post(f"/containers/{a_web}/kill").status_code == 204


def test_containers_never_join_another_tenants_network(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        net = _network(alice, "appnet")
        _container(alice, "web")
        for ref in (net, net[:12], "appnet"):
            made = bob.post("/containers/create", params={"name": "probe"},
                            json={"Image": "base:1", "Cmd": ["x"],
                                  "HostConfig": {"NetworkMode": ref}})
            assert made.status_code == 404, made.text
            assert made.json()["message"] == f"network {ref} not found"
            made = bob.post("/containers/create", params={"name": "probe"}, json={
                "Image": "base:1", "Cmd": ["x"],
                "NetworkingConfig": {"EndpointsConfig": {ref: {}}}})
            assert made.status_code == 404, made.text
        assert bob.get("/containers/json", params={"all": 1}).json() == []
        # bob cannot hang alice's container on his own network either
        own = _network(bob, "own")
        joined = bob.post(f"/networks/{own}/connect", json={"Container": "web"})
        assert joined.status_code == 404 and joined.json()["message"] == \
            "No such container: web"
        assert bob.get(f"/networks/{own}").json()["Containers"] == {}


def test_tenants_cannot_share_the_hosts_network_or_pick_its_addresses(cloud: Cloud) -> None:
    with cloud.client("alice") as alice:
        host = alice.post("/containers/create", json={
            "Image": "base:1", "Cmd": ["x"], "HostConfig": {"NetworkMode": "host"}})
        assert host.status_code == 400 and "'host' is not supported" in host.text
        named = alice.post("/networks/create", json={
            "Name": "n", "Options": {"com.docker.network.bridge.name": "eth0"}})
        assert named.status_code == 400 and "operator's to set" in named.text
        lan = alice.post("/networks/create", json={
            "Name": "n", "IPAM": {"Config": [{"Subnet": "192.168.1.0/24"}]}})
        assert lan.status_code == 400 and "outside this daemon's pool" in lan.text
        taken = alice.get("/networks/bridge").json()["IPAM"]["Config"][0]["Subnet"]
        with cloud.client("bob") as bob:
            clash = bob.post("/networks/create", json={
                "Name": "n", "IPAM": {"Config": [{"Subnet": taken}]}})
        assert clash.status_code == 409 and "alice" not in clash.text
        ok = alice.post("/networks/create", json={
            "Name": "n", "IPAM": {"Config": [{"Subnet": "10.213.200.0/24"}]}})
        assert ok.status_code == 201, ok.text
