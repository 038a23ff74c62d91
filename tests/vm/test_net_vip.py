"""Virtual IPs (net/vip.py) against a real kernel inside network namespaces this test creates,
with real microVMs as backends and client.

Three VMs on `appnet` share the module: web1 and web2 serve HTTP (busybox httpd answering their
name), client fetches. The VIP `web` balances over web1 and web2: many connections from client
reach both; a backend reaches its own VIP (hairpin); `web` and `tasks.web` resolve in the guest;
the published port answers from the host (loopback proxy and DNAT); a removed backend gets no
more connections; an empty VIP refuses at once; another tenant's container cannot reach it.
Network namespaces wired with a veth ("containers" without a VM) cover UDP, an established
connection across a change of backends, the cost against a direct connection, and a restart.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from steelcup.guest.client import GuestProcess, ProcessSpec, Stream
from steelcup.guest.ops import configure
from steelcup.net import dns, links, nft
from steelcup.net.links import Host
from steelcup.net.manager import NetworkManager
from steelcup.net.model import NetworkRecord, PortMapping, VipRecord
from steelcup.net.netns import socket_in
from steelcup.net.store import NetStore
from steelcup.state.db import open_db
from steelcup.vm.assets import GuestAssets
from steelcup.vm.machine import Machine
from steelcup.vm.qemu_args import NicSpec, Share, VmSpec
from tests.vm.support import guest_assets, need_assets, unpack_busybox

pytestmark = pytest.mark.vm

BOOT_DEADLINE_S = 60.0
PATH_ENV = ("PATH=/usr/sbin:/usr/bin:/sbin:/bin",)
BACKENDS = ("web1", "web2")


def _cid(name: str) -> str:
    return (name.encode().hex() * 64)[:64]


def new_host(tag: str) -> Host:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root, iproute2 and nftables for a network namespace")
    name = f"scvip{tag}{os.getpid()}"
    links.run(["ip", "netns", "add", name])
    links.run(["ip", "-n", name, "link", "set", "lo", "up"])
    return Host(name)


def drop_host(host: Host) -> None:
    subprocess.run(["ip", "netns", "del", str(host.netns)], check=False)


# -- "containers" without a VM: a namespace on the bridge through a veth -------------------------

class NsContainer:
    """A namespace plugged into a bridge of `host`, serving TCP and UDP on `port` (each reply:
    its name, then what it got), until `close`."""

    def __init__(self, host: Host, bridge: str, address: str, prefix: int, gateway: str,
                 name: str, port: int = 7000) -> None:
        self.host, self.name, self.address = host, name, address
        self.netns = f"{host.netns}-{name}"
        links.run(["ip", "netns", "add", self.netns])
        veth = f"v{name}"[:12]
        links.run(host.ip("link", "add", f"{veth}h", "type", "veth", "peer", "name", f"{veth}c"))
        links.run(host.ip("link", "set", f"{veth}c", "netns", self.netns))
        links.run(host.ip("link", "set", f"{veth}h", "master", bridge, "up"))
        links.set_hairpin(host, f"{veth}h")  # as the daemon's taps
        inside = ["ip", "-n", self.netns]
        links.run([*inside, "link", "set", "lo", "up"])
        links.run([*inside, "addr", "add", f"{address}/{prefix}", "dev", f"{veth}c"])
        links.run([*inside, "link", "set", f"{veth}c", "up"])
        links.run([*inside, "route", "add", "default", "via", gateway])
        self.tcp = socket_in(self.netns, socket.AF_INET, socket.SOCK_STREAM, ("0.0.0.0", port))
        self.tcp.listen(64)
        self.udp = socket_in(self.netns, socket.AF_INET, socket.SOCK_DGRAM, ("0.0.0.0", port))
        for target in (self._serve_tcp, self._serve_udp):
            threading.Thread(target=target, daemon=True).start()

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(100):
                    conn.sendall(self.name.encode() + b":" + data)
            except OSError:
                return

    def _serve_udp(self) -> None:
        while True:
            try:
                data, peer = self.udp.recvfrom(100)
                if not peer:  # shut down
                    return
                self.udp.sendto(self.name.encode() + b":" + data, peer)
            except OSError:
                return

    def close(self) -> None:
        for sock in (self.tcp, self.udp):
            with_shutdown(sock)
        subprocess.run(["ip", "netns", "del", self.netns], check=False)


def with_shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def ask(netns: str | None, address: str, port: int, proto: str = "tcp",
        timeout_s: float = 3.0) -> str:
    """One connection (or datagram): the reply, or the error's name."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket_in(netns, socket.AF_INET, kind)
    sock.settimeout(timeout_s)
    try:
        sock.connect((address, port))
        sock.sendall(b"hi")
        return sock.recv(100).decode()
    except OSError as exc:
        return type(exc).__name__
    finally:
        sock.close()


