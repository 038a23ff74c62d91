"""Swarm secrets and configs (`/secrets`, `/configs`): small named files a tenant stores once
and services mount into their replicas. Each is a tenant object (names unique per kind and
tenant, another tenant's answered as a missing one), counted by the `secrets` quota; only its
labels change after creation (as swarmkit); one a service uses cannot be removed.

The data lives apart from the record (`object_store.py`): a secret's is never returned by the
API, a config's is (as dockerd).
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable
from dataclasses import replace

from steelcup.errors import Conflict, InvalidArgument, NotFound
from steelcup.runtime.events import EventBus
from steelcup.services.manager import ServiceManager, now_rfc3339
from steelcup.services.model import Kind, SwarmObject, new_object_id
from steelcup.services.object_store import ObjectStore
from steelcup.services.refs import resolve_ref
from steelcup.tenancy.quota import Admit, need, unlimited

# swarmkit's rule for secret and config names.
NAME_RE = re.compile(r"[a-zA-Z0-9]+(?:[a-zA-Z0-9\-_.]*[a-zA-Z0-9])?")
NAME_MAX = 64
BAD_NAME = ("invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end "
            "character must be [a-zA-Z0-9]")


def check_name(name: str) -> None:
    if len(name) > NAME_MAX or NAME_RE.fullmatch(name) is None:
        raise InvalidArgument(BAD_NAME)


def check_data(kind: Kind, data: bytes) -> None:
    if not data or len(data) >= kind.max_bytes:
        raise InvalidArgument(f"{kind.value} data must be larger than 0 and less than "
                              f"{kind.max_bytes // 1024} KB")


class ObjectManager:
    """Every tenant's secrets and configs (in memory, mirrored in the store)."""

    def __init__(self, store: ObjectStore, events: EventBus, *, admit: Admit = unlimited
                 ) -> None:
        self.store = store
        self.events = events
        self.admit = admit  # the tenancy quota gate (`secrets`)
        self.objects: dict[str, SwarmObject] = {o.id: o for o in store.load()}
        # Which services (names) use an object: told by the daemon (the service manager).
        self.users: Callable[[str], builtins.list[str]] = lambda object_id: []

    def list(self, kind: Kind | None, tenant: str | None) -> builtins.list[SwarmObject]:
        """`tenant`'s objects of `kind` (None: both); tenant None: the operator, everyone's."""
        return [o for o in self.objects.values()
                if (kind is None or o.kind is kind) and (tenant is None or o.tenant == tenant)]

    def get(self, object_id: str) -> SwarmObject:
        try:
            return self.objects[object_id]
        except KeyError:
            raise NotFound(f"{object_id} not found") from None

    def resolve(self, kind: Kind, ref: str, tenant: str | None) -> str:
        """The id `ref` (full id, name, unique id prefix) names among `tenant`'s objects of
        `kind`; another tenant's is exactly as missing as a missing one."""
        return resolve_ref(self.list(kind, tenant), ref, kind.value)

    def create(self, kind: Kind, tenant: str, name: str, data: bytes,
               labels: tuple[tuple[str, str], ...] = ()) -> SwarmObject:
        check_name(name)
        check_data(kind, data)
        if any(o.kind is kind and o.tenant == tenant and o.name == name
               for o in self.objects.values()):
            raise Conflict(f"{kind.value} {name} already exists")
        now = now_rfc3339()
        record = SwarmObject(id=new_object_id(), kind=kind, tenant=tenant, name=name,
                             version=1, created_at=now, updated_at=now, labels=labels)
        with self.admit(tenant, need(secrets=1)):
            self.store.insert(record, data)
            self.objects[record.id] = record
        self._event(record, "create")
        return record

    def data(self, object_id: str) -> bytes:
        """The object's content: for configs' inspect and for mounting into replicas."""
        return self.store.data(self.get(object_id).id)

    def update_labels(self, object_id: str, version: int, *, name: str,
                      labels: tuple[tuple[str, str], ...], data: bytes | None) -> SwarmObject:
        """swarmkit's update: `version` must be the current one and only labels change."""
        old = self.get(object_id)
        if version != old.version:
            raise Conflict("update out of sequence: the object changed since version "
                           f"{version} was read (it is at {old.version}); read it again")
        if (name and name != old.name) or (data is not None and data != self.data(old.id)):
            raise InvalidArgument("only updates to Labels are allowed")
        record = replace(old, version=old.version + 1, updated_at=now_rfc3339(),
                         labels=labels)
        self.store.save(record)
        self.objects[record.id] = record
        self._event(record, "update")
        return record

    def remove(self, object_id: str) -> None:
        """dockerd's refusal (400) while a service uses it."""
        record = self.get(object_id)
        users = sorted(self.users(record.id))
        if users:
            plural = "s" if len(users) > 1 else ""
            raise InvalidArgument(f"{record.kind.value} '{record.name}' is in use by the "
                                  f"following service{plural}: {', '.join(users)}")
        self.store.delete(record.id)
        del self.objects[record.id]
        self._event(record, "remove")

    def _event(self, record: SwarmObject, action: str) -> None:
        self.events.publish(record.kind.value, action, record.id, {"name": record.name},
                            record.tenant)


def users_of(services: ServiceManager) -> Callable[[str], builtins.list[str]]:
    """Which services (names) use an object now: what refuses its removal."""
    def users(object_id: str) -> builtins.list[str]:
        return [s.name for s in services.list(None)
                if any(f.object_id == object_id for f in s.plan.template.swarm_files)]
    return users
