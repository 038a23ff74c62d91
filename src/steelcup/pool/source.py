"""The VM source protocol (Kata-factory style): `acquire(request) -> Machine`, `close()`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from steelcup.errors import SteelcupError
from steelcup.vm.machine import Machine
from steelcup.vm.qemu_args import NicSpec, Share

__all__ = ["Incompatible", "NicSpec", "Share", "TapPlace", "VmRequest", "VmSource"]


class TapPlace(NamedTuple):
    """The bridge and MTU of a NIC's tap on the host (the network layer's plan for it), and
    the NIC's IPv4 address ("": none known), whose neighbour entry on the bridge goes as the
    tap is placed."""

    bridge: str
    mtu: int
    address: str = ""


@dataclass(frozen=True)
class VmRequest:
    """What a container needs from its VM."""

    mem_mib: int
    cpus: int
    shares: tuple[Share, ...] = ()
    # No memory limit was asked: the VM starts at `mem_mib` and grows on demand, up to the
    # template's RAM, when the guest runs out (a pooled VM's balloon deflates on OOM).
    grows: bool = False
    console_log: Path | None = None
    name: str = ""  # for diagnostics (container id)
    # Pooled and template memory is shared only within one tenant (cross-VM side channels).
    tenant: str = ""
    # NICs (tap + MAC), in guest order; the guest names them eth0, eth1, ...
    nics: tuple[NicSpec, ...] = ()
    # Where each NIC's tap goes (same order): the pool makes it there, or puts a ready VM's
    # own tap in its place. Empty: the taps exist already.
    tap_places: tuple[TapPlace, ...] = ()
    # Raw extra QEMU arguments (deprecated: use `nics`); pooled sources cannot serve these.
    extra_args: tuple[str, ...] = ()
    # The container's host cgroup (HostConfig.SteelcupCgroup): a VM booted for the request
    # boots in it; a pooled one is handed out as it is (the runtime moves it: Machine.
    # place_in_cgroup). "" = none.
    cgroup_path: str = ""
    # The image's erofs as the VM's read-only root disk (--rootfs-cache block): a pooled VM
    # gets it in place of its placeholder at hand-out. None = no disk is needed.
    root_disk: Path | None = None


class Incompatible(SteelcupError):
    """A pooled source cannot serve this request (size, shares); the factory boots directly."""


class VmSource(Protocol):
    """Hands out booted, handshaken VMs; the caller owns (and closes) what it gets."""

    async def acquire(self, request: VmRequest) -> Machine: ...

    async def close(self) -> None: ...