def http_get(netns: str | None, address: str, port: int, timeout_s: float = 5.0) -> str:
    """The body of GET / (or the error's name)."""
    sock = socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect((address, port))
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data.partition(b"\r\n\r\n")[2].decode().strip() or "EMPTY"
    except OSError as exc:
        return type(exc).__name__
    finally:
        sock.close()


# -- the VM cluster --------------------------------------------------------------------------------

@dataclass
class Cluster:
    host: Host
    manager: NetworkManager
    net: NetworkRecord
    vip: VipRecord
    vms: dict[str, Machine]
    address: dict[str, str]
    servers: list[GuestProcess]

    @property
    def host_port(self) -> int:
        return self.vip.ports[0].host_port


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def cluster(loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Cluster]:
    need_assets()
    assets: GuestAssets = guest_assets()
    # the busybox image's own (the host's static busybox cannot resolve names: glibc NSS)
    rootfs = unpack_busybox(tmp_path_factory.mktemp("viproot") / "rootfs")
    host = new_host("")
    mgr = NetworkManager(NetStore(open_db(tmp_path_factory.mktemp("vipnet"))), host,
                         upstreams=[], host_routes=lambda: [])
    vms: dict[str, Machine] = {}
    address: dict[str, str] = {}
    servers: list[GuestProcess] = []

    async def boot(name: str) -> None:
        att = await mgr.attach(_cid(name), name, "appnet")
        nic = att.nics[0]
        await asyncio.to_thread(links.ensure_tap, host, nic.tap, nic.bridge, nic.mtu)
        state = Path(tempfile.mkdtemp(prefix=f"scvip-{name}-"))
        spec = VmSpec(kernel=assets.kernel, initrd=assets.initrd, state_dir=state,
                      mem_mib=128, shares=(Share("rootfs", rootfs),),
                      nics=(NicSpec(nic.tap, nic.mac),))
        vms[name] = machine = Machine(spec, remove_state_dir=True, netns=host.netns)
        address[name] = nic.address
        await machine.start(BOOT_DEADLINE_S)
        await machine.guest.setup_root("rootfs", hostname=name)
        await configure(machine.guest, [nic.guest_nic()], [])
        if name in BACKENDS:
            servers.append(await machine.guest.start(ProcessSpec(
                args=("httpd", "-f", "-p", "80", "-h", f"/www/{name}"), env=PATH_ENV)))

    async def up() -> Cluster:
        await mgr.startup()
        net = await mgr.create("appnet")
        (rootfs / "etc" / "resolv.conf").write_text(f"nameserver {net.gateway}\n")
        for name in BACKENDS:
            (rootfs / "www" / name).mkdir(parents=True)
            (rootfs / "www" / name / "index.html").write_text(f"{name}\n")
        await asyncio.gather(*(boot(n) for n in BACKENDS))
        await boot("client")
        vip = await mgr.reserve_vip("appnet", "web", aliases=["www"])
        await mgr.set_backends(vip.id, [address[n] for n in BACKENDS])
        vip = await mgr.publish_vip(vip.id, [PortMapping(80)])
        return Cluster(host, mgr, net, vip, vms, address, servers)

    try:
        yield loop.run_until_complete(asyncio.wait_for(up(), 4 * BOOT_DEADLINE_S))
    finally:
        for name, machine in vms.items():
            loop.run_until_complete(asyncio.wait_for(machine.close(), 30))
            loop.run_until_complete(mgr.release(_cid(name)))
        loop.run_until_complete(mgr.close())
        drop_host(host)


def guest_sh(loop: asyncio.AbstractEventLoop, vm: Machine, script: str,
             timeout_s: float = 120.0) -> tuple[int, str]:
    async def run() -> tuple[int, str]:
        proc = await vm.guest.start(ProcessSpec(args=("/bin/sh", "-c", script), env=PATH_ENV))
        out = bytearray()
        async with asyncio.timeout(timeout_s):
            async for stream, data in proc:
                out += data if stream in (Stream.STDOUT, Stream.STDERR) else b""
            status = await proc.wait(timeout_s)
        return status.status, out.decode(errors="replace")
    return loop.run_until_complete(run())


