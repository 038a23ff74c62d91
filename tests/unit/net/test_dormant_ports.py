"""A run's ports reserved but not published (`attach(dormant=True)`, `unpublish`, `publish`):
a restored VM's ports take connections only once it runs, and a VM being saved for a suspend
takes none (docs/checkpoints.md). Without a kernel: the rules the manager would load, the port
keeper's loopback proxies (in this process) and the reservations."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from steelcup.errors import Conflict
from steelcup.net.manager import NetworkManager
from steelcup.net.model import PortMapping
from tests.unit.net.test_vips import ALICE, _manager

CID = "c" * 64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _dnat(mgr: NetworkManager, port: int) -> bool:
    return any(p.host_port == port for p in mgr._ports_loaded)


def test_a_dormant_run_holds_its_ports_and_publishes_them_on_demand(tmp_path: Path) -> None:
    port = _free_port()

    async def scenario() -> None:
        mgr = _manager(tmp_path)
        forgotten: list[tuple[str | None, str]] = []
        mgr.forget_udp_flows = lambda netns, address: forgotten.append((netns, address)) or 0
        try:
            att = await mgr.attach(CID, "web", "appnet", tenant="alice", dormant=True,
                                   ports=[PortMapping(80, "tcp", host_port=port)])
            assert [p.host_port for p in att.ports] == [port]
            assert not _dnat(mgr, port) and not _listening(port)
            with pytest.raises(Conflict, match="already allocated"):  # reserved all the same
                await mgr.attach("d" * 64, "other", "appnet", tenant="alice",
                                 ports=[PortMapping(80, "tcp", host_port=port)])
            await mgr.publish(CID)
            assert _dnat(mgr, port) and _listening(port)
            await mgr.publish(CID)  # once is enough
            await mgr.unpublish(CID)
            assert not _dnat(mgr, port) and not _listening(port)
            assert mgr.run_state(CID)[1] == att.ports  # still its own
            # its udp flows are forgotten: their next datagrams find the wake listener
            assert forgotten == [(None, att.nics[0].address)]
            await mgr.publish(CID)
            assert _dnat(mgr, port) and _listening(port)
        finally:
            await mgr.close()

    asyncio.run(scenario())


def test_a_dormant_backend_takes_no_virtual_ip_traffic(tmp_path: Path) -> None:
    async def scenario() -> None:
        mgr = _manager(tmp_path)
        try:
            vip = await mgr.reserve_vip("appnet", "web", "alice")
            att = await mgr.attach(CID, "web.1", "appnet", tenant="alice")
            address = att.nics[0].address
            await mgr.set_backends(vip.id, [address])
            assert address in mgr._live_addresses()[ALICE]
            mgr.forget_udp_flows = lambda netns, address: 0
            await mgr.unpublish(CID)  # being saved: no VM answers
            assert address not in mgr._live_addresses().get(ALICE, set())
            await mgr.publish(CID)
            assert address in mgr._live_addresses()[ALICE]
        finally:
            await mgr.close()

    asyncio.run(scenario())


def test_a_starts_strict_publish_fails_on_a_loopback_port_someone_else_holds(
        tmp_path: Path) -> None:
    """A start publishes its ports once the guest has its address (dormant until then); a
    loopback port another host process listens on fails it (Conflict or OSError), where a
    restore's publish only logs it."""
    async def scenario() -> None:
        mgr = _manager(tmp_path)
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            port = int(squatter.getsockname()[1])
            try:
                await mgr.attach(CID, "web", "appnet", tenant="alice", dormant=True,
                                 ports=[PortMapping(80, "tcp", host_ip="127.0.0.1",
                                                    host_port=port)])
                with pytest.raises((Conflict, OSError)):
                    await mgr.publish(CID, strict=True)
                await mgr.detach(CID)
                await mgr.attach(CID, "web", "appnet", tenant="alice", dormant=True,
                                 ports=[PortMapping(80, "tcp", host_ip="127.0.0.1",
                                                    host_port=port)])
                await mgr.publish(CID)  # logged; the rest of the run goes on
            finally:
                await mgr.close()

    asyncio.run(scenario())
