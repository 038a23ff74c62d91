"""Pure render of the anti-spoofing table (`bridge steelcup_guard`): per container tap, what the
guest may send and what the bridge may deliver to it. Loaded in the same `nft -f` transaction as
the `inet steelcup` table (net/nft.py), so both change together or not at all.

A guest is root in its VM and may put anything on its virtio NIC. On its own tap (the bridge
port) it may send only:
- frames whose source MAC is the MAC steelcup gave that NIC;
- ARP whose sender hardware and protocol addresses are that MAC and the NIC's IPv4 address (so
  it cannot answer ARP for a neighbour's address nor poison a neighbour's cache);
- IPv4 whose source is the NIC's address; no other ethertype (IPv6, VLAN tags, ...).
Anything else is dropped and counted per tap (`nft list table bridge steelcup_guard`).

The guards are rendered for every endpoint (a container's address on a network, kept while it
exists): a tap's rules are loaded before the tap is made and stay across stop and start. A
`sct*` tap of no endpoint (a leftover) sends nothing.

Towards a tap, unicast frames for another MAC are dropped: the bridge floods unicast to unknown
MACs (after its forwarding entry ages out) to every port, and a guest in promiscuous mode would
read a neighbour's traffic. Broadcast and multicast still reach every port of the bridge, as on
any LAN.

The maps `goto` the per-tap chains: a frame a tap's chain does not drop ends there (the base
chain's policy accepts it) instead of returning to the catch-all drop of unknown taps.

Runs at bridge prerouting priority -300, before br_netfilter hands the frame to the IP hooks
(and conntrack): a forged packet never creates a connection-tracking entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from steelcup.net import links

TABLE = "steelcup_guard"
GROUP_BIT = "01:00:00:00:00:00"  # the I/G bit of a MAC: set for broadcast and multicast
ZERO_MAC = "00:00:00:00:00:00"


@dataclass(frozen=True)
class TapGuard:
    """A container NIC as the host sees it: its tap and the only addresses it may use."""

    tap: str
    mac: str
    address: str


def delete_lines() -> list[str]:
    return [f"table bridge {TABLE} {{}}", f"delete table bridge {TABLE}"]


def render(guards: Sequence[TapGuard], tap_prefix: str) -> str:
    """The `nft -f` input (delete, then recreate) for the taps `guards` (sorted: stable
    output); taps named `tap_prefix*` that are not among them send nothing."""
    taps = sorted(guards, key=lambda g: g.tap)
    for g in taps:
        links.check_ifname(g.tap)
    lines = [*delete_lines(), f"table bridge {TABLE} {{"]
    out = lines.append
    out("\tchain from_guests {")
    out("\t\ttype filter hook prerouting priority -300; policy accept;")
    if taps:
        out("\t\tiifname vmap { " + ", ".join(f'"{g.tap}" : goto from_{g.tap}' for g in taps)
            + " }")
    out(f'\t\tiifname "{tap_prefix}*" counter drop')
    out("\t}")
    out("\tchain to_guests {")
    out("\t\ttype filter hook postrouting priority 0; policy accept;")
    if taps:
        out("\t\toifname vmap { " + ", ".join(f'"{g.tap}" : goto to_{g.tap}' for g in taps)
            + " }")
    out("\t}")
    for g in taps:
        out(f"\tchain from_{g.tap} {{")
        out(f"\t\tether saddr != {g.mac} counter drop")
        out(f"\t\tether type arp arp saddr ether != {g.mac} counter drop")
        out(f"\t\tether type arp arp saddr ip != {g.address} counter drop")
        out(f"\t\tether type ip ip saddr != {g.address} counter drop")
        out("\t\tether type != { ip, arp } counter drop")
        out("\t}")
        out(f"\tchain to_{g.tap} {{")
        out(f"\t\tether daddr != {g.mac} ether daddr & {GROUP_BIT} == {ZERO_MAC} counter drop")
        out("\t}")
    out("}")
    return "\n".join(lines) + "\n"
