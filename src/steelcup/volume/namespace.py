"""Per-tenant names of volumes and snapshots (pure, apart from listing a store's dirs).

A name is unique within its tenant's namespace only: alice and bob may both have `data`. A
key names one object daemon-wide: `NAME` for the operator's own (tenant ""), `TENANT/NAME` for
a tenant's; the operator sees keys, a tenant only its plain names. On disk the operator's
objects stay where they always were, `BASE/NAME`, and a tenant's are under `BASE/@TENANT/NAME`:
`@` starts no volume name, so no name of one namespace can be a dir of another.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from steelcup.tenancy.model import check_tenant_name
from steelcup.volume.spec import check_volume_name

TENANT_DIR_PREFIX = "@"


def key(tenant: str, name: str) -> str:
    """The daemon-wide key of `tenant`'s object `name`."""
    return f"{tenant}/{name}" if tenant else name


def split(ref: str) -> tuple[str, str]:
    """(tenant, name) of a key; InvalidArgument for one no object can have."""
    tenant, sep, name = ref.rpartition("/")
    if sep:
        check_tenant_name(tenant)
    check_volume_name(name)
    return tenant, name


def tenant_dir(base: Path, tenant: str) -> Path:
    """Where `tenant`'s objects live under `base`."""
    return base / f"{TENANT_DIR_PREFIX}{check_tenant_name(tenant)}" if tenant else base


def namespaces(base: Path) -> Iterator[tuple[str, Path]]:
    """(tenant, dir) of every namespace under `base`: the operator's first, then each
    tenant's that has a dir."""
    yield "", base
    for entry in sorted(base.iterdir()):
        if entry.name.startswith(TENANT_DIR_PREFIX) and entry.is_dir():
            yield entry.name[len(TENANT_DIR_PREFIX):], entry


def object_keys(base: Path, meta: str, tenant: str | None = None) -> Iterator[str]:
    """The keys of the complete objects (dirs holding `meta`) under `base`: `tenant`'s, or
    (None) every tenant's, the operator's first; names in order."""
    for owner, space in namespaces(base):
        if tenant is not None and owner != tenant:
            continue
        for entry in sorted(space.iterdir()):
            if (entry.name.startswith(".") or is_namespace_dir(entry)
                    or not (entry / meta).exists()):
                continue
            yield key(owner, entry.name)


def is_namespace_dir(entry: Path) -> bool:
    """True for a tenant's namespace dir (not an object of the operator's)."""
    return entry.name.startswith(TENANT_DIR_PREFIX)
