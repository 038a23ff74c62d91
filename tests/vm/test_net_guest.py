"""Real VMs on real bridges inside a network namespace this test creates: the init's NET_CONFIG
and MOUNT requests (docs/guest-protocol.md opcodes 17, 18) end to end.

Three microVMs: a and b on bridge scA, c on bridge scB. a/b reach each other (ping, HTTP), a
cannot reach c (no forwarding between bridges in the namespace). Nothing touches the host's
interfaces: every link lives in the namespace, which is deleted at teardown.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from steelcup.guest.client import GuestRequestError, ProcessSpec, Stream
from steelcup.guest.ops import GuestMount, GuestNic, mount, net_config
from steelcup.net import links, nft
from steelcup.net.links import Host
from steelcup.net.model import NetworkRecord
from steelcup.vm.assets import GuestAssets
from steelcup.vm.machine import Machine
from steelcup.vm.qemu_args import Share, VmSpec
from tests.vm.support import busybox_root, guest_assets

pytestmark = pytest.mark.vm

BOOT_DEADLINE_S = 40.0
PATH_ENV = ("PATH=/bin",)
CLONE_MAC = "52:54:00:d5:00:cc"
CAP_NET_ADMIN = 12


class NetMachine(Machine):
    """A Machine whose QEMU runs inside `host`'s namespace with one tap NIC."""

    def __init__(self, spec: VmSpec, host: Host, tap: str, mac: str) -> None:
        super().__init__(spec, remove_state_dir=True, netns=host.netns)
        nic = ["-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
               "-device", f"virtio-net-device,netdev=n0,mac={mac}"]
        self.argv = [*self.argv[:-2], *nic, *self.argv[-2:]]


@dataclass
class Guest:
    machine: NetMachine
    ip: str
    mac: str
    rehearsed: str = ""  # c: its NIC and routes after a pooled VM's rehearsal, before NET_CONFIG


@pytest.fixture(scope="module")
def assets() -> GuestAssets:
    return guest_assets()


@pytest.fixture(scope="module")
def netns() -> Iterator[Host]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 for a network namespace")
    name = f"sctest{os.getpid()}"
    links.run(["ip", "netns", "add", name])
    host = Host(name)
    try:
        links.run(host.ip("link", "set", "lo", "up"))
        links.ensure_bridge(host, "scA", "10.213.1.1/24", 1500)
        links.ensure_bridge(host, "scB", "10.213.2.1/24", 1500)
        for tap, br in (("scA-a", "scA"), ("scA-b", "scA"), ("scB-c", "scB")):
            links.ensure_tap(host, tap, br, 1500)
        # Forwarding on (as the daemon sets it): isolation must come from steelcup's rules.
        links.run(host.wrap(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))
        nft.apply(host, nft.render([
            NetworkRecord("a" * 64, "na", "10.213.1.0/24", "10.213.1.1", "scA"),
            NetworkRecord("b" * 64, "nb", "10.213.2.0/24", "10.213.2.1", "scB"),
        ]))
        yield host
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture(scope="module")
def rootfs() -> Iterator[Path]:
    applets = ("sh", "ping", "wget", "httpd", "ifconfig", "ip", "cat", "dd", "ls", "sleep",
               "echo", "touch", "mount", "route")
    with busybox_root("scup-netroot-", applets,
                      ("tmp", "etc", "www", "escape-target")) as root:
        (root / "www" / "index.html").write_text("hello from b\n")
        (root / "evil").symlink_to("/escape-target")
        yield root


