"""The VM source protocol (Kata-factory style): `acquire(request) -> Machine`, `close()`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from steelcup.errors import SteelcupError
from steelcup.vm.machine import Machine
from steelcup.vm.qemu_args import NicSpec, Share

__all__ = ["Incompatible", "NicSpec", "Share", "VmRequest", "VmSource"]


@dataclass(frozen=True)
class VmRequest:
    """What a container needs from its VM."""

    mem_mib: int
    cpus: int
    shares: tuple[Share, ...] = ()
    console_log: Path | None = None
    name: str = ""  # for diagnostics (container id)
    # Pooled and template memory is shared only within one tenant (cross-VM side channels).
    tenant: str = ""
    # NICs (tap + MAC), in guest order; the guest names them eth0, eth1, ...
    nics: tuple[NicSpec, ...] = ()
    # Raw extra QEMU arguments (deprecated: use `nics`); pooled sources cannot serve these.
    extra_args: tuple[str, ...] = ()


class Incompatible(SteelcupError):
    """A pooled source cannot serve this request (size, shares); the factory boots directly."""


class VmSource(Protocol):
    """Hands out booted, handshaken VMs; the caller owns (and closes) what it gets."""

    async def acquire(self, request: VmRequest) -> Machine: ...

    async def close(self) -> None: ...
