"""The host's loopback reaches published ports through DNAT (net/nft.py), and what that needs of
the bridges (`route_localnet`) opens nothing to containers: checked in scratch namespaces with
the real bridge setup (links.ensure_bridge) and the real rulesets, the attacks each against a
control without the rules that stop them."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from steelcup.net import antispoof, links, nft
from steelcup.net.antispoof import TapGuard
from steelcup.net.model import NetworkRecord

BRIDGE = "sc-lo0000000000"
NET = NetworkRecord("n" * 64, "lonet", "10.9.0.0/24", "10.9.0.1", BRIDGE)
SERVER = TapGuard("sctaaaaaaaaaaaa", "02:42:0a:09:00:02", "10.9.0.2")
ATTACKER = TapGuard("sctbbbbbbbbbbbb", "02:42:0a:09:00:03", "10.9.0.3")
HOST_SERVICE_PORT = 7001  # a service of the host's, on its 127.0.0.1 only
PORTS = [
    nft.PublishedPort("", 18080, SERVER.address, 80),  # every address, loopback included
    nft.PublishedPort("127.0.0.1", 18081, SERVER.address, 81),
    nft.PublishedPort("192.0.2.9", 18082, SERVER.address, 82),  # not the loopback's
]

# Answers one line per connection with the peer's address, on the ports given.
ECHO_PEER = """
import socket, sys, selectors
sel = selectors.DefaultSelector()
for spec in sys.argv[1:]:
    host, port = spec.rsplit(":", 1)
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port))); s.listen(); sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        conn, peer = key.fileobj.accept()
        conn.sendall(f"{peer[0]}\\n".encode()); conn.close()
"""

CONNECT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1) as s:
        print(s.makefile().readline().strip())
except OSError as exc:
    print("failed:", exc)
"""


