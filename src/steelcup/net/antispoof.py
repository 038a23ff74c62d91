"""Pure render of the anti-spoofing table (`bridge steelcup_guard`): per container tap, what the
guest may send and what the bridge may deliver to it. Loaded in the same `nft -f` transaction as
the `inet steelcup` table (net/nft.py), so both change together or not at all.

A guest is root in its VM and may put anything on its virtio NIC. On its own tap (the bridge
port) it may send only:
- frames whose source MAC is the MAC steelcup gave that NIC;
- ARP whose sender hardware and protocol addresses are that MAC and the NIC's IPv4 address (so
  it cannot answer ARP for a neighbour's address nor poison a neighbour's cache);
- IPv4 whose source is the NIC's address, to anything but 127.0.0.0/8 (the bridges route
  loopback addresses for the host's connections to published ports: net/nft.py); no other
  ethertype (IPv6, VLAN tags, ...).
Anything else is dropped and counted (`nft list table bridge steelcup_guard`, a counter per
rule).

Towards a tap, the bridge delivers:
- no unicast for another MAC: the bridge floods unicast to unknown MACs (after its forwarding
  entry ages out) to every port, and a guest in promiscuous mode would read a neighbour's
  traffic;
- no ARP request for another address: only the address's owner may answer it (above), and
  every frame a guest takes in wakes its vCPU, which under TCG costs milliseconds of host CPU.
  A starting container announces its address (a gratuitous ARP); flooded to every VM of a
  network of 150, that was ~0.4 s of host CPU per start (docs/benchmarks.md).
Other broadcast and multicast still reach every port of the bridge, as on any LAN.

The guards are rendered for every endpoint (a container's address on a network, kept while it
exists): a tap's guard is loaded before the tap is made and stays across stop and start. What
is per tap lives in three sets (tap . MAC, tap . address, tap . MAC . address) that a few
rules look up, so the table loads as fast with 400 containers as with 2 (a chain per tap made
every container's start load ~35 ms more per 150 taps). A `sct*` tap of no endpoint is in no
set: it sends nothing, and is sent no unicast and no ARP request.

A new endpoint's guard is added to the loaded sets (`update`: ~3 ms) instead of reloading the
table, whose base chains' hooks make every reload wait for the kernel's RCU grace periods
(12-40 ms here). Deleting an element waits for one too (~20 ms), so the guards of endpoints
that are gone stay until the next full load (at most `STALE_MAX` of them): their taps no
longer exist, and a tap name comes back only with its container and network, which makes
that update a full load. A stale guard whose tap still runs (a running container
disconnected with `--force`) is never left: that, too, is a full load.

Runs at bridge prerouting priority -300, before br_netfilter hands the frame to the IP hooks
(and conntrack): a forged packet never creates a connection-tracking entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass

from steelcup.net import links

TABLE = "steelcup_guard"
STALE_MAX = 128  # guards of gone endpoints left loaded before a full load drops them
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


def _set(name: str, kind: str, elements: Sequence[str]) -> str:
    listed = f" elements = {{ {', '.join(elements)} }};" if elements else ""
    return f"\tset {name} {{ type {kind};{listed} }}"


def _macs(guards: Iterable[TapGuard]) -> list[str]:
    return [f'"{g.tap}" . {g.mac}' for g in guards]


def _addresses(guards: Iterable[TapGuard]) -> list[str]:
    return [f'"{g.tap}" . {g.address}' for g in guards]


def _arp_senders(guards: Iterable[TapGuard]) -> list[str]:
    return [f'"{g.tap}" . {g.mac} . {g.address}' for g in guards]


def update(loaded: Set[TapGuard], wanted: Set[TapGuard], live_taps: Set[str]) -> str | None:
    """The `nft -f` input that brings the loaded guards to `wanted` by adding elements ("":
    nothing to add), or None when the table must be loaded whole: a stale guard's tap runs
    or comes back in `wanted`, or too many stale guards piled up."""
    stale = loaded - wanted
    if (len(stale) > STALE_MAX or any(g.tap in live_taps for g in stale)
            or {g.tap for g in stale} & {g.tap for g in wanted}):
        return None
    new = sorted(wanted - loaded, key=lambda g: g.tap)
    for g in new:
        links.check_ifname(g.tap)
    return "".join(f"add element bridge {TABLE} {name} {{ {', '.join(elements)} }}\n"
                   for name, elements in (("macs", _macs(new)),
                                          ("addresses", _addresses(new)),
                                          ("arp_senders", _arp_senders(new))) if elements)


def render(guards: Iterable[TapGuard], tap_prefix: str) -> str:
    """The `nft -f` input (delete, then recreate) for the taps `guards` (sorted: stable
    output); taps named `tap_prefix*` that are not among them send nothing."""
    taps = sorted(guards, key=lambda g: g.tap)
    for g in taps:
        links.check_ifname(g.tap)
    ours = f'"{tap_prefix}*"'
    return "\n".join([
        *delete_lines(),
        f"table bridge {TABLE} {{",
        _set("macs", "ifname . ether_addr", _macs(taps)),
        _set("addresses", "ifname . ipv4_addr", _addresses(taps)),
        _set("arp_senders", "ifname . ether_addr . ipv4_addr", _arp_senders(taps)),
        "\tchain from_guests {",
        "\t\ttype filter hook prerouting priority -300; policy accept;",
        f"\t\tiifname != {ours} accept",
        "\t\tiifname . ether saddr != @macs counter drop",
        "\t\tether type arp iifname . arp saddr ether . arp saddr ip != @arp_senders "
        "counter drop",
        "\t\tether type ip iifname . ip saddr != @addresses counter drop",
        "\t\tether type ip ip daddr 127.0.0.0/8 counter drop",
        "\t\tether type != { ip, arp } counter drop",
        "\t}",
        "\tchain to_guests {",
        "\t\ttype filter hook postrouting priority 0; policy accept;",
        f"\t\toifname != {ours} accept",
        f"\t\tether daddr & {GROUP_BIT} == {ZERO_MAC} oifname . ether daddr != @macs "
        "counter drop",
        "\t\tether type arp arp operation request oifname . arp daddr ip != @addresses "
        "counter drop",
        "\t}",
        "}",
    ]) + "\n"
