"""`FloatingIps`: a tenant's floating IPs (allocated from the operator's pool, persisted) and
their attachment to its containers and services; the rules are rendered by net/fip.py into the
table the NetworkManager loads, and the attached addresses are held on the pool's interface.

Everything is per tenant: an address of another tenant's answers as a missing one, and a FIP
is attached only to a container on one of its own tenant's networks, or to one of its own
services' virtual IPs (the service layer names the VIP, `follow_service` keeps it current and
detaches the FIP when the service goes).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

from steelcup.errors import Conflict, InvalidArgument, NotFound, Unsupported
from steelcup.net import fip, links
from steelcup.net.fip import FipRecord, FipTarget
from steelcup.net.fipstore import FipStore
from steelcup.net.links import Host
from steelcup.net.model import VipRecord
from steelcup.net.store import NetStore
from steelcup.net.vip import VipTarget
from steelcup.tenancy.quota import Admit, unlimited

log = logging.getLogger(__name__)

# (action, record): "allocate", "release", "attach", "detach", "rename"
Notify = Callable[[str, FipRecord], None]


def _quiet(action: str, record: FipRecord) -> None:
    """The notification of a manager nobody listens to (tests, no event bus)."""


class FloatingIps:
    def __init__(self, store: FipStore, net: NetStore, host: Host, reload: Callable[[],
                 Awaitable[None]], pool: IPv4Network | None = None,
                 interface: str | None = None) -> None:
        """`reload`: re-render and load the whole ruleset (it calls `sync_addresses`);
        `pool` and `interface`: the operator's --fip-pool and --fip-interface (None: no
        floating IPs on this daemon)."""
        if (pool is None) != (interface is None):
            raise InvalidArgument("--fip-pool and --fip-interface go together")
        if interface is not None:
            links.check_ifname(interface)
        self.store = store
        self.net = net
        self.host = host
        self.pool = pool
        self.interface = interface
        self._reload = reload
        self.admit: Admit = unlimited  # the tenant's quota gate (counts `fips`)
        self.notify: Notify = _quiet
        self._held: set[str] | None = None  # /32s on the interface; None: not read yet
        # Changes whose record is saved and whose rules are not loaded yet (`settled`).
        self._loading = 0
        self._loaded = asyncio.Event()
        self._loaded.set()

    # -- lookup -------------------------------------------------------------------------------

    def _pool(self) -> IPv4Network:
        if self.pool is None:
            raise Unsupported("this daemon has no floating IP pool (the operator starts it "
                              "with --fip-pool CIDR --fip-interface IFACE)")
        return self.pool

    def list(self, tenant: str | None) -> builtins.list[FipRecord]:
        """`tenant`'s floating IPs (None: every tenant's), in address order."""
        return self.store.all(tenant)

    def get(self, address: str, tenant: str | None) -> FipRecord:
        """The FIP `address` of `tenant` (None: anyone's); another tenant's is as missing as an
        unallocated one."""
        wanted = fip.check_address(address)
        for rec in self.store.all(tenant):
            if rec.address == wanted:
                return rec
        raise NotFound(f"floating IP {wanted} not found")

    def of_container(self, container_id: str) -> FipRecord | None:
        return next((r for r in self.store.all() if r.container_id == container_id), None)

    def of_service(self, service_id: str) -> FipRecord | None:
        return next((r for r in self.store.all() if r.service_id == service_id), None)

    # -- allocation ----------------------------------------------------------------------------

    async def allocate(self, tenant: str, count: int = 1) -> builtins.list[FipRecord]:
        """`count` free addresses of the pool for `tenant`, counted by its `fips` quota."""
        pool = self._pool()
        if not 1 <= count <= 256:
            raise InvalidArgument(f"count must be 1 to 256, not {count}")
        host_addresses = await asyncio.to_thread(self._host_addresses)
        with self.admit(tenant, {"fips": count}):
            # No await between choosing and recording: atomic on the event loop.
            taken = {r.address for r in self.store.all()} | host_addresses
            now = _now()
            records = [FipRecord(a, tenant, created=now)
                       for a in fip.choose(pool, taken, count)]
            self.store.insert(records)
        for rec in records:
            self.notify("allocate", rec)
        return records

    async def release(self, address: str, tenant: str) -> None:
        """The FIP goes back to the pool (detached first, if it is attached)."""
        rec = self.get(address, tenant)
        self.store.delete(rec.address)
        if rec.attached:
            await self._reload_or(lambda: self.store.insert([rec]))
            self.notify("detach", rec)
        self.notify("release", rec)

    def rename(self, address: str, name: str, tenant: str) -> FipRecord:
        rec = replace(self.get(address, tenant), name=fip.check_name(name))
        self.store.update(rec)
        self.notify("rename", rec)
        return rec

    # -- attachment ----------------------------------------------------------------------------

    async def attach(self, address: str, container_id: str, tenant: str) -> FipRecord:
        """1:1 NAT between the FIP and the container (its first endpoint on a network that is
        not internal), which must be on `tenant`'s networks; it holds one FIP at a time."""
        rec = self.get(address, tenant)
        if rec.attached:
            if rec.container_id == container_id:
                return rec
            raise Conflict(f"floating IP {rec.address} is attached to {rec.holder}: detach it "
                           "first")
        other = self.of_container(container_id)
        if other is not None:
            raise Conflict(f"container {container_id[:12]} already has floating IP "
                           f"{other.address}: detach it first")
        network_id = self._endpoint_network(container_id, tenant)
        new = replace(rec, container_id=container_id, network_id=network_id)
        self.store.update(new)
        await self._reload_or(lambda: self.store.update(rec))
        self.notify("attach", new)
        return new

    async def attach_service(self, address: str, service_id: str, vip: VipRecord,
                             tenant: str) -> FipRecord:
        """The FIP goes to the service's virtual IP `vip` (inbound only: its connections are
        spread over the VIP's live backends); the VIP must be `tenant`'s, with an address, on
        a network that reaches the outside. A service holds one FIP at a time."""
        rec = self.get(address, tenant)
        if vip.tenant != tenant:  # the API resolves services in the caller's tenant
            raise NotFound(f"service {service_id[:12]} not found")
        if rec.attached:
            if rec.service_id == service_id and rec.vip_id == vip.id:
                return rec
            raise Conflict(f"floating IP {rec.address} is attached to {rec.holder}: detach it "
                           "first")
        other = self.of_service(service_id)
        if other is not None:
            raise Conflict(f"service {service_id[:12]} already has floating IP "
                           f"{other.address}: detach it first")
        check_service_vip(vip, self._internal(vip.network_id))
        new = replace(rec, service_id=service_id, vip_id=vip.id, network_id=vip.network_id)
        self.store.update(new)
        await self._reload_or(lambda: self.store.update(rec))
        self.notify("attach", new)
        return new

    async def follow_service(self, service_id: str, vip: VipRecord | None) -> None:
        """The service layer's word on the VIP the service's FIP goes to now (its VIPs were
        made again: a new endpoint mode, other aliases or networks); None, or a VIP a FIP
        cannot go to: the service is gone or has no such VIP any more, the FIP is detached
        (it stays allocated)."""
        rec = self.of_service(service_id)
        if rec is None:
            return
        if vip is not None:
            try:
                check_service_vip(vip, self._internal(vip.network_id))
            except (InvalidArgument, NotFound):
                vip = None
        if vip is not None and (rec.vip_id, rec.network_id) == (vip.id, vip.network_id):
            return
        new = (replace(rec, vip_id=vip.id, network_id=vip.network_id) if vip is not None
               else replace(rec, service_id="", vip_id="", network_id=""))
        self.store.update(new)
        await self._reload_or(lambda: self.store.update(rec))
        if vip is None:
            self.notify("detach", rec)

    def _internal(self, network_id: str) -> bool:
        net = next((n for n in self.net.networks() if n.id == network_id), None)
        if net is None:
            raise NotFound(f"network {network_id[:12]} not found")
        return net.internal

    def _endpoint_network(self, container_id: str, tenant: str) -> str:
        networks = {n.id: n for n in self.net.networks()}
        eps = [e for e in self.net.endpoints() if e.container_id == container_id]
        if any(networks[e.network_id].tenant != tenant for e in eps):
            # the API resolves containers in the caller's tenant: this is another tenant's
            raise NotFound(f"container {container_id[:12]} not found")
        for ep in eps:  # in the order it joined them: its primary network first
            if not networks[ep.network_id].internal:
                return ep.network_id
        raise InvalidArgument(f"container {container_id[:12]} is on no network that reaches "
                              "the outside (none, or only --internal ones): a floating IP "
                              "has nothing to go to")

    async def detach(self, address: str, tenant: str) -> FipRecord:
        """The FIP stays allocated; new connections to it reach nothing, and the flows made
        through it are cut."""
        rec = self.get(address, tenant)
        if not rec.attached:
            raise Conflict(f"floating IP {rec.address} is not attached")
        new = replace(rec, container_id="", network_id="", service_id="", vip_id="")
        self.store.update(new)
        await self._reload_or(lambda: self.store.update(rec))
        self.notify("detach", rec)
        return new

    async def detach_container(self, container_id: str, tenant: str) -> FipRecord:
        """`fip detach CONTAINER`: whichever FIP the container has."""
        rec = self.of_container(container_id)
        if rec is None or rec.tenant != tenant:
            raise NotFound(f"container {container_id[:12]} has no floating IP")
        return await self.detach(rec.address, tenant)

    def forget_container(self, container_id: str, network_id: str | None = None) -> bool:
        """The container is removed (or leaves `network_id`, the FIP's network): its FIP stays
        allocated, detached. Whether there was one (the caller reloads the rules, inside
        `changing`)."""
        rec = self.of_container(container_id)
        if rec is None or (network_id is not None and rec.network_id != network_id):
            return False
        self.store.update(replace(rec, container_id="", network_id=""))
        self.notify("detach", rec)
        return True

    def forget_tenant(self, tenant: str) -> None:
        """A removed tenant's FIPs go back to the pool (the caller reloads the rules)."""
        for rec in self.store.all(tenant):
            self.store.delete(rec.address)

    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        """Around a change of the records and the load of its rules (the ruleset is rendered
        from the records, so the records change first): `settled` waits until it is done."""
        self._loading += 1
        self._loaded.clear()
        try:
            yield
        finally:
            self._loading -= 1
            if not self._loading:
                self._loaded.set()

    async def _reload_or(self, undo: Callable[[], None]) -> None:
        """Load the rules of a change whose record was just saved (`undo` puts it back if
        they fail); `settled` waits for it."""
        with self.changing():
            try:
                await self._reload()
            except BaseException:
                undo()
                raise

    async def settled(self) -> None:
        """Until every change made so far has its rules loaded: a reader of the records then
        sees what the host's packets do (a record is saved before its rules are loaded, since
        the ruleset is rendered from the records)."""
        await self._loaded.wait()

    # -- rules and addresses --------------------------------------------------------------------

    def targets(self, endpoints: dict[tuple[str, str], tuple[str, str]],
                vips: dict[str, VipTarget] | None = None) -> builtins.list[FipTarget]:
        """The attached FIPs with a target; `endpoints[(container, network)]` = (address,
        bridge), `vips[vip id]` the VIPs as rendered."""
        return fip.targets(self.store.all(), endpoints, vips) if self.pool is not None else []

    async def sync_addresses(self, attached: Sequence[FipTarget]) -> None:
        """Hold on the interface exactly the /32s of the attached FIPs (after their rules are
        loaded: an address is never answered before its DNAT exists). Failures are logged:
        the rules stand, and the next change tries again."""
        if self.pool is None or self.interface is None:
            return
        try:
            if self._held is None:
                self._held = await asyncio.to_thread(self._read_held)
            wanted = {t.address for t in attached}
            for address in sorted(self._held - wanted):
                await asyncio.to_thread(links.delete_address, self.host, self.interface,
                                        f"{address}/32")
                self._held.discard(address)
            for address in sorted(wanted - self._held):
                await asyncio.to_thread(links.add_address, self.host, self.interface,
                                        f"{address}/32")
                self._held.add(address)
        except links.LinkError as exc:
            self._held = None  # read again next time
            log.error("floating IPs on %s: %s", self.interface, exc)

    def _read_held(self) -> set[str]:
        """The pool's /32s on the interface now (this daemon's, or a previous one's)."""
        assert self.interface is not None and self.pool is not None
        out = links.run(self.host.ip("-4", "-o", "addr", "show", "dev", self.interface)).stdout
        held = set()
        for word in out.split():
            if word.endswith("/32") and IPv4Address(word[:-3]) in self.pool:
                held.add(word[:-3])
        return held

    def _host_addresses(self) -> set[str]:
        """Every IPv4 address of the host (never handed out as a FIP)."""
        out = links.run(self.host.ip("-4", "-o", "addr", "show")).stdout
        words = out.split()
        return {words[i + 1].split("/")[0] for i, w in enumerate(words[:-1]) if w == "inet"}


def check_service_vip(vip: VipRecord, internal: bool) -> None:
    """Whether a FIP can go to the service VIP `vip` (on an `internal` network or not)."""
    if not vip.address:
        raise InvalidArgument(f"service {vip.name} has no virtual IP (endpoint mode "
                              f"{vip.mode}): a floating IP has nothing to go to")
    if internal:
        raise InvalidArgument(f"service {vip.name}'s virtual IP is on an --internal network: "
                              "a floating IP has nothing to go to")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