@dataclass
class Lan:
    """Namespace `h` (the host: the bridge, steelcup's rulesets, a service on 127.0.0.1) with
    two container namespaces on the bridge: `a` serves the published ports, `b` attacks."""

    names: dict[str, str]
    servers: list[subprocess.Popen[str]]

    def exec(self, ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.names[ns], *argv],
                              capture_output=True, text=True, timeout=30)

    def ip(self, ns: str, *argv: str) -> None:
        subprocess.run(["ip", "-n", self.names[ns], *argv], check=True, capture_output=True)

    def serve(self, ns: str, *specs: str) -> None:
        proc = subprocess.Popen(["ip", "netns", "exec", self.names[ns], "python3", "-c",
                                 ECHO_PEER, *specs], stdout=subprocess.PIPE, text=True)
        self.servers.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

    def connect(self, ns: str, address: str, port: int) -> str:
        return self.exec(ns, "python3", "-c", CONNECT, address, str(port)).stdout.strip()

    def load(self, ruleset: str) -> None:
        run = subprocess.run(["ip", "netns", "exec", self.names["h"], "nft", "-f", "-"],
                             input=ruleset, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr


def full_ruleset() -> str:
    return nft.render([NET], PORTS) + antispoof.render([SERVER, ATTACKER], "sct")


def without(ruleset: str, *lines: str) -> str:
    """`ruleset` with each of `lines` (a rule, as rendered) taken out: a mutation."""
    kept = ruleset.splitlines()
    for line in lines:
        assert any(k.strip() == line for k in kept), line
        kept = [k for k in kept if k.strip() != line]
    return "\n".join(kept) + "\n"


NO_TABLES = nft.render_delete()
GUARD_DROP = "ether type ip ip daddr 127.0.0.0/8 counter drop"
RAW_DROP = f'iifname {{ "{BRIDGE}" }} ip daddr 127.0.0.0/8 counter drop'
INPUT_DROP = f'iifname "{BRIDGE}" drop'


@pytest.fixture
def lan() -> Iterator[Lan]:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("builds a bridge in namespaces and loads rulesets there: needs root, nft")
    tag = uuid.uuid4().hex[:6]
    made = Lan({k: f"sct-lo{k}-{tag}" for k in ("h", "a", "b")}, [])
    try:
        for key, ns in made.names.items():
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
            made.ip(key, "link", "set", "lo", "up")
        links.ensure_bridge(links.Host(netns=made.names["h"]), BRIDGE, "10.9.0.1/24", 1500)
        for key, guard in (("a", SERVER), ("b", ATTACKER)):
            made.ip("h", "link", "add", guard.tap, "type", "veth", "peer", "name", "eth0",
                    "netns", made.names[key])
            made.ip("h", "link", "set", guard.tap, "master", BRIDGE, "up")
            made.ip(key, "link", "set", "eth0", "address", guard.mac, "up")
            made.ip(key, "addr", "add", f"{guard.address}/24", "dev", "eth0")
            made.ip(key, "route", "add", "default", "via", NET.gateway)
        made.serve("a", "0.0.0.0:80", "0.0.0.0:81", "0.0.0.0:82")
        made.serve("h", f"127.0.0.1:{HOST_SERVICE_PORT}")
        # b is root in its VM: it can send to 127.0.0.0/8 through its NIC, as here.
        made.ip("b", "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local")
        made.ip("b", "route", "del", "local", "127.0.0.1", "dev", "lo", "table", "local")
        made.ip("b", "addr", "flush", "dev", "lo")
        made.ip("b", "route", "add", "127.0.0.0/8", "via", NET.gateway, "dev", "eth0")
        made.exec("b", "sysctl", "-q", "-w", "net.ipv4.conf.eth0.route_localnet=1")
        yield made
    finally:
        for proc in made.servers:
            proc.kill()
            proc.wait()
        for ns in made.names.values():
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def test_the_bridge_routes_loopback_sources(lan: Lan) -> None:
    assert lan.exec("h", "sysctl", "-n", f"net.ipv4.conf.{BRIDGE}.route_localnet"
                    ).stdout.strip() == "1"


def test_the_hosts_loopback_reaches_ports_published_on_it(lan: Lan) -> None:
    """DNAT, not a proxy: no process of the host listens on these ports. The container sees
    the connection come from its gateway, as it would from the proxy."""
    lan.load(full_ruleset())
    assert lan.connect("h", "127.0.0.1", 18080) == NET.gateway
    assert lan.connect("h", "127.0.0.1", 18081) == NET.gateway
    assert lan.connect("h", "127.0.0.1", 18082).startswith("failed")  # another address's
    assert lan.connect("h", NET.gateway, 18080) == NET.gateway  # the other local addresses
    assert lan.connect("h", NET.gateway, 18081).startswith("failed")  # loopback only
    lan.load(NO_TABLES)  # the control: without the rules nothing answers there
    assert lan.connect("h", "127.0.0.1", 18080).startswith("failed")


def test_a_port_added_to_the_loaded_table_answers_on_the_loopback(lan: Lan) -> None:
    lan.load(nft.render([NET]) + antispoof.render([SERVER, ATTACKER], "sct"))
    assert lan.connect("h", "127.0.0.1", 18080).startswith("failed")
    lan.load(nft.add_ports(PORTS))
    assert lan.connect("h", "127.0.0.1", 18080) == NET.gateway
    assert lan.connect("h", "127.0.0.1", 18081) == NET.gateway
    assert lan.connect("h", "127.0.0.1", 18082).startswith("failed")


def test_a_container_reaches_nothing_on_the_hosts_loopback(lan: Lan) -> None:
    """b sends to 127.0.0.0/8 through the bridge, whose route_localnet would deliver it to the
    host's loopback services. Three rules stop it, each alone: the guard table's drop at the
    tap, the raw prerouting drop for the bridge, the input chain's drop of what comes from a
    bridge; with all three taken out, it connects (the control). The first two also stop it
    before the published ports' DNAT (which would only lead b to a, as a's address does)."""
    ruleset = full_ruleset()
    services = (("127.0.0.1", HOST_SERVICE_PORT), ("127.0.0.2", HOST_SERVICE_PORT))
    variants = {
        "all": (ruleset, True),
        "guard only": (without(ruleset, RAW_DROP, INPUT_DROP), True),
        "raw only": (without(ruleset, GUARD_DROP, INPUT_DROP), True),
        "input only": (without(ruleset, GUARD_DROP, RAW_DROP), False),
    }
    for name, (variant, before_dnat) in variants.items():
        lan.load(variant)
        for address, port in services:
            assert lan.connect("b", address, port).startswith("failed"), (name, address)
        if before_dnat:
            assert lan.connect("b", "127.0.0.1", 18080).startswith("failed"), name
    assert lan.connect("b", SERVER.address, 80) == ATTACKER.address  # b itself works
    lan.load(without(ruleset, GUARD_DROP, RAW_DROP, INPUT_DROP))
    assert lan.connect("b", "127.0.0.1", HOST_SERVICE_PORT) == ATTACKER.address


def test_the_drops_are_counted(lan: Lan) -> None:
    lan.load(full_ruleset())
    lan.connect("b", "127.0.0.1", HOST_SERVICE_PORT)
    listed = lan.exec("h", "nft", "list", "chain", "bridge", antispoof.TABLE,
                      "from_guests").stdout
    line = next(k for k in listed.splitlines() if "127.0.0.0/8" in k)
    assert "counter packets 0 " not in line, line


def test_the_loopback_chain_holds_the_loopbacks_container_ports() -> None:
    """The loopback chain holds the container ports of 127.0.0.1 and of every address, and
    only those; a VIP's ports stay with the proxy (they balance there)."""
    text = nft.render([NET], PORTS)
    chain = text.split(f"\tchain {nft.LOOPBACK_CHAIN} {{\n", 1)[1].split("\t}\n", 1)[0]
    assert chain.split("\n")[:-1] == [
        f"\t\ttcp dport 18080 dnat ip to {SERVER.address}:80",
        f"\t\ttcp dport 18081 dnat ip to {SERVER.address}:81",
    ]
    ports = text.split("\tchain ports {\n", 1)[1].split("\t}\n", 1)[0]
    assert "18081" not in ports and "18080" in ports and "18082" in ports
