"""Quota admission: no number of concurrent creates lets a tenant hold more than its quotas.

`QuotaGate.admit(tenant, need)` takes the tenant's lock, counts what the tenant holds (what
exists, by the count function each object kind registers, plus what admitted creations still
in flight will add), refuses with `QuotaExceeded` if `need` would go over a quota, else reserves
`need` and releases the lock. The caller creates the object inside the `with` block; leaving it
drops the reservation, so from then on the object is counted only as existing. Nothing is a
running counter: what a removal frees is freed because the object no longer exists.

Creations that run on the daemon's loop without awaiting (a container's create) are counted
exactly. One that runs in a worker thread may be counted twice for the instant between its
object appearing and its block ending, which can refuse a racing create conservatively: the
gate may say no once too often, never let a quota be overshot.

The operator's own objects (tenant "" or None) are never limited.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields

from steelcup.errors import Forbidden, SteelcupError
from steelcup.tenancy.model import Quotas, Tenant

Count = Callable[[str], int]  # tenant name -> how much of one quota it holds now
# What an object layer calls around a creation: `QuotaGate.admit`, or `unlimited`.
Admit = Callable[[str | None, Mapping[str, int]], contextlib.AbstractContextManager[None]]


@contextlib.contextmanager
def unlimited(tenant: str | None, wanted: Mapping[str, int]) -> Iterator[None]:
    """The admission of a layer no quota gate was given (a single-user daemon, tests)."""
    yield

# How each quota reads in a message (the operator's `--quota` words, with units).
_SHOWN = {"containers": ("containers", ""), "cpus": ("cpus", " vCPUs"),
          "memory_mib": ("memory", " MiB"), "volumes": ("volumes", ""),
          "volume_gib": ("volume-size", " GiB"), "images": ("images", ""),
          "networks": ("networks", ""), "services": ("services", ""),
          "secrets": ("secrets", ""), "fips": ("fips", ""),
          "func_calls": ("func-calls", ""), "crons": ("crons", ""),
          "funcs": ("funcs", "")}


class QuotaExceeded(Forbidden):
    """A create (or resize) would take a tenant over one of its quotas (HTTP 403)."""


def need(**amounts: int) -> Mapping[str, int]:
    """What a creation adds, by `Quotas` field name (`need(containers=1, cpus=2)`)."""
    known = {f.name for f in fields(Quotas)}
    unknown = set(amounts) - known
    if unknown:
        raise ValueError(f"no quota named {', '.join(sorted(unknown))}")
    return {k: v for k, v in amounts.items() if v}


@dataclass(frozen=True)
class Usage:
    """One quota's use as `admit` saw it."""

    quota: str  # `Quotas` field name
    limit: int
    used: int  # existing + in flight, before this creation


def exceeded_message(tenant: str, usage: Usage, wanted: int) -> str:
    word, unit = _SHOWN.get(usage.quota, (usage.quota, ""))
    text = f"quota exceeded: {word} {usage.used}{unit} of {usage.limit}{unit} in use"
    if wanted != 1 or unit:
        text += f", {wanted}{unit.rstrip('s') if wanted == 1 else unit} more asked"
    return text + f" (tenant {tenant})"


class QuotaGate:
    """Per-tenant locks, the count of each object kind and the reservations in flight."""

    def __init__(self, tenant: Callable[[str], Tenant]) -> None:
        self._tenant = tenant  # name -> Tenant (its quotas now: an update applies at once)
        # Each object kind registers how it counts (steelcup.runtime.admission for
        # containers, cpus, memory_mib; the volume, image and network layers for theirs).
        self.counts: dict[str, Count] = {}
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._in_flight: dict[str, Counter[str]] = {}

    def register(self, quota: str, count: Count) -> None:
        if quota not in {f.name for f in fields(Quotas)}:
            raise ValueError(f"no quota named {quota}")
        self.counts[quota] = count

    def _lock(self, tenant: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(tenant, threading.Lock())

    def usage(self, tenant: str) -> dict[str, Usage]:
        """Every counted quota's limit and use (existing + in flight) for `tenant` now."""
        quotas = self._tenant(tenant).quotas
        flying = self._in_flight.get(tenant, Counter())
        return {name: Usage(name, getattr(quotas, name), count(tenant) + flying[name])
                for name, count in self.counts.items()}

    @contextlib.contextmanager
    def admit(self, tenant: str | None, wanted: Mapping[str, int]) -> Iterator[None]:
        """Room for `wanted` (by quota) is held for `tenant` inside the block; QuotaExceeded
        (naming the quota, its limit and its use) if there is none."""
        if not tenant or not any(v > 0 for v in wanted.values()):
            yield
            return
        missing = [q for q, v in wanted.items() if v > 0 and q not in self.counts]
        if missing:  # a kind whose layer never registered its count: a wiring bug
            raise SteelcupError(f"no count registered for quota {', '.join(missing)}")
        with self._lock(tenant):
            quotas = self._tenant(tenant).quotas
            flying = self._in_flight.setdefault(tenant, Counter())
            for quota, amount in wanted.items():
                if amount <= 0:
                    continue
                usage = Usage(quota, getattr(quotas, quota),
                              self.counts[quota](tenant) + flying[quota])
                if usage.used + amount > usage.limit:
                    raise QuotaExceeded(exceeded_message(tenant, usage, amount))
            flying.update({q: v for q, v in wanted.items() if v > 0})
        try:
            yield
        finally:
            with self._lock(tenant):
                flying.subtract({q: v for q, v in wanted.items() if v > 0})
