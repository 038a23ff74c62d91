"""The VM source protocol (Kata-factory style): `acquire(request) -> Machine`, `close()`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from steelcup.errors import SteelcupError
from steelcup.vm.machine import Machine
from steelcup.vm.qemu_args import Share

__all__ = ["Incompatible", "Share", "VmRequest", "VmSource"]


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
    # Extra QEMU device arguments (NICs); pooled sources cannot serve these yet.
    extra_args: tuple[str, ...] = ()


class Incompatible(SteelcupError):
    """A pooled source cannot serve this request (size, shares); the factory boots directly."""


class VmSource(Protocol):
    """Hands out booted, handshaken VMs; the caller owns (and closes) what it gets."""

    async def acquire(self, request: VmRequest) -> Machine: ...

    async def close(self) -> None: ...
