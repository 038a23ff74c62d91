"""The virtual IPs' share of the nftables ruleset renders to the golden text
(tests/golden/nft_ruleset_vips.txt), from records narrowed to live backends, and keeps the
tenant rules first."""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from steelcup.net import nft, vip
from steelcup.net.model import NetworkRecord, PortMapping, VipRecord

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "nft_ruleset_vips.txt"

NETS = [
    NetworkRecord("a" * 64, "bridge", "10.213.0.0/24", "10.213.0.1", "steelcup0"),
    NetworkRecord("b" * 64, "back", "10.213.1.0/24", "10.213.1.1", "sc-bbbbbbbbbbbb",
                  internal=True),
]
VIPS = [
    # three live backends (one more that is not running), two published ports
    VipRecord("1" * 64, "a" * 64, "web", "10.213.0.100",
              backends=("10.213.0.10", "10.213.0.9", "10.213.0.3", "10.213.0.7"),
              ports=(PortMapping(80, "tcp", "", 8080), PortMapping(53, "udp", "192.0.2.5", 5353))),
    # one backend: a plain DNAT, its published port too
    VipRecord("2" * 64, "a" * 64, "api", "10.213.0.101", backends=("10.213.0.3",),
              ports=(PortMapping(9000, "tcp", "", 9000),)),
    # no live backend: refused, its published port has no DNAT
    VipRecord("3" * 64, "b" * 64, "db", "10.213.1.100", backends=("10.213.1.5",),
              ports=(PortMapping(5432, "tcp", "", 5432),)),
]
LIVE = {"a" * 64: {"10.213.0.3", "10.213.0.9", "10.213.0.10"}, "b" * 64: {"10.213.1.6"}}
PORTS = [nft.PublishedPort("", 8081, "10.213.0.2", 80)]


def _ruleset() -> str:
    return nft.render(list(reversed(NETS)), PORTS, vip.targets(VIPS, NETS, LIVE))


