"""Network isolation between tenants (issue 12, docs/tenancy.md) with real microVMs on real
bridges, inside a network namespace this test creates.

Two tenants, alice and bob, two containers each (a1, a2; b1, b2). The NetworkManager plans
every NIC exactly as for the runtime's containers: each container is on its tenant's default
`bridge` (eth0, made on first use) and on its tenant's `appnet` (eth1): both tenants have a
network of that name. Each container reaches its own tenant's peer on both networks and none of
the other tenant's containers on either; the tenant rules' counters show that they are what
dropped the attempts, and the same pings pass once steelcup's rules are gone.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from steelcup.guest.client import ProcessSpec, Stream
from steelcup.guest.ops import configure
from steelcup.net import links, nft
from steelcup.net.links import Host
from steelcup.net.manager import NetworkManager, NicPlan
from steelcup.net.store import NetStore
from steelcup.state.db import open_db
from steelcup.vm.assets import GuestAssets
from steelcup.vm.machine import Machine
from steelcup.vm.qemu_args import NicSpec, Share, VmSpec
from tests.vm.support import busybox_root, guest_assets

pytestmark = pytest.mark.vm

BOOT_DEADLINE_S = 60.0
PATH_ENV = ("PATH=/bin",)
CONTAINERS = {"a1": "alice", "a2": "alice", "b1": "bob", "b2": "bob"}


@dataclass
class Container:
    tenant: str
    machine: Machine
    nics: dict[str, NicPlan]  # network name -> its NIC


@pytest.fixture(scope="module")
def assets() -> GuestAssets:
    return guest_assets()


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root, iproute2 and nftables for a network namespace")
    name = f"sctenant{os.getpid()}"
    links.run(["ip", "netns", "add", name])
    try:
        links.run(["ip", "-n", name, "link", "set", "lo", "up"])
        yield Host(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture(scope="module")
def rootfs() -> Iterator[Path]:
    with busybox_root("scup-tenantroot-", ("sh", "ping")) as root:
        yield root


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def manager(host: Host, tmp_path_factory: pytest.TempPathFactory,
            loop: asyncio.AbstractEventLoop) -> Iterator[NetworkManager]:
    mgr = NetworkManager(NetStore(open_db(tmp_path_factory.mktemp("tenantnet"))), host,
                         upstreams=[], host_routes=lambda: [])
    loop.run_until_complete(mgr.startup())
    yield mgr
    loop.run_until_complete(mgr.close())


@pytest.fixture(scope="module")
def containers(assets: GuestAssets, host: Host, rootfs: Path, manager: NetworkManager,
               loop: asyncio.AbstractEventLoop) -> Iterator[dict[str, Container]]:
    out: dict[str, Container] = {}

    async def plan_and_boot(key: str, tenant: str) -> None:
        cid = key * 32
        # as Resources.connect and acquire do for a container made with
        # `--network bridge` and `--network appnet` (connected at create)
        manager.connect("appnet", cid, key, tenant=tenant)
        attachment = await manager.attach(cid, key, "default", tenant=tenant)
        for nic in attachment.nics:  # the pool's job in the daemon
            await asyncio.to_thread(links.ensure_tap, host, nic.tap, nic.bridge, nic.mtu)
        state = Path(tempfile.mkdtemp(prefix=f"sctn-{key}-"))
        spec = VmSpec(kernel=assets.kernel, initrd=assets.initrd, state_dir=state, mem_mib=128,
                      shares=(Share("rootfs", rootfs),),
                      nics=tuple(NicSpec(n.tap, n.mac) for n in attachment.nics))
        machine = Machine(spec, remove_state_dir=True, netns=host.netns)
        out[key] = Container(tenant, machine, {n.network_name: n for n in attachment.nics})
        await machine.start(BOOT_DEADLINE_S)
        await machine.guest.setup_root("rootfs", hostname=key)
        await configure(machine.guest, [n.guest_nic() for n in attachment.nics], [])

    async def boot_all() -> None:
        for tenant in ("alice", "bob"):
            await manager.create("appnet", tenant=tenant)
        # two at a time: four TCG boots at once on a shared machine risk the deadline
        for pair in (("a1", "b1"), ("a2", "b2")):
            await asyncio.gather(*(plan_and_boot(k, CONTAINERS[k]) for k in pair))

    try:
        loop.run_until_complete(asyncio.wait_for(boot_all(), 6 * BOOT_DEADLINE_S))
        yield out
    finally:
        for key, c in out.items():
            loop.run_until_complete(asyncio.wait_for(c.machine.close(), 30))
            loop.run_until_complete(manager.release(key * 32))


async def sh(c: Container, script: str, timeout_s: float = 30.0) -> tuple[int, str]:
    proc = await c.machine.guest.start(ProcessSpec(args=("/bin/sh", "-c", script), env=PATH_ENV))
    buf = bytearray()
    async with asyncio.timeout(timeout_s):
        async for stream, data in proc:
            buf += data if stream in (Stream.STDOUT, Stream.STDERR) else b""
        status = await proc.wait(timeout_s)
    return status.status, buf.decode(errors="replace")


def ping(loop: asyncio.AbstractEventLoop, src: Container, address: str, wait_s: int) -> bool:
    code, _ = loop.run_until_complete(sh(src, f"ping -c 1 -W {wait_s} {address}"))
    return code == 0


def tenant_drops(host: Host) -> int:
    """Packets the tenant rules (the forward chain's `counter drop`s) have dropped."""
    out = links.run(host.nft("list", "chain", "inet", nft.TABLE, "forward")).stdout
    return sum(int(n) for n in re.findall(r"counter packets (\d+) bytes \d+ drop", out))


def test_each_tenant_has_its_own_bridge_and_appnet(containers: dict[str, Container],
                                                  manager: NetworkManager) -> None:
    seen: dict[str, set[str]] = {"bridge": set(), "appnet": set()}
    for c in containers.values():
        assert set(c.nics) == {"bridge", "appnet"}
        for name, nic in c.nics.items():
            assert manager.get(nic.network_id).tenant == c.tenant
            seen[name].add(nic.bridge)
    assert len(seen["bridge"]) == len(seen["appnet"]) == 2  # one per tenant, none shared
    assert "steelcup0" not in seen["bridge"]  # not the operator's default either


def test_a_tenants_containers_reach_each_other_on_both_networks(
        containers: dict[str, Container], loop: asyncio.AbstractEventLoop) -> None:
    for src, dst in (("a1", "a2"), ("b2", "b1")):
        for network in ("bridge", "appnet"):
            address = containers[dst].nics[network].address
            assert ping(loop, containers[src], address, 5), (src, dst, network)


def test_no_container_reaches_the_other_tenants(containers: dict[str, Container], host: Host,
                                                manager: NetworkManager,
                                                loop: asyncio.AbstractEventLoop) -> None:
    before = tenant_drops(host)
    for src, dst in (("a1", "b1"), ("a2", "b2"), ("b1", "a2"), ("b2", "a1")):
        for network in ("bridge", "appnet"):
            address = containers[dst].nics[network].address
            assert not ping(loop, containers[src], address, 2), (src, dst, network)
    # the tenant rules dropped them (one echo request per attempt at least), not a rule
    # further down the chain
    assert tenant_drops(host) - before >= 8
    # and the same pings pass without steelcup's rules: the rules are what isolates
    nft.apply(host, nft.render_delete())
    try:
        for src, dst in (("a1", "b1"), ("b2", "a1")):
            address = containers[dst].nics["bridge"].address
            assert ping(loop, containers[src], address, 5), (src, dst)
    finally:
        nft.apply(host, nft.render(manager.networks()))
    assert not ping(loop, containers["a1"], containers["b1"].nics["bridge"].address, 2)
