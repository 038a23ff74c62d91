"""The nftables ruleset renders to the golden text (tests/golden/nft_ruleset.txt)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from steelcup.net import nft
from steelcup.net.links import LinkError
from steelcup.net.model import NetworkRecord

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "nft_ruleset.txt"

NETS = [
    NetworkRecord("a" * 64, "bridge", "10.213.0.0/24", "10.213.0.1", "steelcup0"),
    NetworkRecord("b" * 64, "back", "10.213.1.0/24", "10.213.1.1", "sc-bbbbbbbbbbbb",
                  internal=True),
]
PORTS = [
    nft.PublishedPort("", 8080, "10.213.0.2", 80),
    nft.PublishedPort("192.0.2.5", 5353, "10.213.0.2", 53, "udp"),
]


def test_golden_ruleset() -> None:
    text = nft.render(list(reversed(NETS)), PORTS)  # input order does not matter
    if os.environ.get("STEELCUP_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_empty_ruleset_still_replaces_the_table() -> None:
    text = nft.render([])
    assert text.startswith("table ip steelcup {}\ndelete table ip steelcup\n"
                           "table inet steelcup {}\ndelete table inet steelcup\n")
    assert "masquerade" not in text and "dnat" not in text


def test_bad_bridge_name_rejected() -> None:
    bad = NetworkRecord("c" * 64, "x", "10.1.0.0/24", "10.1.0.1", 'br"; drop')
    with pytest.raises(LinkError):
        nft.render([bad])


def test_the_table_filters_ipv6_too() -> None:
    """Issue 10 #4: an `ip` table let containers reach host services on `::` over a bridge's
    link-local address; the `inet` table's final drops match both families."""
    text = nft.render(NETS)
    assert "table inet steelcup {" in text and "table ip steelcup {\n" not in text
    assert '\t\tiifname "steelcup0" drop' in text  # in the input chain: any family


@pytest.mark.skipif(os.geteuid() != 0, reason="loads the ruleset into a namespace: needs root")
def test_nft_accepts_the_ruleset_in_a_scratch_namespace() -> None:
    import subprocess
    import uuid

    ns = f"sct-nft-{uuid.uuid4().hex[:8]}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace")
    try:
        run = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                             input=nft.render(NETS, PORTS) + nft.render_delete(),
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


# Two tenants' networks: alice's default and appnet, bob's default and his own appnet.
TENANT_NETS = [
    NetworkRecord("a" * 64, "bridge", "10.213.0.0/24", "10.213.0.1", "steelcup0"),
    NetworkRecord("1" * 64, "bridge", "10.213.1.0/24", "10.213.1.1", "sc-111111111111",
                  tenant="alice"),
    NetworkRecord("2" * 64, "appnet", "10.213.2.0/24", "10.213.2.1", "sc-222222222222",
                  tenant="alice"),
    NetworkRecord("3" * 64, "bridge", "10.213.3.0/24", "10.213.3.1", "sc-333333333333",
                  tenant="bob"),
    NetworkRecord("4" * 64, "appnet", "10.213.4.0/24", "10.213.4.1", "sc-444444444444",
                  tenant="bob", internal=True),
]


def _forward(text: str) -> list[str]:
    chain = text.split("\tchain forward {\n", 1)[1].split("\t}\n", 1)[0]
    return [line.strip() for line in chain.splitlines()][1:]  # after the hook line


def test_one_tenant_alone_gets_no_tenant_rules() -> None:
    for tenant in ("", "alice"):
        nets = [NetworkRecord(n.id, n.name, n.subnet, n.gateway, n.bridge, tenant=tenant)
                for n in TENANT_NETS]
        assert "counter drop" not in "\n".join(_forward(nft.render(nets)))


def test_tenants_bridges_and_subnets_are_cut_off_from_each_other_first() -> None:
    rules = _forward(nft.render(TENANT_NETS, PORTS))
    alice = '{ "sc-111111111111", "sc-222222222222" }'
    bob = '{ "sc-333333333333", "sc-444444444444" }'
    assert rules[:6] == [
        # the operator's "" is a tenant like the others here
        'iifname { "steelcup0" } oifname { "sc-111111111111", "sc-222222222222", '
        '"sc-333333333333", "sc-444444444444" } counter drop',
        "iifname { \"steelcup0\" } ip daddr { 10.213.1.0/24, 10.213.2.0/24, 10.213.3.0/24, "
        "10.213.4.0/24 } counter drop",
        f'iifname {alice} oifname {{ "sc-333333333333", "sc-444444444444", "steelcup0" }} '
        "counter drop",
        f"iifname {alice} ip daddr {{ 10.213.3.0/24, 10.213.4.0/24, 10.213.0.0/24 }} "
        "counter drop",
        f'iifname {bob} oifname {{ "sc-111111111111", "sc-222222222222", "steelcup0" }} '
        "counter drop",
        f"iifname {bob} ip daddr {{ 10.213.1.0/24, 10.213.2.0/24, 10.213.0.0/24 }} "
        "counter drop",
    ]
    # before anything that accepts, conntrack's established/related included
    assert rules[6].endswith("ct state established,related accept")
    assert not any("accept" in rule for rule in rules[:6])


def test_a_published_port_of_another_tenant_is_behind_the_subnet_rule() -> None:
    """A DNATed packet has the container's address: from alice's bridges, bob's published
    port's internal address is one of the subnets dropped for her."""
    bob_port = nft.PublishedPort("", 8080, "10.213.3.7", 80)
    text = nft.render(TENANT_NETS, [bob_port])
    assert "dnat ip to 10.213.3.7:80" in text
    alice_rule = next(r for r in _forward(text)
                      if r.startswith('iifname { "sc-111111111111"') and "ip daddr" in r)
    assert "10.213.3.0/24" in alice_rule


@pytest.mark.skipif(os.geteuid() != 0, reason="loads the ruleset into a namespace: needs root")
def test_nft_accepts_the_tenant_ruleset_in_a_scratch_namespace() -> None:
    import subprocess
    import uuid

    ns = f"sct-nft-{uuid.uuid4().hex[:8]}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace")
    try:
        run = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                             input=nft.render(TENANT_NETS, PORTS), capture_output=True,
                             text=True)
        assert run.returncode == 0, run.stderr
        listed = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "chain", "inet",
                                 nft.TABLE, "forward"], capture_output=True, text=True)
        assert listed.stdout.count("counter packets 0 bytes 0 drop") == 6, listed.stdout
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
