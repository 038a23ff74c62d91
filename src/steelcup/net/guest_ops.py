"""Host side of the guest protocol's NET_CONFIG (17) and MOUNT (18) requests.

Lives here until `steelcup.guest.protocol`/`client` carry these opcodes and tags (see
docs/guest-protocol.md); then `GuestClient.net_config`/`mount` replace these helpers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import cast

from steelcup.guest import protocol as p
from steelcup.guest.client import REQUEST_TIMEOUT_S, GuestClient
from steelcup.guest.protocol import Op, Tag


class NetOp(IntEnum):
    NET_CONFIG = 17
    MOUNT = 18


class NetTag(IntEnum):
    MAC = 25
    ADDRESS = 26
    PREFIX = 27
    GATEWAY = 28
    MTU = 29
    IFNAME = 30
    TARGET = 31
    FSTYPE = 32
    OPTIONS = 33


@dataclass(frozen=True)
class GuestNic:
    """What the guest needs to configure one NIC (empty mac and ifname: loopback only)."""

    mac: str = ""
    ifname: str = ""
    address: str = ""
    prefix: int = 0
    gateway: str = ""
    mtu: int = 0

    def fields(self) -> list[tuple[Tag | int, p.FieldValue]]:
        out: list[tuple[Tag | int, p.FieldValue]] = []
        for tag, value in (
            (NetTag.MAC, self.mac),
            (NetTag.IFNAME, self.ifname),
            (NetTag.ADDRESS, self.address),
            (NetTag.GATEWAY, self.gateway),
        ):
            if value:
                out.append((tag, value))
        if self.address:
            out.append((NetTag.PREFIX, self.prefix))
        if self.mtu:
            out.append((NetTag.MTU, self.mtu))
        return out


@dataclass(frozen=True)
class GuestMount:
    """One MOUNT request: a 9p share (`source` = tag) or a tmpfs on `target`."""

    target: str
    fstype: str = "9p"
    source: str = ""
    options: str = ""
    readonly: bool = False

    def fields(self) -> list[tuple[Tag | int, p.FieldValue]]:
        out: list[tuple[Tag | int, p.FieldValue]] = []
        if self.source:
            out.append((Tag.SOURCE, self.source))
        out += [(NetTag.FSTYPE, self.fstype), (NetTag.TARGET, self.target)]
        if self.options:
            out.append((NetTag.OPTIONS, self.options))
        out.append((Tag.READONLY, int(self.readonly)))
        return out


async def net_config(
    client: GuestClient, nic: GuestNic, *, timeout_s: float = REQUEST_TIMEOUT_S
) -> None:
    """Configure one NIC (or only loopback). GuestRequestError if the guest refuses."""
    # _simple only uses `.name` and the int value of the opcode.
    await client._simple(cast(Op, NetOp.NET_CONFIG), nic.fields(), timeout_s)  # type: ignore[arg-type]


async def mount(
    client: GuestClient, m: GuestMount, *, timeout_s: float = REQUEST_TIMEOUT_S
) -> None:
    """Mount a share or tmpfs inside the container root (after SETUP_ROOT)."""
    await client._simple(cast(Op, NetOp.MOUNT), m.fields(), timeout_s)  # type: ignore[arg-type]


async def configure(
    client: GuestClient,
    nics: Sequence[GuestNic],
    mounts: Sequence[GuestMount],
    *,
    timeout_s: float = REQUEST_TIMEOUT_S,
) -> None:
    """After SETUP_ROOT, before START: every NIC (loopback only when there is none), then the
    mounts in order (parents first)."""
    for nic in nics or [GuestNic()]:
        await net_config(client, nic, timeout_s=timeout_s)
    for m in mounts:
        await mount(client, m, timeout_s=timeout_s)
