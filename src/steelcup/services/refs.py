"""How a reference names one of a tenant's swarm objects (services, secrets, configs), as
dockerd resolves them: the full id, else a name, else a unique id prefix. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from steelcup.errors import InvalidArgument, NotFound


class Named(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def tenant(self) -> str: ...


def resolve_ref(seen: Sequence[Named], ref: str, what: str) -> str:
    """The id `ref` names among `seen` (the caller's objects: another tenant's is exactly as
    missing as a missing one). The operator sees every tenant's: a name several tenants use
    is its own object's if it has one, else ambiguous. `what` names the kind in errors."""
    for obj in seen:
        if obj.id == ref:
            return obj.id
    named = [o for o in seen if o.name == ref]
    if named:
        own = [o for o in named if not o.tenant]
        if own or len(named) == 1:
            return (own or named)[0].id
        raise InvalidArgument(f"{len(named)} {what}s of different tenants are named {ref!r}: "
                              "use the id")
    return resolve_id([o.id for o in seen], ref, what)


def resolve_id(ids: Sequence[str], ref: str, what: str) -> str:
    """The id `ref` names among `ids` by itself or as a unique prefix (tasks, which have no
    names of their own, are resolved by this alone)."""
    if ref in ids:
        return ref
    matches = [i for i in ids if ref and i.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise InvalidArgument(f"{what} {ref} is ambiguous ({len(matches)} matches found)")
    raise NotFound(f"{what} {ref} not found")