def fetch(loop: asyncio.AbstractEventLoop, vm: Machine, target: str, n: int) -> Counter[str]:
    """Who answered n fetches of http://target/ from the guest ("FAIL" for a failed one)."""
    # (no `wget -T`: this busybox's wget crashes with it)
    _, out = guest_sh(loop, vm, f"for i in $(seq {n}); do wget -q -O - http://{target}/ "
                                "|| echo FAIL; done")
    return Counter(out.split())


def set_backends(c: Cluster, loop: asyncio.AbstractEventLoop, names: tuple[str, ...]) -> None:
    c.vip = loop.run_until_complete(c.manager.set_backends(c.vip.id,
                                                           [c.address[n] for n in names]))


def test_connections_to_the_vip_spread_over_its_backends(cluster: Cluster,
                                                         loop: asyncio.AbstractEventLoop) -> None:
    client = cluster.vms["client"]
    by_address = fetch(loop, client, cluster.vip.address, 24)
    assert set(by_address) == {"web1", "web2"}, by_address  # both, and no failure
    by_name = fetch(loop, client, "web", 12)  # through the network's DNS
    assert set(by_name) <= {"web1", "web2"} and sum(by_name.values()) == 12, by_name


def test_web_and_tasks_web_resolve_in_the_guest(cluster: Cluster,
                                                loop: asyncio.AbstractEventLoop) -> None:
    client = cluster.vms["client"]
    gw = cluster.net.gateway

    def lookup(name: str) -> set[str]:
        code, out = guest_sh(loop, client, f"nslookup {name} {gw}")
        assert code == 0, out
        answer = out.split("Name:", 1)[1] if "Name:" in out else ""
        return set(re.findall(r"Address:\s*(\d+\.\d+\.\d+\.\d+)", answer))

    assert lookup("web") == {cluster.vip.address}
    assert lookup("www") == {cluster.vip.address}
    assert lookup("tasks.web") == {cluster.address[n] for n in BACKENDS}


def test_a_backend_reaches_its_own_vip(cluster: Cluster,
                                       loop: asyncio.AbstractEventLoop) -> None:
    """Hairpin: picked for its own connection, web1 gets it back through its own tap (the
    taps are in hairpin mode) from the gateway (SNAT), and answers."""
    answers = fetch(loop, cluster.vms["web1"], cluster.vip.address, 16)
    assert "FAIL" not in answers and answers["web1"] > 0, answers


def test_the_published_port_reaches_the_backends_from_the_host(
        cluster: Cluster, loop: asyncio.AbstractEventLoop) -> None:
    def from_host(address: str) -> Counter[str]:
        return Counter(http_get(cluster.host.netns, address, cluster.host_port)
                       for _ in range(16))

    for address in ("127.0.0.1", cluster.net.gateway):  # the proxy; DNAT from the host
        # the loop runs meanwhile: the loopback proxy is served on it
        seen = loop.run_until_complete(asyncio.to_thread(from_host, address))
        assert set(seen) == {"web1", "web2"}, (address, seen)


def test_a_removed_backend_gets_no_more_connections(cluster: Cluster,
                                                    loop: asyncio.AbstractEventLoop) -> None:
    client = cluster.vms["client"]
    set_backends(cluster, loop, ("web2",))
    try:
        assert fetch(loop, client, cluster.vip.address, 16) == Counter({"web2": 16})
        _, out = guest_sh(loop, client, f"nslookup tasks.web {cluster.net.gateway}")
        assert cluster.address["web2"] in out and cluster.address["web1"] not in out, out
    finally:
        set_backends(cluster, loop, BACKENDS)
    assert set(fetch(loop, client, cluster.vip.address, 16)) == {"web1", "web2"}


def test_an_empty_vip_refuses_at_once(cluster: Cluster, loop: asyncio.AbstractEventLoop) -> None:
    client = cluster.vms["client"]
    set_backends(cluster, loop, ())
    try:
        started = time.monotonic()
        code, out = guest_sh(loop, client, f"wget -q -O - http://{cluster.vip.address}/",
                             timeout_s=30)
        elapsed = time.monotonic() - started
        assert code != 0 and "refused" in out.lower(), out
        assert elapsed < 10, elapsed  # refused, not left to time out
        # through the published port: the proxy's connection to the VIP is refused as well
        started = time.monotonic()
        got = loop.run_until_complete(asyncio.to_thread(
            http_get, cluster.host.netns, "127.0.0.1", cluster.host_port, 20.0))
        assert got in ("EMPTY", "ConnectionResetError") and time.monotonic() - started < 5
    finally:
        set_backends(cluster, loop, BACKENDS)


