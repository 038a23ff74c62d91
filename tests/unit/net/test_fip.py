"""Floating IPs: the pool and allocation (pure), the rules they add to the ruleset (golden
tests/golden/nft_ruleset_fips.txt; nft accepts them), and `FloatingIps` on a real database:
quota, attach rules per tenant, persistence, detach on endpoint removal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from steelcup.errors import Conflict, Forbidden, InvalidArgument, NotFound, Unsupported
from steelcup.net import fip, links, nft, vip
from steelcup.net.fip import FipRecord, FipTarget
from steelcup.net.fipmanager import FloatingIps
from steelcup.net.fipstore import FipStore
from steelcup.net.links import Host
from steelcup.net.model import Endpoint, NetworkRecord, VipRecord
from steelcup.net.store import NetStore
from steelcup.net.vip import VipTarget
from steelcup.state.db import open_db
from tests.unit.net.dry import make_host_dry, recorder

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "nft_ruleset_fips.txt"
POOL = IPv4Network("203.0.113.16/28")
NETS = [
    NetworkRecord("a" * 64, "bridge", "10.213.2.0/24", "10.213.2.1", "sc-aaaaaaaaaaaa",
                  tenant="alice"),
    NetworkRecord("b" * 64, "bridge", "10.213.3.0/24", "10.213.3.1", "sc-bbbbbbbbbbbb",
                  tenant="bob"),
    NetworkRecord("c" * 64, "back", "10.213.4.0/24", "10.213.4.1", "sc-cccccccccccc",
                  internal=True, tenant="alice"),
]
FIPS = [FipTarget("203.0.113.18", "10.213.3.2", "sc-bbbbbbbbbbbb"),
        FipTarget("203.0.113.17", "10.213.2.2", "sc-aaaaaaaaaaaa")]
PORTS = [nft.PublishedPort("", 8080, "10.213.2.3", 80)]


def _ruleset() -> str:
    return nft.render(NETS, PORTS, (), sorted(FIPS, key=lambda t: t.address), POOL)


def test_golden_ruleset_with_fips() -> None:
    text = _ruleset()
    if os.environ.get("STEELCUP_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def _chain(text: str, name: str) -> list[str]:
    return text.split(f"\tchain {name} {{\n", 1)[1].split("\t}\n", 1)[0].splitlines()


def test_one_to_one_nat_both_ways_before_published_ports_and_masquerade() -> None:
    text = _ruleset()
    pre = _chain(text, "prerouting")
    jump = pre.index('\t\tiifname != { "sc-aaaaaaaaaaaa", "sc-bbbbbbbbbbbb", '
                     '"sc-cccccccccccc" } jump fips')
    assert jump < pre.index("\t\tfib daddr type local jump ports")
    assert _chain(text, "fips") == ["\t\tip daddr 203.0.113.17 dnat ip to 10.213.2.2",
                                    "\t\tip daddr 203.0.113.18 dnat ip to 10.213.3.2"]
    post = _chain(text, "postrouting")
    snat = post.index('\t\tip saddr 10.213.2.2 oifname != "sc-aaaaaaaaaaaa" snat ip to '
                      "203.0.113.17")
    assert snat < post.index('\t\tip saddr 10.213.2.0/24 oifname != "sc-aaaaaaaaaaaa" '
                             "masquerade")


def test_the_pool_is_unreachable_directly_and_stale_flows_are_cut() -> None:
    forward = _chain(_ruleset(), "forward")
    # after the tenant rules, before anything that accepts
    first_accept = next(i for i, line in enumerate(forward) if line.endswith("accept"))
    pool_drop = forward.index("\t\tip daddr 203.0.113.16/28 counter drop")
    assert forward[pool_drop - 1].endswith("counter drop") and pool_drop < first_accept
    assert _chain(_ruleset(), "fip_in") == [
        "\t\tct original ip daddr 203.0.113.17 ct reply ip saddr 10.213.2.2 return",
        "\t\tct original ip daddr 203.0.113.18 ct reply ip saddr 10.213.3.2 return",
        "\t\tcounter drop"]
    assert '\t\tiifname != "lo" ip daddr 203.0.113.16/28 counter drop' in _chain(
        _ruleset(), "input")


def test_no_pool_no_fip_rules() -> None:
    text = nft.render(NETS, PORTS)
    assert "fip" not in text and "snat" not in text
    with pytest.raises(ValueError, match="without a pool"):
        nft.render(NETS, (), (), FIPS)
    with pytest.raises(ValueError, match="no network"):
        nft.render(NETS[:1], (), (), FIPS, POOL)


@pytest.mark.skipif(os.geteuid() != 0, reason="loads the ruleset into a namespace: needs root")
def test_nft_accepts_the_fip_ruleset_in_a_scratch_namespace() -> None:
    ns = f"sct-fip-{uuid.uuid4().hex[:8]}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace")
    try:
        run = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                             input=_ruleset() + nft.render_delete(), capture_output=True,
                             text=True)
        assert run.returncode == 0, run.stderr
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


# -- the pool -------------------------------------------------------------------------------


def test_choose_takes_the_lowest_free_usable_addresses() -> None:
    assert fip.choose(POOL, {"203.0.113.17", "203.0.113.19"}, 2) == ["203.0.113.18",
                                                                    "203.0.113.20"]
    # a /28 has 14 usable addresses: not its network or broadcast address
    assert len(fip.choose(POOL, set(), 14)) == 14
    with pytest.raises(Conflict, match="has 14 free address"):
        fip.choose(POOL, set(), 15)
    assert fip.choose(IPv4Network("198.51.100.7/32"), set(), 1) == ["198.51.100.7"]
    with pytest.raises(InvalidArgument):
        fip.choose(POOL, set(), 0)


@pytest.mark.parametrize(("cidr", "message"), [
    ("bogus", "not an IPv4 CIDR"), ("10.0.0.0/8", "at most a /16"),
    ("10.213.9.0/24", "overlaps 10.213.0.0/16"),
])
def test_a_bad_pool_is_refused_clearly(cidr: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        fip.parse_pool(cidr, [IPv4Network("10.213.0.0/16")])


def test_records_round_trip_and_corrupt_addresses_never_render() -> None:
    rec = FipRecord("203.0.113.17", "alice", "web", "c" * 64, "a" * 64, "2026-01-01T00:00:00Z")
    assert FipRecord.from_json(rec.to_json()) == rec
    bad = FipRecord("203.0.113.17; flush ruleset", "alice", "", "c" * 64, "a" * 64)
    with pytest.raises(ValueError):
        fip.targets([bad], {("c" * 64, "a" * 64): ("10.213.2.2", "sc-aaaaaaaaaaaa")})


# -- FloatingIps on a database ---------------------------------------------------------------


class _Gate:
    """A quota gate of `limit` FIPs per tenant, counting what the store holds."""

    def __init__(self, fips: FloatingIps, limit: int) -> None:
        self.fips, self.limit = fips, limit

    @contextlib.contextmanager
    def admit(self, tenant: str | None, wanted: Mapping[str, int]) -> Iterator[None]:
        held = len(self.fips.list(tenant or ""))
        if tenant and held + wanted.get("fips", 0) > self.limit:
            raise Forbidden(f"quota exceeded: fips {held} of {self.limit} in use")
        yield


@pytest.fixture
def fips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FloatingIps]:
    commands: list[list[str]] = []

    make_host_dry(monkeypatch, commands, recorder(
        commands, lambda argv: "1: lo    inet 127.0.0.1/8 scope host lo\n" if "show" in argv
        else ""))
    db = open_db(tmp_path)
    net = NetStore(db)
    for n in NETS:
        net.insert_network(n)
    net.insert_endpoint(Endpoint("a" * 64, "1" * 64, "web", "10.213.2.2", "02:00:00:00:00:01"))
    net.insert_endpoint(Endpoint("b" * 64, "2" * 64, "bobs", "10.213.3.2", "02:00:00:00:00:02"))
    net.insert_endpoint(Endpoint("c" * 64, "3" * 64, "inner", "10.213.4.2",
                                 "02:00:00:00:00:03"))
    reloads: list[int] = []

    async def reload() -> None:
        reloads.append(1)

    manager = FloatingIps(FipStore(db), net, Host(), reload, POOL, "fipx0")
    manager.admit = _Gate(manager, 3).admit
    yield manager


def test_allocation_is_counted_by_the_quota_and_released(fips: FloatingIps) -> None:
    got = asyncio.run(fips.allocate("alice", 2))
    assert [r.address for r in got] == ["203.0.113.17", "203.0.113.18"]
    assert [r.address for r in asyncio.run(fips.allocate("bob"))] == ["203.0.113.19"]
    with pytest.raises(Forbidden, match="quota exceeded"):
        asyncio.run(fips.allocate("alice", 2))
    assert len(fips.list("alice")) == 2  # nothing half-allocated
    asyncio.run(fips.release("203.0.113.17", "alice"))
    assert [r.address for r in asyncio.run(fips.allocate("alice", 2))] == [
        "203.0.113.17", "203.0.113.20"]
    with pytest.raises(NotFound):
        asyncio.run(fips.release("203.0.113.19", "alice"))  # bob's: as missing


def test_a_tenant_attaches_only_its_fip_to_its_container(fips: FloatingIps) -> None:
    alice = asyncio.run(fips.allocate("alice"))[0].address
    bob = asyncio.run(fips.allocate("bob"))[0].address
    with pytest.raises(NotFound):  # bob's FIP
        asyncio.run(fips.attach(bob, "1" * 64, "alice"))
    with pytest.raises(NotFound):  # bob's container
        asyncio.run(fips.attach(alice, "2" * 64, "alice"))
    with pytest.raises(InvalidArgument, match="no network that reaches the outside"):
        asyncio.run(fips.attach(alice, "3" * 64, "alice"))
    rec = asyncio.run(fips.attach(alice, "1" * 64, "alice"))
    assert (rec.container_id, rec.network_id) == ("1" * 64, "a" * 64)
    second = asyncio.run(fips.allocate("alice"))[0].address
    with pytest.raises(Conflict, match="already has floating IP"):
        asyncio.run(fips.attach(second, "1" * 64, "alice"))
    eps = {("1" * 64, "a" * 64): ("10.213.2.2", "sc-aaaaaaaaaaaa")}
    assert fips.targets(eps) == [FipTarget(alice, "10.213.2.2", "sc-aaaaaaaaaaaa")]
    assert fips.forget_container("1" * 64, "c" * 64) is False  # not the FIP's network
    assert fips.forget_container("1" * 64) is True  # removed: detached, still alice's
    assert fips.targets(eps) == [] and fips.get(alice, "alice").container_id == ""


def test_a_failed_load_leaves_the_fip_as_it_was(fips: FloatingIps) -> None:
    address = asyncio.run(fips.allocate("alice"))[0].address

    async def broken() -> None:
        raise links.LinkError("nft -f failed")

    fips._reload = broken
    with pytest.raises(links.LinkError):
        asyncio.run(fips.attach(address, "1" * 64, "alice"))
    assert not fips.get(address, "alice").attached


def test_a_reader_waits_for_the_rules_of_a_saved_change(fips: FloatingIps) -> None:
    """The record is saved before the ruleset (rendered from the records) is loaded: a reader
    that waits for `settled` sees a detach only once its rules are gone."""
    address = asyncio.run(fips.allocate("alice"))[0].address
    asyncio.run(fips.attach(address, "1" * 64, "alice"))

    async def main() -> list[str]:
        gate = asyncio.Event()
        seen: list[str] = []

        async def slow_reload() -> None:
            seen.append("loading")
            await gate.wait()
            seen.append("loaded")

        async def reader() -> None:
            await fips.settled()
            seen.append("read " + ("attached" if fips.get(address, "alice").attached
                                   else "detached"))

        fips._reload = slow_reload
        detach = asyncio.create_task(fips.detach(address, "alice"))
        await asyncio.sleep(0)  # the detach saved its record and waits for its rules
        read = asyncio.create_task(reader())
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(detach, read)
        await fips.settled()  # nothing pending: at once
        return seen

    assert asyncio.run(main()) == ["loading", "loaded", "read detached"]


def test_no_pool_says_what_the_operator_must_do(tmp_path: Path) -> None:
    db = open_db(tmp_path)

    async def reload() -> None:
        pass

    manager = FloatingIps(FipStore(db), NetStore(db), Host(), reload)
    with pytest.raises(Unsupported, match="--fip-pool"):
        asyncio.run(manager.allocate("alice"))
    with pytest.raises(InvalidArgument, match="go together"):
        FloatingIps(FipStore(db), NetStore(db), Host(), reload, POOL)


def test_attached_addresses_are_held_on_the_interface(fips: FloatingIps,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def record(argv: list[str], *, input_text: str | None = None,
               ok_codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        # a previous daemon's stale FIP is still there, and the interface's own address
        out = ("5: fipx0    inet 198.51.100.2/24 scope global fipx0\n"
               "5: fipx0    inet 203.0.113.30/32 scope global fipx0\n")
        return subprocess.CompletedProcess(list(argv), 0, out if "show" in argv else "", "")

    monkeypatch.setattr(links, "run", record)
    asyncio.run(fips.sync_addresses([FipTarget("203.0.113.17", "10.213.2.2", "sc-a")]))
    changes = [c[1:] for c in calls if "show" not in c]
    assert changes == [["addr", "del", "203.0.113.30/32", "dev", "fipx0"],
                       ["addr", "add", "203.0.113.17/32", "dev", "fipx0"]]
    calls.clear()
    asyncio.run(fips.sync_addresses([FipTarget("203.0.113.17", "10.213.2.2", "sc-a")]))
    assert calls == []  # known: nothing to run


# -- a FIP attached to a service (its VIP's backends) -----------------------------------------

SERVICE_GOLDEN = GOLDEN.with_name("nft_ruleset_fip_service.txt")
SERVICE_FIPS = [FipTarget("203.0.113.17", "10.213.2.2", "sc-aaaaaaaaaaaa"),
                FipTarget("203.0.113.19", "", "sc-aaaaaaaaaaaa", ("10.213.2.5", "10.213.2.6")),
                FipTarget("203.0.113.20", "", "sc-bbbbbbbbbbbb")]  # no live backend


def _service_ruleset() -> str:
    return nft.render(NETS, PORTS, (), SERVICE_FIPS, POOL)


def test_golden_ruleset_with_a_service_fip() -> None:
    text = _service_ruleset()
    if os.environ.get("STEELCUP_UPDATE_GOLDEN"):
        SERVICE_GOLDEN.write_text(text)
    assert text == SERVICE_GOLDEN.read_text()


def test_a_service_fip_is_balanced_inbound_only_and_refused_without_backends() -> None:
    text = _service_ruleset()
    assert _chain(text, "fips") == [
        "\t\tip daddr 203.0.113.17 dnat ip to 10.213.2.2",
        "\t\tip daddr 203.0.113.19 dnat ip to numgen random mod 2 map "
        "{ 0 : 10.213.2.5, 1 : 10.213.2.6 }"]
    assert _chain(text, "fip_in")[1] == ("\t\tct original ip daddr 203.0.113.19 ct reply ip "
                                         "saddr { 10.213.2.5, 10.213.2.6 } return")
    # replicas keep their own way out: no SNAT to the service's FIP, no flow of it outbound
    assert "snat ip to 203.0.113.19" not in text and "203.0.113.19" not in "".join(
        _chain(text, "fip_out"))
    inp = _chain(text, "input")
    refuse = inp.index('\t\tiifname != "lo" ip daddr 203.0.113.20 tcp flags & (syn | ack) == '
                       "syn reject with tcp reset")
    assert refuse < inp.index('\t\tiifname != "lo" ip daddr 203.0.113.16/28 counter drop')
    assert "203.0.113.20" not in "".join(_chain(text, "fips"))


@pytest.mark.skipif(os.geteuid() != 0, reason="loads the ruleset into a namespace: needs root")
def test_nft_accepts_the_service_fip_ruleset_in_a_scratch_namespace() -> None:
    ns = f"sct-fips-{uuid.uuid4().hex[:8]}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace")
    try:
        run = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                             input=_service_ruleset() + nft.render_delete(),
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def _vip(vid: str, network: str, tenant: str, address: str = "10.213.2.100",
         mode: str = "vip") -> VipRecord:
    return VipRecord(vid, network, "web", address, tenant, mode=mode)


def test_a_tenant_attaches_its_fip_only_to_its_services_vip(fips: FloatingIps,
                                                            tmp_path: Path) -> None:
    alice = asyncio.run(fips.allocate("alice"))[0].address
    with pytest.raises(NotFound, match="service s1"):  # bob's service's VIP
        asyncio.run(fips.attach_service(alice, "s1" * 32, _vip("v", "b" * 64, "bob"), "alice"))
    with pytest.raises(InvalidArgument, match="--internal"):
        asyncio.run(fips.attach_service(alice, "s1" * 32, _vip("v", "c" * 64, "alice"),
                                        "alice"))
    with pytest.raises(InvalidArgument, match="endpoint mode dnsrr"):
        asyncio.run(fips.attach_service(alice, "s1" * 32,
                                        _vip("v", "a" * 64, "alice", "", "dnsrr"), "alice"))
    rec = asyncio.run(fips.attach_service(alice, "s1" * 32, _vip("v1", "a" * 64, "alice"),
                                          "alice"))
    assert (rec.service_id, rec.vip_id, rec.network_id, rec.container_id) == (
        "s1" * 32, "v1", "a" * 64, "")
    with pytest.raises(Conflict, match="attached to service s1s1"):
        asyncio.run(fips.attach(alice, "1" * 64, "alice"))
    second = asyncio.run(fips.allocate("alice"))[0].address
    with pytest.raises(Conflict, match="already has floating IP"):
        asyncio.run(fips.attach_service(second, "s1" * 32, _vip("v1", "a" * 64, "alice"),
                                        "alice"))
    rendered = VipTarget("10.213.2.100", "sc-aaaaaaaaaaaa", "10.213.2.1",
                         ("10.213.2.5", "10.213.2.6"))
    assert fips.targets({}, {"v1": rendered}) == [
        FipTarget(alice, "", "sc-aaaaaaaaaaaa", ("10.213.2.5", "10.213.2.6"))]
    assert fips.targets({}, {}) == []  # its VIP gone: nothing to go to
    # persisted: a restarted daemon's manager sees the same attachment
    again = FloatingIps(FipStore(fips.store._db), fips.net, Host(), fips._reload, POOL,
                        "fipx0")
    assert again.get(alice, "alice") == rec
    # the service layer moves it to a new VIP, then the service goes
    asyncio.run(fips.follow_service("s1" * 32, _vip("v2", "a" * 64, "alice", "10.213.2.101")))
    assert fips.get(alice, "alice").vip_id == "v2"
    asyncio.run(fips.follow_service("s1" * 32, None))
    left = fips.get(alice, "alice")
    assert not left.attached and left.tenant == "alice" and left.vip_id == ""
    # detach by address works for a service's FIP too
    asyncio.run(fips.attach_service(alice, "s1" * 32, _vip("v2", "a" * 64, "alice"), "alice"))
    assert not asyncio.run(fips.detach(alice, "alice")).attached


# -- a FIP attached to a sleeping service (its VIP's wake listener) ---------------------------

SLEEPY_VIP = VipRecord("e" * 64, "a" * 64, "web", "10.213.2.100", "alice")
SLEEPY_FIP = FipRecord("203.0.113.21", "alice", service_id="s1", vip_id="e" * 64,
                       network_id="a" * 64)


def _sleepy_ruleset(live: Mapping[str, set[str]], backends: tuple[str, ...] = (),
                    udp_wake_port: int = 0) -> str:
    vip_record = VipRecord(SLEEPY_VIP.id, SLEEPY_VIP.network_id, "web", SLEEPY_VIP.address,
                           "alice", backends=backends)
    vips = vip.targets([vip_record], NETS, live, {SLEEPY_VIP.id: 41000},
                       {SLEEPY_VIP.id: udp_wake_port} if udp_wake_port else {})
    fips = fip.targets([SLEEPY_FIP], {}, {SLEEPY_VIP.id: vips[0]})
    return nft.render(NETS, PORTS, vips, fips, POOL)


def test_a_sleeping_service_fip_sends_its_tcp_to_the_wake_listener() -> None:
    """While the service's VIP has a wake listener and no live backend, the FIP's tcp is
    DNATed to that listener (from outside the bridges only), not refused; its udp still is;
    once a replica runs the FIP goes to it again and the listener is out of its rules."""
    text = _sleepy_ruleset({})
    assert _chain(text, "fips") == [
        "\t\tip daddr 203.0.113.21 meta l4proto tcp dnat ip to 10.213.2.100:41000"]
    prerouting = _chain(text, "prerouting")
    assert f'\t\tiifname != {{ "{NETS[0].bridge}", "{NETS[1].bridge}", "{NETS[2].bridge}" }} '\
           "jump fips" in prerouting
    inp = _chain(text, "input")
    assert not any("203.0.113.21" in line and "tcp flags" in line for line in inp)
    assert '\t\tiifname != "lo" ip daddr 203.0.113.21 meta l4proto udp reject' in inp
    # a container reaches the listener only as its own VIP's DNAT: its bridge's accept
    # matches the VIP's own bridge, and a FIP is never DNATed from a bridge
    assert [line for line in inp if "41000" in line] == [
        '\t\tiifname "sc-aaaaaaaaaaaa" ip daddr 10.213.2.100 tcp dport 41000 ct status dnat '
        "accept"]
    # a replica runs: the FIP is balanced to it, the listener's port is gone from its rules
    awake = _sleepy_ruleset({"a" * 64: {"10.213.2.5"}}, ("10.213.2.5",))
    assert _chain(awake, "fips") == ["\t\tip daddr 203.0.113.21 dnat ip to 10.213.2.5"]
    assert "41000" not in awake


def test_a_sleeping_service_fip_sends_its_udp_to_the_udp_wake_listener() -> None:
    """With a udp wake listener too, the FIP's udp is DNATed to it (from outside the bridges
    only), not refused; awake, the FIP goes to the replica and neither listener is named."""
    text = _sleepy_ruleset({}, udp_wake_port=41001)
    assert _chain(text, "fips") == [
        "\t\tip daddr 203.0.113.21 meta l4proto tcp dnat ip to 10.213.2.100:41000",
        "\t\tip daddr 203.0.113.21 meta l4proto udp dnat ip to 10.213.2.100:41001"]
    inp = _chain(text, "input")
    assert not any("203.0.113.21" in line and ("udp" in line or "tcp flags" in line)
                   for line in inp)
    # a container reaches the listeners only as its VIP's own DNAT, on the VIP's bridge
    assert [line for line in inp if "41001" in line] == [
        '\t\tiifname "sc-aaaaaaaaaaaa" ip daddr 10.213.2.100 udp dport 41001 ct status dnat '
        "accept"]
    awake = _sleepy_ruleset({"a" * 64: {"10.213.2.5"}}, ("10.213.2.5",), udp_wake_port=41001)
    assert _chain(awake, "fips") == ["\t\tip daddr 203.0.113.21 dnat ip to 10.213.2.5"]
    assert "41001" not in awake


def test_a_service_fip_without_a_wake_listener_is_refused_as_before() -> None:
    vips = vip.targets([SLEEPY_VIP], NETS, {})
    [target] = fip.targets([SLEEPY_FIP], {}, {SLEEPY_VIP.id: vips[0]})
    assert not target.waking and target.wake == ""
    text = nft.render(NETS, PORTS, vips, [target], POOL)
    assert _chain(text, "fips") == []
    assert ('\t\tiifname != "lo" ip daddr 203.0.113.21 tcp flags & (syn | ack) == syn '
            "reject with tcp reset") in _chain(text, "input")


@pytest.mark.skipif(os.geteuid() != 0, reason="loads the ruleset into a namespace: needs root")
def test_nft_accepts_the_sleeping_service_fip_ruleset_in_a_scratch_namespace() -> None:
    ns = f"sct-fips-{uuid.uuid4().hex[:8]}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace")
    try:
        run = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                             input=_sleepy_ruleset({}, udp_wake_port=41001) + nft.render_delete(),
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