@pytest.fixture(scope="module")
def volume() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="scup-vol-"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def guests(assets: GuestAssets, netns: Host, rootfs: Path, volume: Path,
           loop: asyncio.AbstractEventLoop) -> Iterator[dict[str, Guest]]:
    plan = {
        "a": ("scA-a", "52:54:00:d5:00:0a", "10.213.1.10", "10.213.1.1"),
        "b": ("scA-b", "52:54:00:d5:00:0b", "10.213.1.11", "10.213.1.1"),
        "c": ("scB-c", "52:54:00:d5:00:0c", "10.213.2.10", "10.213.2.1"),
    }
    out: dict[str, Guest] = {}
    for key, (tap, mac, _, _) in plan.items():
        state = Path(tempfile.mkdtemp(prefix=f"scnet-{key}-"))
        shares = (Share("rootfs", rootfs), Share("vol0", volume))
        spec = VmSpec(kernel=assets.kernel, initrd=assets.initrd, state_dir=state, mem_mib=128,
                      shares=shares)
        out[key] = Guest(NetMachine(spec, netns, tap, mac), plan[key][2], mac)

    async def boot(key: str) -> None:
        g = out[key]
        await g.machine.start(BOOT_DEADLINE_S)
        await g.machine.guest.setup_root("rootfs", hostname=f"net-{key}")
        gw = plan[key][3]
        # c is configured like a template clone: the NIC's MAC differs from the wanted one,
        # and a pooled VM's warm-up rehearsed the configuration first (pool/cache.py)
        mac = CLONE_MAC if key == "c" else g.mac
        if key == "c":
            await net_config(g.machine.guest, GuestNic(
                mac=g.mac, ifname="eth0", address="192.0.2.2", prefix=24, gateway="192.0.2.1",
                mtu=1500, rehearse=True))
            code, g.rehearsed = await sh(g, "ifconfig eth0; cat /proc/net/route")
            assert code == 0, g.rehearsed
        await net_config(g.machine.guest, GuestNic(mac=mac, ifname="eth0", address=g.ip,
                                                   prefix=24, gateway=gw, mtu=1400))

    async def boot_all() -> None:
        await asyncio.gather(*(boot(k) for k in out))

    try:
        loop.run_until_complete(asyncio.wait_for(boot_all(), 4 * BOOT_DEADLINE_S))
        yield out
    finally:
        for g in out.values():
            loop.run_until_complete(asyncio.wait_for(g.machine.close(), 30))


async def sh(g: Guest, script: str, timeout_s: float = 30.0,
             caps: int | None = None) -> tuple[int, str]:
    proc = await g.machine.guest.start(ProcessSpec(args=("/bin/sh", "-c", script), env=PATH_ENV,
                                                   caps=caps))
    buf = bytearray()
    async with asyncio.timeout(timeout_s):
        async for stream, data in proc:
            buf += data if stream in (Stream.STDOUT, Stream.STDERR) else b""
        status = await proc.wait(timeout_s)
    return status.status, buf.decode(errors="replace")


def test_interface_configured(guests: dict[str, Guest], loop: asyncio.AbstractEventLoop) -> None:
    code, out = loop.run_until_complete(sh(guests["a"], "ifconfig eth0; ifconfig lo; route -n"))
    assert code == 0, out
    assert "inet addr:10.213.1.10" in out and "Mask:255.255.255.0" in out, out
    assert "MTU:1400" in out, out
    assert "52:54:00:D5:00:0A" in out.upper(), out
    assert "127.0.0.1" in out, out
    assert "10.213.1.1" in out, out  # default route


def test_same_bridge_ping_and_http(guests: dict[str, Guest],
                                   loop: asyncio.AbstractEventLoop) -> None:
    a, b = guests["a"], guests["b"]

    async def scenario() -> tuple[int, str, int, str]:
        server = await b.machine.guest.start(ProcessSpec(
            args=("/bin/httpd", "-f", "-p", "8080", "-h", "/www"), env=PATH_ENV))
        try:
            c1, o1 = await sh(a, f"ping -c 2 -W 5 {b.ip}")
            c2, o2 = await sh(a, f"wget -O - http://{b.ip}:8080/index.html")
        finally:
            await server.signal(9)
            async for _ in server:
                pass
        return c1, o1, c2, o2

    c1, o1, c2, o2 = loop.run_until_complete(scenario())
    assert c1 == 0, o1
    assert c2 == 0 and "hello from b" in o2, o2


def test_gateway_reachable_with_clone_style_mac(guests: dict[str, Guest],
                                               loop: asyncio.AbstractEventLoop) -> None:
    code, out = loop.run_until_complete(sh(guests["c"], "ifconfig eth0; ping -c 1 -W 5 10.213.2.1"))
    assert code == 0, out
    assert CLONE_MAC.upper() in out.upper(), out


def test_other_bridge_unreachable(guests: dict[str, Guest], netns: Host,
                                  loop: asyncio.AbstractEventLoop) -> None:
    code, out = loop.run_until_complete(sh(guests["a"], f"ping -c 2 -W 2 {guests['c'].ip}"))
    assert code != 0, out
    # the same packets pass once the rules are gone: the rules are what isolates
    nft.apply(netns, nft.render_delete())
    try:
        code, out = loop.run_until_complete(sh(guests["a"], f"ping -c 1 -W 5 {guests['c'].ip}"))
        assert code == 0, out
    finally:
        nft.apply(netns, nft.render([
            NetworkRecord("a" * 64, "na", "10.213.1.0/24", "10.213.1.1", "scA"),
            NetworkRecord("b" * 64, "nb", "10.213.2.0/24", "10.213.2.1", "scB"),
        ]))