def test_another_tenants_container_cannot_reach_the_vip(
        cluster: Cluster, loop: asyncio.AbstractEventLoop) -> None:
    mgr = cluster.manager
    att = loop.run_until_complete(mgr.attach(_cid("intruder"), "intruder", "bridge",
                                             tenant="bob"))
    nic = att.nics[0]
    bob = NsContainer(cluster.host, nic.bridge, nic.address, nic.prefix, nic.gateway, "bob1")
    try:
        # bob's container is up (its own network's DNS answers it), but the name of the
        # operator's VIP is not known there
        reply = dns.parse_answer_addresses(loop.run_until_complete(asyncio.to_thread(
            dns_query, bob.netns, nic.gateway, "web")))
        assert reply[0] == dns.RCODE_REFUSED
        before = tenant_drops(cluster.host)
        for address in (cluster.vip.address, cluster.address["web1"]):
            got = loop.run_until_complete(asyncio.to_thread(
                http_get, bob.netns, address, 80, 2.0))
            assert got == "TimeoutError", (address, got)
        # DNATed to a backend, then dropped by the tenant rules (counted), not by chance
        assert tenant_drops(cluster.host) - before >= 2
        # and the port number of the VIP is no way in either: the gateway is not served
        assert http_get(bob.netns, nic.gateway, cluster.host_port, 2.0) != "web1"
    finally:
        bob.close()
        loop.run_until_complete(mgr.release(_cid("intruder")))


def tenant_drops(host: Host) -> int:
    """Packets the tenant rules (the forward chain's `counter drop`s) have dropped."""
    out = links.run(host.nft("list", "chain", "inet", nft.TABLE, "forward")).stdout
    return sum(int(n) for n in re.findall(r"counter packets (\d+) bytes \d+ drop", out))


def dns_query(netns: str, server: str, name: str) -> bytes:
    sock = socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(3)
    try:
        sock.connect((server, 53))
        sock.send(dns.build_query(name))
        return sock.recv(512)
    finally:
        sock.close()


# -- namespaces only: UDP, established connections, cost, restart ---------------------------------

@dataclass
class NsSetup:
    host: Host
    manager: NetworkManager
    net: NetworkRecord
    backends: dict[str, NsContainer]
    client: NsContainer


def _ns_setup(loop: asyncio.AbstractEventLoop, host: Host, db: Path,
              names: tuple[str, ...]) -> NsSetup:
    mgr = NetworkManager(NetStore(open_db(db)), host, upstreams=[], host_routes=lambda: [])
    loop.run_until_complete(mgr.startup())
    net = loop.run_until_complete(mgr.create("echonet"))
    made = {}
    for name in (*names, "cli"):
        nic = loop.run_until_complete(mgr.attach(_cid(name), name, "echonet")).nics[0]
        made[name] = NsContainer(host, nic.bridge, nic.address, nic.prefix, nic.gateway, name)
    client = made.pop("cli")
    return NsSetup(host, mgr, net, made, client)


