"""What the network and volume layers ask of a guest: NET_CONFIG and MOUNT requests, built
from their plans and sent through `GuestClient` (docs/guest-protocol.md, ops 17 and 18)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from steelcup.guest import protocol as p
from steelcup.guest.client import REQUEST_TIMEOUT_S, GuestClient
from steelcup.guest.protocol import RootfsCache, Tag


@dataclass(frozen=True)
class GuestNic:
    """What the guest needs to configure one NIC (empty mac and ifname: loopback only)."""

    mac: str = ""
    ifname: str = ""
    address: str = ""
    prefix: int = 0
    gateway: str = ""
    mtu: int = 0
    # Configure, then take the NIC down without its address: a pooled VM's warm-up runs the
    # path once so that the container's own NET_CONFIG finds it translated (TCG).
    rehearse: bool = False

    def fields(self) -> list[tuple[Tag, p.FieldValue]]:
        out: list[tuple[Tag, p.FieldValue]] = []
        for tag, value in (
            (Tag.MAC, self.mac),
            (Tag.IFNAME, self.ifname),
            (Tag.ADDRESS, self.address),
            (Tag.GATEWAY, self.gateway),
        ):
            if value:
                out.append((tag, value))
        if self.address:
            out.append((Tag.PREFIX, self.prefix))
        if self.mtu:
            out.append((Tag.MTU, self.mtu))
        if self.rehearse:
            out.append((Tag.REHEARSE, 1))
        return out


@dataclass(frozen=True)
class GuestMount:
    """One MOUNT request on `target`: a 9p share (`source` = tag), a tmpfs, or (`bind`) the
    file or directory `subdir` of the share `source`, which the guest mounts once for all."""

    target: str
    fstype: str = "9p"
    source: str = ""
    options: str = ""
    readonly: bool = False
    container: int = 0  # 0: the VM's first container; n > 0: pod member n
    subdir: str = ""  # `bind`: the path inside the share `source`
    # 9p only: copied into a tmpfs at `target` and the share unmounted (a checkpointable
    # container's secrets: no 9p mount may stay for its VM to be saved)
    copied: bool = False

    def fields(self) -> list[tuple[Tag, p.FieldValue]]:
        out: list[tuple[Tag, p.FieldValue]] = []
        if self.source:
            out.append((Tag.SOURCE, self.source))
        if self.subdir:
            out.append((Tag.SUBDIR, self.subdir))
        out += [(Tag.FSTYPE, self.fstype), (Tag.TARGET, self.target)]
        if self.options:
            out.append((Tag.OPTIONS, self.options))
        out.append((Tag.READONLY, int(self.readonly)))
        if self.copied:
            out.append((Tag.CACHE, int(RootfsCache.RAM)))
        if self.container:
            out.append((Tag.CONTAINER, self.container))
        return out


async def net_config(
    client: GuestClient, nic: GuestNic, *, timeout_s: float = REQUEST_TIMEOUT_S
) -> None:
    """Configure one NIC (or only loopback). GuestRequestError if the guest refuses."""
    await client.net_config(nic.fields(), timeout_s=timeout_s)


async def mount(
    client: GuestClient, m: GuestMount, *, timeout_s: float = REQUEST_TIMEOUT_S
) -> None:
    """Mount a share or tmpfs inside the container root (after SETUP_ROOT)."""
    await client.mount(m.fields(), timeout_s=timeout_s)


async def configure(
    client: GuestClient,
    nics: Sequence[GuestNic],
    mounts: Sequence[GuestMount],
    *,
    timeout_s: float = REQUEST_TIMEOUT_S,
) -> None:
    """After SETUP_ROOT, before START: every NIC, then the mounts in order (parents first).
    Loopback needs nothing: the guest brings it up at boot."""
    for nic in nics:
        await net_config(client, nic, timeout_s=timeout_s)
    for m in mounts:
        await mount(client, m, timeout_s=timeout_s)
