"""A container's VM size from what it asked (pure): a size class, explicit memory/vCPUs, or the
tenant's default class; refused up front when the host cannot give it.

A class is asked with the label `sh.steelcup.size` (the docker CLI: `-l sh.steelcup.size=m1`;
`steelcup run --size m1` sends the same label). A class and `-m`/`--cpus` together are refused
(say one or the other). A tenant's container that asks for neither gets its tenant's default
class, recorded in the same label; with only one of `-m`/`--cpus`, the other comes from that
class. The operator's own containers without a class keep the daemon's defaults, as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from steelcup.defaults import SIZE_LABEL
from steelcup.errors import InvalidArgument
from steelcup.tenancy.model import SIZE_CLASSES, size_class

__all__ = ["SIZE_LABEL", "HostCapacity", "Sized", "check_capacity", "class_of", "resolve",
           "shape_text", "vm_cpus"]


@dataclass(frozen=True)
class HostCapacity:
    """The largest VM this host can give: its CPUs and its memory."""

    cpus: int
    mem_mib: int

    @classmethod
    def probe(cls) -> HostCapacity:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return cls(os.cpu_count() or 1, mem >> 20)


@dataclass(frozen=True)
class Sized:
    """What the container's config gets: memory and CPUs (0: the daemon's defaults) and the
    class to record in its labels ("" for none)."""

    mem_mib: int
    cpus: float
    size: str


def vm_cpus(cpus: float, default: int) -> int:
    """The vCPUs a VM gets for a `--cpus` value (0: `default`): whole vCPUs, rounded up (a
    thousandth over a whole number is that number)."""
    return max(1, int(cpus + 0.999)) if cpus else default


def class_of(cpus: int, mem_mib: int) -> str:
    """The size class of exactly this shape ("" when it is none)."""
    return next((name for name, c in SIZE_CLASSES.items()
                 if (c.cpus, c.mem_mib) == (cpus, mem_mib)), "")


def shape_text(cpus: int, mem_mib: int) -> str:
    return f"{cpus} vCPU{'s' if cpus != 1 else ''}/{mem_mib} MiB"


def check_capacity(cpus: int, mem_mib: int, host: HostCapacity, what: str) -> None:
    if cpus > host.cpus:
        raise InvalidArgument(f"{what} needs {cpus} vCPUs; this host has {host.cpus}")
    if mem_mib > host.mem_mib:
        raise InvalidArgument(f"{what} needs {mem_mib} MiB of memory; this host has "
                              f"{host.mem_mib} MiB")


def resolve(asked: str, mem_mib: int, cpus: float, tenant_default: str | None,
            host: HostCapacity) -> Sized:
    """The size of a container that asked for class `asked` ("" for none) and `mem_mib`/`cpus`
    (0: not asked). `tenant_default`: its tenant's default class; None for the operator's."""
    if asked:
        chosen = size_class(asked)
        if mem_mib or cpus:
            raise InvalidArgument(f"size class {asked} and an explicit memory or CPU count: "
                                  "give one or the other")
        check_capacity(chosen.cpus, chosen.mem_mib, host, f"size class {asked} "
                       f"({shape_text(chosen.cpus, chosen.mem_mib)})")
        return Sized(chosen.mem_mib, float(chosen.cpus), asked)
    if tenant_default is None:
        return Sized(mem_mib, cpus, "")  # the operator's own: as before
    default = size_class(tenant_default)
    if not mem_mib and not cpus:
        check_capacity(default.cpus, default.mem_mib, host,
                       f"the default size class {tenant_default}")
        return Sized(default.mem_mib, float(default.cpus), tenant_default)
    sized = Sized(mem_mib or default.mem_mib, cpus or float(default.cpus), "")
    check_capacity(vm_cpus(sized.cpus, 1), sized.mem_mib, host, "this container")
    return sized