def test_udp_established_connections_and_cost(loop: asyncio.AbstractEventLoop,
                                              tmp_path: Path) -> None:
    host = new_host("ns")
    setup = None
    try:
        setup = _ns_setup(loop, host, tmp_path, ("e1", "e2"))
        mgr, cli = setup.manager, setup.client
        vip = loop.run_until_complete(mgr.reserve_vip("echonet", "echo"))
        ips = {n: c.address for n, c in setup.backends.items()}
        loop.run_until_complete(mgr.set_backends(vip.id, list(ips.values())))

        udp = Counter(ask(cli.netns, vip.address, 7000, "udp").split(":")[0] for _ in range(40))
        assert set(udp) == {"e1", "e2"}, udp
        tcp = Counter(ask(cli.netns, vip.address, 7000).split(":")[0] for _ in range(40))
        assert set(tcp) == {"e1", "e2"}, tcp

        # An established connection keeps its backend across reloads of the table; the
        # backend taken out gets no new connection.
        conns = []
        while {c[1] for c in conns} != {"e1", "e2"}:
            sock = socket_in(cli.netns, socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(3)
            sock.connect((vip.address, 7000))
            sock.sendall(b"a")
            conns.append((sock, sock.recv(100).decode().split(":")[0]))
            assert len(conns) < 40
        loop.run_until_complete(mgr.set_backends(vip.id, [ips["e2"]]))
        for sock, backend in conns:
            sock.sendall(b"b")
            assert sock.recv(100).decode() == f"{backend}:b"  # e1's too (conntrack keeps it)
            sock.close()
        assert {ask(cli.netns, vip.address, 7000) for _ in range(20)} == {"e2:hi"}

        # Cost: connection + one exchange, through the VIP against straight to a backend.
        def per_connection_ms(address: str, n: int = 300) -> float:
            started = time.perf_counter()
            for _ in range(n):
                assert ask(cli.netns, address, 7000) == "e2:hi"
            return (time.perf_counter() - started) * 1000 / n

        direct, via_vip = per_connection_ms(ips["e2"]), per_connection_ms(vip.address)
        print(f"\nper connection: direct {direct:.3f} ms, through the VIP {via_vip:.3f} ms")
        assert via_vip < direct * 5 + 1

        # No backend: refused at once (tcp) / ICMP-refused (udp), from containers and host.
        loop.run_until_complete(mgr.set_backends(vip.id, []))
        started = time.monotonic()
        assert ask(cli.netns, vip.address, 7000) == "ConnectionRefusedError"
        assert ask(cli.netns, vip.address, 7000, "udp") == "ConnectionRefusedError"
        assert ask(host.netns, vip.address, 7000) == "ConnectionRefusedError"
        assert time.monotonic() - started < 2
    finally:
        if setup is not None:
            for c in (*setup.backends.values(), setup.client):
                c.close()
            loop.run_until_complete(setup.manager.close())
        drop_host(host)


def test_a_vip_survives_a_daemon_restart(loop: asyncio.AbstractEventLoop,
                                         tmp_path: Path) -> None:
    """A new manager over the same database (live restore: the containers run on) brings the
    VIP's address, rules and published port back."""
    host = new_host("rs")
    setup = None
    try:
        setup = _ns_setup(loop, host, tmp_path, ("r1", "r2"))
        mgr = setup.manager
        vip = loop.run_until_complete(mgr.reserve_vip("echonet", "echo"))
        loop.run_until_complete(mgr.set_backends(vip.id, [c.address for c in
                                                          setup.backends.values()]))
        vip = loop.run_until_complete(mgr.publish_vip(vip.id, [PortMapping(7000),
                                                               PortMapping(7000, "udp")]))
        kept = {_cid(n): mgr.run_state(_cid(n)) for n in ("r1", "r2", "cli")}
        loop.run_until_complete(mgr.close(keep=kept))
        # the daemon is gone: its loopback proxy too
        assert ask(host.netns, "127.0.0.1", vip.ports[0].host_port) == "ConnectionRefusedError"
        nft.apply(host, nft.render_delete())  # a reboot-like loss of the table
        links.delete_address(host, setup.net.bridge, f"{vip.address}/32")

        setup.manager = mgr2 = NetworkManager(NetStore(open_db(tmp_path)), host, upstreams=[],
                                              host_routes=lambda: [])
        loop.run_until_complete(mgr2.startup(kept))
        assert mgr2.get_vip(vip.id) == vip
        seen = Counter(ask(setup.client.netns, vip.address, 7000).split(":")[0]
                       for _ in range(30))
        assert set(seen) == {"r1", "r2"}, seen

        def through_proxy(port: PortMapping) -> set[str]:
            return {ask(host.netns, "127.0.0.1", port.host_port, port.proto).split(":")[0]
                    for _ in range(30)}

        for port in vip.ports:  # tcp, and udp flows (one per client socket)
            assert loop.run_until_complete(asyncio.to_thread(through_proxy, port)) == {
                "r1", "r2"}, port
        loop.run_until_complete(mgr2.release_vip(vip.id))
        assert ask(setup.client.netns, vip.address, 7000, timeout_s=1) in (
            "TimeoutError", "ConnectionRefusedError")
        addrs = links.run(host.ip("-o", "addr", "show", "dev", setup.net.bridge)).stdout
        assert f" {vip.address}/32 " not in addrs
    finally:
        if setup is not None:
            for c in (*setup.backends.values(), setup.client):
                c.close()
            loop.run_until_complete(setup.manager.close())
        drop_host(host)


def test_both_ways_a_tap_joins_a_bridge_set_hairpin_mode() -> None:
    """The pool makes a container's tap (`ensure_tap`) or renames a ready VM's spare
    (`take_place`): either way in hairpin mode, which a backend reaching its own VIP needs
    when br_netfilter DNATs at the bridge (test_a_backend_reaches_its_own_vip)."""
    host = new_host("tap")
    try:
        links.ensure_bridge(host, "br0", "10.213.9.1/24", 1500)
        links.ensure_tap(host, "sctmade", "br0", 1500)
        links.create_tap(host, "scwspare")
        links.take_place(host, "scwspare", "sctplaced", "br0", 1500)
        for tap in ("sctmade", "sctplaced"):
            info = links.run(host.ip("-d", "link", "show", "dev", tap)).stdout
            assert "hairpin on" in info, info
    finally:
        drop_host(host)