def test_mount_9p_fsync_visible_on_host(guests: dict[str, Guest], volume: Path,
                                        loop: asyncio.AbstractEventLoop) -> None:
    g = guests["a"]

    async def scenario() -> tuple[int, str]:
        await mount(g.machine.guest, GuestMount(target="/data/vol", source="vol0"))
        return await sh(g, "echo durable > /data/vol/f.txt.tmp && "
                           "dd if=/data/vol/f.txt.tmp of=/data/vol/f.txt conv=fsync 2>/dev/null"
                           " && cat /data/vol/f.txt")

    code, out = loop.run_until_complete(scenario())
    assert code == 0, out
    assert (volume / "f.txt").read_text() == "durable\n"


def test_mount_readonly_tmpfs_and_escape(guests: dict[str, Guest], rootfs: Path,
                                         loop: asyncio.AbstractEventLoop) -> None:
    g = guests["b"]

    async def scenario() -> tuple[int, str, int]:
        await mount(g.machine.guest, GuestMount(target="/ro", source="vol0", readonly=True))
        await mount(g.machine.guest, GuestMount(target="/scratch/t", fstype="tmpfs",
                                                options="size=1048576,mode=1777"))
        code, out = await sh(g, "touch /ro/x; echo rc=$?; mount | grep -E ' /(ro|scratch/t) '")
        try:
            await mount(g.machine.guest, GuestMount(target="/evil/inside", source="vol0"))
            escaped = 0
        except GuestRequestError as exc:
            escaped = exc.errno_value
        return code, out, escaped

    code, out, err = loop.run_until_complete(scenario())
    assert "rc=1" in out, out
    assert " /ro type 9p (ro" in out, out
    assert " /scratch/t type tmpfs" in out and "size=1024k" in out, out
    assert err == errno.ELOOP
    assert not (rootfs / "escape-target" / "inside").exists()


def test_bridge_keeps_its_own_mac(guests: dict[str, Guest], netns: Host) -> None:
    """Ports came and went (three VMs' taps): the bridge's MAC is still its own, so the host's
    neighbour entries on it were never flushed by a port joining."""
    for bridge in ("scA", "scB"):
        shown = subprocess.run(netns.ip("-o", "link", "show", "dev", bridge),
                               capture_output=True, text=True, check=True).stdout
        assert f" {links.bridge_mac(bridge)} " in shown, shown


def test_a_rehearsal_leaves_the_nic_down_without_address_or_routes(
        guests: dict[str, Guest], loop: asyncio.AbstractEventLoop) -> None:
    """What the rehearsal configured is gone before the container's NET_CONFIG (which then
    works: test_gateway_reachable_with_clone_style_mac); a rehearsal must name its NIC."""
    shown = guests["c"].rehearsed
    nic, _, routes = shown.partition("Iface")
    assert "eth0" in nic and "inet addr" not in nic and " UP " not in nic, shown
    assert "MTU:1500" in nic, shown  # the MTU it set stays (NET_CONFIG sets the NIC's own)
    assert "eth0" not in routes, shown  # neither the default route nor the prefix's
    with pytest.raises(GuestRequestError) as refused:
        loop.run_until_complete(net_config(guests["a"].machine.guest, GuestNic(
            mac=guests["a"].mac, address="192.0.2.3", prefix=24, rehearse=True)))
    assert refused.value.errno_value == errno.EINVAL
    code, out = loop.run_until_complete(sh(guests["a"], "ifconfig eth0"))
    assert code == 0 and "inet addr:10.213.1.10" in out, out  # refused before any change


def test_nic_up_announces_its_address(guests: dict[str, Guest], netns: Host,
                                      loop: asyncio.AbstractEventLoop) -> None:
    """A NIC brought up sends a gratuitous ARP (the init turns arp_notify on at boot): the
    host's stale entry for b's address is corrected without the host asking. Last in the
    file: b's link goes down and up."""
    b = guests["b"]
    subprocess.run(netns.ip("neigh", "replace", b.ip, "lladdr", "02:00:00:00:00:01", "dev",
                            "scA", "nud", "stale"), check=True)
    code, out = loop.run_until_complete(sh(b, "ifconfig eth0 down && ifconfig eth0 up && "
                                              "route add default gw 10.213.1.1",
                                           caps=1 << CAP_NET_ADMIN))
    assert code == 0, out
    deadline = time.monotonic() + 10
    while True:
        shown = subprocess.run(netns.ip("neigh", "show", b.ip, "dev", "scA"),
                               capture_output=True, text=True, check=True).stdout
        if b.mac in shown:
            break
        assert time.monotonic() < deadline, f"the host still has {shown!r} for {b.ip}"
        time.sleep(0.1)
