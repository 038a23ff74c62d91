"""Docker Engine API routes for networks: thin adapters from Docker's JSON shapes to
`NetworkManager` (the only place their CamelCase keys live). Volumes: volume_routes."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from steelcup.api import docker_codec as codec
from steelcup.api.filters import labels_match, parse_filters, str_map
from steelcup.api.http import EmptyResponse, JsonResponse, Request, Response, Router
from steelcup.api.http_types import Principal
from steelcup.errors import Conflict, InvalidArgument, NotFound
from steelcup.net.manager import DEFAULT_NETWORK, NetworkManager
from steelcup.net.model import Endpoint, NetworkRecord
from steelcup.runtime.model import ContainerRecord

# (container reference: id, name or prefix; the caller's tenant, None = the operator) -> the
# container's record; another tenant's is NotFound exactly as a missing one
ContainerResolver = Callable[[str, str | None], ContainerRecord]

# (network id) -> when removed services' tasks and virtual IPs have left it
Settle = Callable[[str], Awaitable[None]]

NETWORK_FILTERS = frozenset({"name", "id", "label", "driver", "type", "scope", "dangling"})
# dockerd's pre-defined networks besides `bridge`, which are network modes here, not networks
# the network layer keeps: `none` (a VM with loopback only) and `host` (listed as dockerd does;
# refused at create). name -> driver; their ids are fixed.
PREDEFINED = {"host": "host", "none": "null"}


def register(
    router: Router,
    networks: NetworkManager,
    resolve_container: ContainerResolver,
    settle: Settle | None = None,
) -> None:
    """`settle`: awaited before a network is removed (removed services leaving it)."""
    api = _NetApi(networks, resolve_container, settle)
    # The tenancy spine (docs/tenancy.md): every route under /networks/{id} gets the network
    # resolved in the caller's namespace first; another tenant's answers as a missing one.
    router.scope("/networks/{id}", "id", "network",
                 lambda who, ref: resolve_network(networks, who, ref))
    router.add("GET", "/networks", api.network_list)
    router.add("POST", "/networks/create", api.network_create)
    router.add("POST", "/networks/prune", api.network_prune)
    router.add("GET", "/networks/{id}", api.network_inspect)
    router.add("DELETE", "/networks/{id}", api.network_remove)
    router.add("POST", "/networks/{id}/connect", api.network_connect)
    router.add("POST", "/networks/{id}/disconnect", api.network_disconnect)
def resolve_network(networks: NetworkManager, who: Principal, ref: str) -> str:
    """The full id of the network `ref` names for `who` (a pre-defined mode network's name
    for `host` and `none`, which every tenant has); NotFound as for a missing network."""
    name = predefined_name(ref)
    if name is not None:
        return name
    return networks.resolve(ref, who.tenant).id


def network_json(net: NetworkRecord, endpoints: list[Endpoint]) -> dict[str, Any]:
    return {
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": net.scope,
        "Driver": net.driver,
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None,
                 "Config": [{"Subnet": net.subnet, "Gateway": net.gateway}]},
        "Internal": net.internal,
        "Attachable": net.attachable,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": {
            ep.container_id: {
                "Name": ep.container_name,
                "EndpointID": ep.endpoint_id,
                "MacAddress": ep.mac,
                "IPv4Address": f"{ep.address}/{net.prefix}",
                "IPv6Address": "",
            }
            for ep in endpoints
        },
        "Options": {"com.docker.network.bridge.name": net.bridge,
                    "com.docker.network.driver.mtu": str(net.mtu), **net.options},
        "Labels": net.labels,
    }


def predefined_id(name: str) -> str:
    return hashlib.sha256(f"steelcup-predefined-network-{name}".encode()).hexdigest()


def predefined_name(ref: str) -> str | None:
    """The pre-defined mode network `ref` (name, id or id prefix) names, if any."""
    for name in PREDEFINED:
        if ref == name or (ref and predefined_id(name).startswith(ref)):
            return name
    return None


def predefined_json(name: str) -> dict[str, Any]:
    return {
        "Name": name,
        "Id": predefined_id(name),
        "Created": "0001-01-01T00:00:00Z",
        "Scope": "local",
        "Driver": PREDEFINED[name],
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None, "Config": []},
        "Internal": False,
        "Attachable": False,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": {},
        "Options": {},
        "Labels": {},
    }


def check_ipam(ipam: Any, cfg: Any) -> None:
    """Refuse, naming it, every IPAM setting steelcup would not honour (it allocates each
    address from the whole subnet, with the gateway its only reserved one)."""
    if not isinstance(ipam, dict) or not isinstance(cfg, dict):
        raise InvalidArgument("IPAM and IPAM.Config entries must be objects")
    if (ipam.get("Driver") or "default") != "default":
        raise InvalidArgument(f"IPAM driver {ipam['Driver']!r} is not supported (only default)")
    if ipam.get("Options"):
        raise InvalidArgument("IPAM.Options are not supported by steelcup")
    for key in ("IPRange", "AuxiliaryAddresses"):
        if cfg.get(key):
            raise InvalidArgument(f"IPAM.Config.{key} is not supported by steelcup yet: "
                                  "addresses come from the whole subnet")


class _NetApi:
    def __init__(self, networks: NetworkManager, resolve_container: ContainerResolver,
                 settle: Settle | None) -> None:
        self.networks = networks
        self.resolve_container = resolve_container
        self.settle = settle

    # -- networks --
    async def network_list(self, req: Request) -> Response:
        f = parse_filters(req.q("filters"), NETWORK_FILTERS)
        tenant = req.principal.tenant
        if tenant is not None:
            self.networks.default_network(tenant)  # a tenant's `bridge` is always listed
        out = []
        for net in self.networks.networks(tenant):
            eps = self.networks.endpoints(net.id)
            if "name" in f and not any(n in net.name for n in f["name"]):
                continue
            if "id" in f and not any(net.id.startswith(i) for i in f["id"]):
                continue
            if "label" in f and not labels_match(net.labels, f["label"]):
                continue
            if "driver" in f and net.driver not in f["driver"]:
                continue
            if "scope" in f and net.scope not in f["scope"]:
                continue
            if "type" in f:
                kind = "builtin" if net.name == DEFAULT_NETWORK else "custom"
                if kind not in f["type"]:
                    continue
            if "dangling" in f and (f["dangling"][0] in ("1", "true")) == bool(eps):
                continue
            out.append(network_json(net, eps))
        for name, driver in PREDEFINED.items():
            if "name" in f and not any(n in name for n in f["name"]):
                continue
            if "id" in f and not any(predefined_id(name).startswith(i) for i in f["id"]):
                continue
            if ("label" in f or "dangling" in f
                    or ("driver" in f and driver not in f["driver"])
                    or ("scope" in f and "local" not in f["scope"])
                    or ("type" in f and "builtin" not in f["type"])):
                continue
            out.append(predefined_json(name))
        return JsonResponse(out)

    async def network_inspect(self, req: Request) -> Response:
        name = predefined_name(req.params["id"])
        if name is not None:
            return JsonResponse(predefined_json(name))
        net = self.networks.get(req.params["id"])
        scope = req.q("scope")
        if scope and scope != net.scope:  # the docker CLI asks for swarm-scoped ones
            raise NotFound(f"network {req.params['id']} not found (its scope is {net.scope}, "
                           f"not {scope}: create it with --driver overlay for services)")
        return JsonResponse(network_json(net, self.networks.endpoints(net.id)))

    async def network_create(self, req: Request) -> Response:
        body = await req.json()
        name = body.get("Name")
        if not isinstance(name, str) or not name:
            raise InvalidArgument("network name is required")
        ipam_cfg = (body.get("IPAM") or {}).get("Config") or []
        if len(ipam_cfg) > 1:
            raise InvalidArgument("only one IPAM config (one IPv4 subnet) is supported")
        cfg = ipam_cfg[0] if ipam_cfg else {}
        check_ipam(body.get("IPAM") or {}, cfg)
        if body.get("EnableIPv6"):
            raise InvalidArgument("IPv6 networks are not supported")
        net = await self.networks.create(
            name,
            subnet=cfg.get("Subnet") or None,
            gateway=cfg.get("Gateway") or None,
            internal=bool(body.get("Internal", False)),
            labels=str_map(body.get("Labels"), "Labels"),
            options=str_map(body.get("Options"), "Options"),
            driver=str(body.get("Driver") or "bridge"),
            attachable=bool(body.get("Attachable", False)),
            tenant=req.principal.tenant or "",
        )
        return JsonResponse({"Id": net.id, "Warning": ""}, status=201)

    async def network_remove(self, req: Request) -> Response:
        name = predefined_name(req.params["id"])
        if name is not None:
            raise Conflict(f"{name} is a pre-defined network and cannot be removed")
        if self.settle is not None:
            await self.settle(req.params["id"])
        await self.networks.remove(req.params["id"])
        return EmptyResponse()

    async def network_prune(self, req: Request) -> Response:
        parse_filters(req.q("filters"), frozenset({"label", "until"}))
        return JsonResponse(
            {"NetworksDeleted": await self.networks.prune(req.principal.tenant)})

    async def network_connect(self, req: Request) -> Response:
        body = await req.json()
        name = predefined_name(req.params["id"])
        if name is not None:
            raise InvalidArgument(f"a container cannot be connected to {name!r}, a network "
                                  f"mode: create it with --network {name} instead")
        record = self.resolve_container(str(body.get("Container", "")),
                                        req.principal.tenant)
        net = self.networks.get(req.params["id"])
        if net.tenant != record.config.tenant:  # only the operator, who sees both, gets here
            raise InvalidArgument(
                f"container {record.name} (tenant {record.config.tenant or 'operator'!r}) "
                f"cannot join network {net.name} of tenant {net.tenant or 'operator'!r}: a "
                "container joins only its own tenant's networks")
        ep_cfg = body.get("EndpointConfig") or {}
        aliases = ep_cfg.get("Aliases") or []
        address = (ep_cfg.get("IPAMConfig") or {}).get("IPv4Address") or None
        if not isinstance(aliases, list):
            raise InvalidArgument("EndpointConfig.Aliases must be an array")
        codec.check_endpoint_settings({"NetworkingConfig": {"EndpointsConfig": {
            net.name: ep_cfg}}})
        tenant = record.config.tenant

        def container_of(ref: str) -> tuple[str, str]:
            target = self.resolve_container(ref, tenant)
            return target.id, target.name

        links = self.networks.link_targets(
            net.id, tenant, codec.parse_links(ep_cfg.get("Links"), "EndpointConfig"),
            container_of)
        self.networks.connect(net.id, record.id, record.name, [str(a) for a in aliases],
                              address, tenant=record.config.tenant, links=links)
        return EmptyResponse(200)

    async def network_disconnect(self, req: Request) -> Response:
        body = await req.json()
        record = self.resolve_container(str(body.get("Container", "")),
                                        req.principal.tenant)
        await self.networks.leave(req.params["id"], record.id,
                                  force=bool(body.get("Force", False)))
        return EmptyResponse(200)