def test_golden_ruleset_with_vips() -> None:
    text = _ruleset()
    if os.environ.get("STEELCUP_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_targets_keep_live_backends_only_in_address_order() -> None:
    by_address = {t.address: t for t in vip.targets(VIPS, NETS, LIVE)}
    # numeric order (.9 before .10), the stopped .7 left out
    assert by_address["10.213.0.100"].backends == ("10.213.0.3", "10.213.0.9", "10.213.0.10")
    assert by_address["10.213.1.100"].backends == ()
    assert by_address["10.213.1.100"].bridge == "sc-bbbbbbbbbbbb"
    assert by_address["10.213.1.100"].gateway == "10.213.1.1"
    assert [t.backends for t in vip.targets(VIPS, NETS, {})] == [(), (), ()]
    dnsrr = VipRecord("4" * 64, "a" * 64, "db", "", backends=("10.213.0.3",), mode="dnsrr")
    assert vip.targets([dnsrr], NETS, LIVE) == []  # a name only: nothing to balance


def test_a_corrupt_address_never_reaches_the_ruleset() -> None:
    bad = VipRecord("9" * 64, "a" * 64, "x", '10.213.0.5; flush ruleset')
    with pytest.raises(ValueError):
        vip.targets([bad], NETS, LIVE)


def test_a_vip_needs_its_network_in_the_render() -> None:
    targets = vip.targets(VIPS, NETS, LIVE)
    with pytest.raises(ValueError, match="no network"):
        nft.render(NETS[:1], (), targets)


def test_no_vips_no_vip_rules() -> None:
    text = nft.render(NETS, PORTS)
    assert "vips" not in text and "snat" not in text and "reject" not in text


def test_balancing_is_per_connection_and_covers_every_backend() -> None:
    text = _ruleset()
    assert ("ip daddr 10.213.0.100 dnat ip to numgen random mod 3 map { 0 : 10.213.0.3, "
            "1 : 10.213.0.9, 2 : 10.213.0.10 }") in text
    assert "ip daddr 10.213.0.101 dnat ip to 10.213.0.3\n" in text
    # the empty one is refused, from its own bridge (before that bridge's drop) and from
    # anywhere else (the host's loopback proxy), and has no DNAT
    assert "10.213.1.100 dnat" not in text and "dport 5432" not in text
    inp = text.split("\tchain input {\n", 1)[1].split("\t}\n", 1)[0].splitlines()
    own = inp.index('\t\tiifname "sc-bbbbbbbbbbbb" ip daddr { 10.213.1.100 } tcp flags & '
                    "(syn | ack) == syn reject with tcp reset")
    assert inp[own + 2] == '\t\tiifname "sc-bbbbbbbbbbbb" drop'
    assert inp[-1] == "\t\tip daddr { 10.213.1.100 } meta l4proto udp ct state new reject"


def test_tenant_rules_stay_first_and_cover_a_vip() -> None:
    """A VIP lies in its network's subnet: another tenant's connection to it, DNATed to a
    backend of that subnet, meets the tenant rule `ip daddr {others' subnets} counter drop`
    before anything that accepts."""
    nets = [NetworkRecord("a" * 64, "appnet", "10.213.2.0/24", "10.213.2.1",
                          "sc-aaaaaaaaaaaa", tenant="alice"),
            NetworkRecord("b" * 64, "appnet", "10.213.3.0/24", "10.213.3.1",
                          "sc-bbbbbbbbbbbb", tenant="bob")]
    alice_vip = VipRecord("1" * 64, "a" * 64, "web", "10.213.2.100", "alice",
                          backends=("10.213.2.2",))
    text = nft.render(nets, (), vip.targets([alice_vip], nets, {"a" * 64: {"10.213.2.2"}}))
    forward = text.split("\tchain forward {\n", 1)[1].split("\t}\n", 1)[0].splitlines()[1:]
    assert forward[:4] == [
        '\t\tiifname { "sc-aaaaaaaaaaaa" } oifname { "sc-bbbbbbbbbbbb" } counter drop',
        "\t\tiifname { \"sc-aaaaaaaaaaaa\" } ip daddr { 10.213.3.0/24 } counter drop",
        '\t\tiifname { "sc-bbbbbbbbbbbb" } oifname { "sc-aaaaaaaaaaaa" } counter drop',
        "\t\tiifname { \"sc-bbbbbbbbbbbb\" } ip daddr { 10.213.2.0/24 } counter drop",
    ]
    assert "10.213.2.100" not in "\n".join(forward)  # nothing lets a VIP through


@pytest.mark.skipif(os.geteuid() != 0, reason="loads the ruleset into a namespace: needs root")
def test_nft_accepts_the_vip_ruleset_in_a_scratch_namespace() -> None:
    ns = f"sct-vip-{uuid.uuid4().hex[:8]}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace")
    try:
        run = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                             input=_ruleset() + nft.render_delete(), capture_output=True,
                             text=True)
        assert run.returncode == 0, run.stderr
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def test_a_waking_vip_sends_its_tcp_to_the_wake_listener() -> None:
    """A VIP without live backends but with a wake port: tcp to any of its ports, and to its
    published tcp ports, is DNATed to the host's listener on its address; its containers may
    reach that listener only as DNATed; udp is still refused; with backends the wake port
    changes nothing."""
    asleep = [VipRecord("3" * 64, "b" * 64, "db", "10.213.1.100",
                        ports=(PortMapping(5432, "tcp", "", 5432),
                               PortMapping(53, "udp", "", 5353)))]
    text = nft.render(NETS, [], vip.targets(asleep, NETS, LIVE, {"3" * 64: 41000}))
    assert "ip daddr 10.213.1.100 meta l4proto tcp dnat ip to 10.213.1.100:41000" in text
    assert "tcp dport 5432 dnat ip to 10.213.1.100:41000" in text
    assert "udp dport 5353" not in text  # no DNAT for udp: nothing listens for it
    assert ('iifname "sc-bbbbbbbbbbbb" ip daddr 10.213.1.100 tcp dport 41000 '
            "ct status dnat accept") in text
    # the accept comes before the bridge's drop; tcp is not refused, udp is
    input_chain = text.split("chain input {")[1].split("\n\t}")[0]
    assert input_chain.index("tcp dport 41000") < input_chain.index(
        'iifname "sc-bbbbbbbbbbbb" drop')
    assert "10.213.1.100 } tcp flags" not in text
    assert "ip daddr { 10.213.1.100 } meta l4proto udp ct state new reject" in text
    # without the wake port: refused as before
    refused = nft.render(NETS, [], vip.targets(asleep, NETS, LIVE))
    assert "41000" not in refused and "10.213.1.100 } tcp flags" in refused
    # with a live backend the VIP balances as usual
    awake = [replace(asleep[0], backends=("10.213.1.6",))]
    text = nft.render(NETS, [], vip.targets(awake, NETS, LIVE, {"3" * 64: 41000}))
    assert "41000" not in text
    assert "tcp dport 5432 dnat ip to 10.213.1.6:5432" in text


