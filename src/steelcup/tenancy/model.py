"""Tenants, their quotas and the size classes (pure: no I/O).

A size class names a VM shape as hyper.sh had them (`s1` .. `l3`); quotas bound what a tenant
may hold at once. Both are parsed from the operator's `KEY=VALUE` words here and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from steelcup import boundedfs
from steelcup.errors import InvalidArgument
from steelcup.idmap import DEFAULT_COUNT, IdRange

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class SizeClass:
    cpus: int
    mem_mib: int


SIZE_CLASSES: Mapping[str, SizeClass] = {
    "s1": SizeClass(1, 64), "s2": SizeClass(1, 128), "s3": SizeClass(1, 256),
    "s4": SizeClass(1, 512), "m1": SizeClass(1, 1024), "m2": SizeClass(2, 2048),
    "m3": SizeClass(2, 4096), "l1": SizeClass(4, 4096), "l2": SizeClass(4, 8192),
    "l3": SizeClass(8, 16384),
}
DEFAULT_SIZE = "s4"


def size_class(name: str) -> SizeClass:
    try:
        return SIZE_CLASSES[name]
    except KeyError:
        raise InvalidArgument(f"unknown size class {name!r} (one of "
                              f"{', '.join(SIZE_CLASSES)})") from None


@dataclass(frozen=True)
class Quotas:
    """What one tenant may hold at once (counted on what exists, freed on removal)."""

    containers: int = 10
    cpus: int = 20  # vCPUs of all its containers
    memory_mib: int = 20 * 1024  # memory of all its containers
    volumes: int = 40
    volume_gib: int = 400  # size of all its volumes
    images: int = 20
    networks: int = 10
    services: int = 5
    secrets: int = 50  # swarm secrets and configs together
    fips: int = 2
    func_calls: int = 10  # concurrent func calls
    crons: int = 10  # cron jobs (their runs' containers count as containers)
    funcs: int = 20

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Quotas:
        known = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in data.items() if k in known})


# The operator's words for quotas: KEY=VALUE with sizes in docker's units where they are sizes.
_QUOTA_WORDS = {
    "containers": "containers", "cpus": "cpus", "memory": "memory_mib", "volumes": "volumes",
    "volume-size": "volume_gib", "images": "images", "networks": "networks",
    "services": "services", "secrets": "secrets", "fips": "fips", "func-calls": "func_calls",
    "crons": "crons",
    "funcs": "funcs",
}


def quota_words() -> tuple[str, ...]:
    return tuple(_QUOTA_WORDS)


def parse_quotas(words: Iterable[str], base: Quotas = Quotas()) -> Quotas:
    """`base` with each `KEY=VALUE` applied (memory and volume-size take sizes: 8G, 512m)."""
    changes: dict[str, int] = {}
    for word in words:
        key, sep, value = word.partition("=")
        field = _QUOTA_WORDS.get(key.strip().lower())
        if not sep or field is None:
            raise InvalidArgument(f"bad quota {word!r}: expected KEY=VALUE with KEY one of "
                                  f"{', '.join(_QUOTA_WORDS)}")
        value = value.strip()
        try:
            if field == "memory_mib":
                amount = boundedfs.parse_size(value) // boundedfs.MIB
            elif field == "volume_gib":
                amount = boundedfs.parse_size(value) // boundedfs.GIB
            else:
                amount = int(value)
        except (InvalidArgument, ValueError):
            raise InvalidArgument(f"bad quota {word!r}: {value!r} is not a number") from None
        if amount < 0:
            raise InvalidArgument(f"bad quota {word!r}: must not be negative")
        changes[field] = amount
    return replace(base, **changes)


@dataclass(frozen=True)
class Tenant:
    name: str
    id: str
    created: str  # RFC 3339
    quotas: Quotas = Quotas()
    size_default: str = DEFAULT_SIZE
    # Which id range its VMs run in (steelcup.idmap): `--userns-base` + slot x 65536. Slot 0 is
    # the operator's own (single-user) containers; tenants get 1, 2, ... (never reused while
    # the tenant exists), so no two tenants' QEMUs share a uid or reach each other's files.
    id_slot: int = 0


def id_range(userns_base: int, slot: int) -> IdRange:
    """The id range of id slot `slot` above `userns_base`."""
    return IdRange(userns_base + slot * DEFAULT_COUNT)


def check_tenant_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise InvalidArgument(f"invalid tenant name {name!r}: 1-63 of [a-z0-9_.-], starting "
                              "with a letter or digit")
    return name
