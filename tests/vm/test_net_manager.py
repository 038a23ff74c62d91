"""NetworkManager against the real kernel, inside network namespaces this test creates:
bridges, taps, the nftables table, the embedded DNS, published ports (DNAT + loopback proxy),
isolation between networks and from the host's services, and clean removal.

"Containers" here are network namespaces wired to the bridge with a veth (no VM needed to test
the host side; tests/vm/test_net_guest.py covers the guest side).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from steelcup.net import dns, links
from steelcup.net.links import Host
from steelcup.net.manager import NetworkManager
from steelcup.net.model import PortMapping
from steelcup.net.netns import socket_in
from steelcup.net.store import NetStore
from steelcup.state.db import open_db

pytestmark = pytest.mark.vm


def sh(*argv: str) -> str:
    return links.run(list(argv)).stdout


@pytest.fixture()
def namespaces() -> Iterator[tuple[str, str, str]]:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root, iproute2 and nftables")
    tag = os.getpid()
    names = (f"schost{tag}", f"scc1{tag}", f"scc2{tag}")
    for n in names:
        sh("ip", "netns", "add", n)
        sh("ip", "-n", n, "link", "set", "lo", "up")
    try:
        yield names
    finally:
        for n in names:
            subprocess.run(["ip", "netns", "del", n], check=False)


def plug(host: str, ctr: str, bridge: str, addr: str, prefix: int, gw: str, name: str) -> None:
    """A veth from the bridge (in `host`) into the container namespace `ctr`."""
    sh("ip", "-n", host, "link", "add", f"{name}h", "type", "veth", "peer", "name", f"{name}c")
    sh("ip", "-n", host, "link", "set", f"{name}c", "netns", ctr)
    sh("ip", "-n", host, "link", "set", f"{name}h", "master", bridge, "up")
    sh("ip", "-n", ctr, "addr", "add", f"{addr}/{prefix}", "dev", f"{name}c")
    sh("ip", "-n", ctr, "link", "set", f"{name}c", "up")
    sh("ip", "-n", ctr, "route", "add", "default", "via", gw)


async def echo_server(netns: str, addr: str, port: int) -> asyncio.Server:
    sock = socket_in(netns, socket.AF_INET, socket.SOCK_STREAM, (addr, port))
    sock.listen(8)
    sock.setblocking(False)

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"echo:" + await r.read(100))
        await w.drain()
        w.close()

    return await asyncio.start_server(handle, sock=sock)


async def tcp_try(netns: str, addr: str, port: int, timeout_s: float = 2.0) -> bytes | None:
    """The echo reply, or None if the connection failed or timed out."""
    loop = asyncio.get_running_loop()
    sock = await asyncio.to_thread(socket_in, netns, socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout_s):
            await loop.sock_connect(sock, (addr, port))
            await loop.sock_sendall(sock, b"hi")
            return await loop.sock_recv(sock, 100)
    except (OSError, TimeoutError):
        return None
    finally:
        sock.close()


async def dns_query(netns: str, server: str, name: str) -> bytes:
    loop = asyncio.get_running_loop()
    sock = await asyncio.to_thread(socket_in, netns, socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (server, 53))
        await loop.sock_sendall(sock, dns.build_query(name))
        async with asyncio.timeout(3):
            return await loop.sock_recv(sock, 512)
    finally:
        sock.close()


def test_networks_end_to_end(namespaces: tuple[str, str, str], tmp_path: Path) -> None:
    hostns, c1, c2 = namespaces
    asyncio.run(scenario(hostns, c1, c2, tmp_path))
    # the namespace is back to bare: only lo, and no steelcup table
    links_left = sh("ip", "-n", hostns, "-o", "link", "show")
    assert [ln.split(":")[1].strip() for ln in links_left.splitlines()] == ["lo"], links_left
    assert "steelcup" not in sh("ip", "netns", "exec", hostns, "nft", "list", "ruleset")


async def scenario(hostns: str, c1: str, c2: str, tmp_path: Path) -> None:
    host = Host(hostns)
    store = NetStore(open_db(tmp_path))
    mgr = NetworkManager(store, host, upstreams=[], host_routes=lambda: [])
    await mgr.startup()
    front = await mgr.create("front")
    back = await mgr.create("back", options={"steelcup.dns.forward": "false"})
    assert mgr.get("bridge").bridge == "steelcup0"
    assert front.subnet != back.subnet
    ruleset = sh("ip", "netns", "exec", hostns, "nft", "list", "table", "inet", "steelcup")
    assert front.bridge in ruleset and back.bridge in ruleset

    att = await mgr.attach("c1" * 32, "web1", "front", aliases=["web"],
                           ports=[PortMapping(8000, "tcp", "", 18080)])
    nic = att.nics[0]
    assert nic.address.startswith(front.subnet.rsplit(".", 2)[0]) and nic.gateway == front.gateway
    assert f"ifname={nic.tap}" in " ".join(att.qemu_argv) and f"mac={nic.mac}" in " ".join(
        att.qemu_argv)
    # planned, not made: the pool makes the tap or gives a ready VM's own this name
    assert (nic.bridge, nic.mtu) == (front.bridge, front.mtu)
    assert not links.link_exists(host, nic.tap)
    assert "nameserver " + front.gateway in att.resolv_conf()
    assert f"{nic.address}\tweb1" in att.hosts_file("web1")
    ruleset = sh("ip", "netns", "exec", hostns, "nft", "list", "table", "inet", "steelcup")
    assert f"dnat ip to {nic.address}:8000" in ruleset

    # the "container": c1's namespace holds the NIC's address and serves on :8000
    plug(hostns, c1, front.bridge, nic.address, nic.prefix, nic.gateway, "scv1")
    server = await echo_server(c1, nic.address, 8000)
    try:
        # from the host: directly, through the loopback proxy
        assert await tcp_try(hostns, nic.address, 8000) == b"echo:hi"
        assert await tcp_try(hostns, "127.0.0.1", 18080) == b"echo:hi"
        # DNS on the gateway: name, alias, short id; others refused on a non-forwarding net
        for name in ("web1", "web", "c1c1c1c1c1c1"):
            rcode, addrs = dns.parse_answer_addresses(
                await dns_query(c1, front.gateway, name))
            assert (rcode, [str(a) for a in addrs]) == (0, [nic.address]), name
        rcode, addrs = dns.parse_answer_addresses(await dns_query(c1, front.gateway, "nope"))
        assert rcode == dns.RCODE_REFUSED  # no upstreams: forwarding is off

        # isolation: a host service on the gateway address is not reachable from containers
        host_service = await echo_server(hostns, "0.0.0.0", 2222)
        try:
            assert await tcp_try(hostns, front.gateway, 2222) == b"echo:hi"
            assert await tcp_try(c1, front.gateway, 2222, 1.0) is None
        finally:
            host_service.close()

        # a container on another network cannot reach c1, and its DNS does not know web1
        att2 = await mgr.attach("c2" * 32, "db", "back")
        n2 = att2.nics[0]
        plug(hostns, c2, back.bridge, n2.address, n2.prefix, n2.gateway, "scv2")
        assert await tcp_try(c2, nic.address, 8000, 1.0) is None
        rcode, _ = dns.parse_answer_addresses(await dns_query(c2, back.gateway, "web1"))
        assert rcode == dns.RCODE_REFUSED
        # connecting c2 to front too gives it a second NIC plan at its next start
        await mgr.detach("c2" * 32)
        mgr.connect("front", "c2" * 32, "db")
        att2b = await mgr.attach("c2" * 32, "db", "back")
        assert [n.network_name for n in att2b.nics] == ["back", "front"]
        assert [n.default_route for n in att2b.nics] == [True, False]
        await mgr.release("c2" * 32)
    finally:
        server.close()

    # removal: in-use networks refuse; detach/release frees everything
    from steelcup.errors import Conflict
    with pytest.raises(Conflict):
        await mgr.remove("front")
    await mgr.release("c1" * 32)
    assert await tcp_try(hostns, "127.0.0.1", 18080, 1.0) is None  # proxy gone
    assert "dnat ip to" not in sh("ip", "netns", "exec", hostns, "nft", "list", "table",
                                  "inet", "steelcup")
    await mgr.remove("front")
    await mgr.remove("back")
    assert not links.link_exists(host, front.bridge)

    # restart: a new manager over the same database keeps the default network and its subnet
    await mgr.close()
    mgr2 = NetworkManager(NetStore(open_db(tmp_path)), host, upstreams=[],
                          host_routes=lambda: [])
    await mgr2.startup()
    assert [n.name for n in mgr2.networks()] == ["bridge"]
    await mgr2.close()
    # leave nothing behind: the default bridge and the table
    links.delete_link(host, "steelcup0")
    from steelcup.net import nft
    nft.apply(host, nft.render_delete())
    for veth in ("scv1h", "scv2h"):
        links.delete_link(host, veth)


def test_internal_network_dns_never_goes_upstream(namespaces: tuple[str, str, str],
                                                  tmp_path: Path) -> None:
    """Issue 10 #7: the embedded DNS forwarded unknown names upstream for --internal networks
    too (a way out for a network that must have none). The control: an ordinary network
    forwards the same query to the same upstream."""
    hostns, c1, c2 = namespaces
    asyncio.run(_internal_dns(hostns, c1, c2, tmp_path))


async def _internal_dns(hostns: str, c1: str, c2: str, tmp_path: Path) -> None:
    outside = ipaddress.IPv4Address("192.0.2.7")
    upstream = dns.DnsServer(lambda name, _client: [outside] if name == "outside.example" else None,
                             forward=False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: upstream,
                                                       local_addr=("127.0.0.1", 0))
    up_port = transport.get_extra_info("sockname")[1]
    host = Host(hostns)
    mgr = NetworkManager(NetStore(open_db(tmp_path)), host, upstreams=[("127.0.0.1", up_port)],
                         host_routes=lambda: [])
    await mgr.startup()
    try:
        nets = {"open": await mgr.create("open"), "sealed": await mgr.create("sealed",
                                                                              internal=True)}
        answers = {}
        for ctr, name, veth in ((c1, "open", "scd1"), (c2, "sealed", "scd2")):
            net = nets[name]
            att = await mgr.attach(ctr * 2, ctr, name)
            nic = att.nics[0]
            plug(hostns, ctr, net.bridge, nic.address, nic.prefix, nic.gateway, veth)
            answers[name] = dns.parse_answer_addresses(
                await dns_query(ctr, net.gateway, "outside.example"))
        assert answers["open"] == (0, [outside])
        assert answers["sealed"][0] == dns.RCODE_REFUSED and not answers["sealed"][1]
    finally:
        transport.close()
        for ctr in (c1, c2):
            await mgr.release(ctr * 2)
        for name in ("open", "sealed"):
            await mgr.remove(name)
        await mgr.close()
        links.delete_link(host, "steelcup0")
        from steelcup.net import nft
        nft.apply(host, nft.render_delete())
        for veth in ("scd1h", "scd2h"):
            links.delete_link(host, veth)


def test_a_run_without_ports_loads_no_ruleset(namespaces: tuple[str, str, str], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The ruleset depends on networks, endpoints (their taps' anti-spoofing guards) and
    published ports: a container's first run loads it once (its new endpoint), and stopping
    and starting it again without ports runs no `nft` (one process less per run); with ports,
    attach and detach both do."""
    from steelcup.net import nft

    hostns = namespaces[0]
    loads: list[str] = []
    real_apply = nft.apply

    def counting_apply(host: Host, text: str) -> None:
        loads.append(text)
        real_apply(host, text)

    monkeypatch.setattr(nft, "apply", counting_apply)

    async def run() -> None:
        host = Host(hostns)
        mgr = NetworkManager(NetStore(open_db(tmp_path)), host, upstreams=[],
                             host_routes=lambda: [])
        await mgr.startup()
        try:
            before = len(loads)
            await mgr.attach("d1" * 32, "plain", "default")
            assert len(loads) == before + 1  # its new endpoint's guard
            await mgr.detach("d1" * 32)
            await mgr.attach("d1" * 32, "plain", "default")
            await mgr.detach("d1" * 32)
            assert len(loads) == before + 1
            await mgr.attach("d2" * 32, "web", "default", ports=[PortMapping(80, "tcp", "",
                                                                             18081)])
            assert len(loads) == before + 2 and "dnat ip to" in loads[-1]
            await mgr.detach("d2" * 32)
            assert len(loads) == before + 3 and "dnat ip to" not in loads[-1]
        finally:
            await mgr.close()
            links.delete_link(host, "steelcup0")
            real_apply(host, nft.render_delete())

    asyncio.run(run())