def test_a_waking_vip_with_a_udp_listener_sends_its_udp_there_too() -> None:
    """With a udp wake port as well, the VIP's udp (any port) and its published udp ports go
    to the udp listener, its containers reach it only as DNATed, and its udp is no longer
    refused; a live backend takes both back."""
    asleep = [VipRecord("3" * 64, "b" * 64, "db", "10.213.1.100",
                        ports=(PortMapping(5432, "tcp", "", 5432),
                               PortMapping(53, "udp", "", 5353)))]
    text = nft.render(NETS, [], vip.targets(asleep, NETS, LIVE, {"3" * 64: 41000},
                                            {"3" * 64: 42000}))
    assert _chain_lines(text, "vips") == [
        "\t\tip daddr 10.213.1.100 meta l4proto tcp dnat ip to 10.213.1.100:41000",
        "\t\tip daddr 10.213.1.100 meta l4proto udp dnat ip to 10.213.1.100:42000"]
    assert "udp dport 5353 dnat ip to 10.213.1.100:42000" in text
    input_chain = _chain_lines(text, "input")
    accept = ('\t\tiifname "sc-bbbbbbbbbbbb" ip daddr 10.213.1.100 udp dport 42000 '
              "ct status dnat accept")
    assert input_chain.index(accept) < input_chain.index('\t\tiifname "sc-bbbbbbbbbbbb" drop')
    assert not any("udp reject" in line for line in input_chain)
    # a udp port with no tcp listener: tcp refused, udp held
    udp_only = vip.targets(asleep, NETS, LIVE, None, {"3" * 64: 42000})
    assert udp_only[0].udp_waking and not udp_only[0].waking
    text = nft.render(NETS, [], udp_only)
    assert "10.213.1.100 } tcp flags" in text and "udp reject" not in text
    # with a live backend: balanced as usual, both listeners out of the rules
    awake = [replace(asleep[0], backends=("10.213.1.6",))]
    text = nft.render(NETS, [], vip.targets(awake, NETS, LIVE, {"3" * 64: 41000},
                                            {"3" * 64: 42000}))
    assert "41000" not in text and "42000" not in text
    assert "udp dport 5353 dnat ip to 10.213.1.6:53" in text


def _chain_lines(text: str, name: str) -> list[str]:
    return text.split(f"\tchain {name} {{\n", 1)[1].split("\t}\n", 1)[0].splitlines()


def test_nft_accepts_a_waking_vip_ruleset_in_a_scratch_namespace() -> None:
    ns = f"sct-vip-{uuid.uuid4().hex[:8]}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace")
    waking = vip.targets(VIPS, NETS, LIVE, {"3" * 64: 41000}, {"3" * 64: 42000})
    assert [t.waking for t in waking] == [False, False, True]
    assert [t.udp_waking for t in waking] == [False, False, True]
    try:
        run = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                             input=nft.render(NETS, PORTS, waking) + nft.render_delete(),
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
