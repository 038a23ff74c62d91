"""The swarm and its services as clients change them: `swarm init`/`leave`, service create,
update (docker's optimistic version check), remove, and the lookups the API makes for a
caller. Tasks are the orchestrator's (`orchestrator.py`); this module tells it when a service
changed.

Tenancy (docs/services.md): the one-node swarm is the operator's. The operator's services
need `swarm init` first, as with dockerd; for a tenant the swarm is always there (its node is
an active manager), and `swarm init` simply answers the node's id. Services are per tenant:
names unique per tenant, another tenant's service answered as a missing one, counted by the
`services` quota.
"""

from __future__ import annotations

import builtins
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from steelcup.errors import Conflict, InvalidArgument, NotFound, NotInSwarm, Unavailable
from steelcup.net.model import PortMapping
from steelcup.runtime.events import EventBus
from steelcup.runtime.logs import format_time_ns
from steelcup.services.model import (
    ServicePlan,
    ServiceRecord,
    SwarmState,
    UpdateState,
    UpdateStatus,
    new_object_id,
)
from steelcup.services.refs import resolve_ref
from steelcup.services.store import ServiceStore
from steelcup.tenancy.quota import Admit, need, unlimited

NOT_A_MANAGER = ('This node is not a swarm manager. Use "docker swarm init" or "docker swarm '
                 'join" to connect this node to swarm and try again.')
ALREADY_IN_SWARM = ('This node is already part of a swarm. Use "docker swarm leave" to leave '
                    'this swarm and join another one.')
LEAVE_MANAGER = ("You are attempting to leave the swarm on a node that is participating as a "
                 "manager. Removing the last manager erases all current state of the swarm. "
                 "Use `--force` to ignore this message.")


def now_rfc3339() -> str:
    return format_time_ns(time.time_ns())


def join_token(kind: str) -> str:
    """A token in docker's shape (SWMTKN-1-...); nothing accepts it: joins are refused."""
    return f"SWMTKN-1-{secrets.token_hex(25)}-{kind}{secrets.token_hex(8)}"


class ServiceManager:
    """Services of every tenant (in memory, mirrored in the store) and the swarm's state."""

    def __init__(self, store: ServiceStore, events: EventBus, *, admit: Admit = unlimited
                 ) -> None:
        self.store = store
        self.events = events
        self.admit = admit  # the tenancy quota gate (`services`)
        self.services: dict[str, ServiceRecord] = {s.id: s for s in store.load_services()}
        swarm = store.load_swarm()
        if swarm is None:  # this node's identity, made once
            swarm = SwarmState(node_id=new_object_id(), created_at=now_rfc3339())
            store.save_swarm(swarm)
        self.swarm = swarm
        # Told after every change of a service (the orchestrator's wake-up, the addressing
        # layer's, the waker's): `on_change`.
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every change of a service, after those added before it."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    # -- the swarm ---------------------------------------------------------------------------

    def active(self, tenant: str | None) -> bool:
        """Whether `tenant` (None: the operator) sees this node as an active swarm manager."""
        return bool(tenant) or self.swarm.active

    def require(self, tenant: str | None) -> None:
        if not self.active(tenant):
            raise NotInSwarm(NOT_A_MANAGER)

    def init(self, tenant: str | None, *, listen_addr: str, advertise_addr: str,
             spec_doc: dict[str, Any], history_limit: int = 5) -> str:
        """`swarm init`: the node's id. A tenant's always succeeds (its swarm exists)."""
        if tenant:
            return self.swarm.node_id
        if self.swarm.active:
            raise Unavailable(ALREADY_IN_SWARM)
        now = now_rfc3339()
        self.swarm = replace(self.swarm, active=True, cluster_id=new_object_id(),
                             created_at=now, updated_at=now, version=self.swarm.version + 1,
                             spec_doc=spec_doc, worker_token=join_token("w"),
                             manager_token=join_token("m"), listen_addr=listen_addr,
                             advertise_addr=advertise_addr, history_limit=history_limit)
        self.store.save_swarm(self.swarm)
        return self.swarm.node_id

    def leave(self, force: bool) -> builtins.list[ServiceRecord]:
        """The operator leaves the swarm: its services go (their tasks' containers with them);
        tenants' services stay, their swarm is not the operator's."""
        if not self.swarm.active:
            raise NotInSwarm("This node is not part of a swarm")
        if not force:
            raise Unavailable(LEAVE_MANAGER)
        gone = [s for s in self.services.values() if not s.tenant]
        for service in gone:
            self.remove(service.id)
        self.swarm = replace(self.swarm, active=False, version=self.swarm.version + 1,
                             updated_at=now_rfc3339(), worker_token="", manager_token="")
        self.store.save_swarm(self.swarm)
        return gone

    def update_swarm(self, version: int, spec_doc: dict[str, Any], history_limit: int
                     ) -> None:
        if version != self.swarm.version:
            raise Conflict("update out of sequence")
        self.swarm = replace(self.swarm, spec_doc=spec_doc, version=self.swarm.version + 1,
                             updated_at=now_rfc3339(), history_limit=history_limit)
        self._changed()
        self.store.save_swarm(self.swarm)

    # -- services ----------------------------------------------------------------------------

    def list(self, tenant: str | None) -> builtins.list[ServiceRecord]:
        """The services `tenant` sees (None: the operator, every tenant's)."""
        return [s for s in self.services.values() if tenant is None or s.tenant == tenant]

    def get(self, service_id: str) -> ServiceRecord:
        try:
            return self.services[service_id]
        except KeyError:
            raise NotFound(f"service {service_id} not found") from None

    def resolve(self, ref: str, tenant: str | None) -> str:
        """The id of the service `ref` (full id, name, or unique id prefix) names for `tenant`
        (None: the operator); another tenant's is exactly as missing as a missing one."""
        return resolve_ref(self.list(tenant), ref, "service")

    def create(self, tenant: str, name: str, *, spec_doc: dict[str, Any],
               task_doc: dict[str, Any], plan: ServicePlan,
               labels: tuple[tuple[str, str], ...] = (), endpoint_mode: str = "vip"
               ) -> ServiceRecord:
        if any(s.name == name and s.tenant == tenant for s in self.services.values()):
            raise Conflict(f"service {name} already exists")
        now = now_rfc3339()
        record = ServiceRecord(id=new_object_id(), name=name, tenant=tenant, version=1,
                               created_at=now, updated_at=now, spec_doc=spec_doc,
                               task_doc=task_doc, plan=plan, labels=labels,
                               endpoint_mode=endpoint_mode)
        with self.admit(tenant, need(services=1)):
            self.store.insert_service(record)
            self.services[record.id] = record
        self._event(record, "create")
        self._changed()
        return record

    def update(self, service_id: str, version: int, *, spec_doc: dict[str, Any],
               task_doc: dict[str, Any], plan: ServicePlan, force_changed: bool,
               labels: tuple[tuple[str, str], ...] = (), endpoint_mode: str = "vip"
               ) -> ServiceRecord:
        """docker's optimistic update: `version` must be the service's current one. What it
        replaces is kept for a rollback."""
        old = self._at_version(service_id, version)
        name = str(spec_doc.get("Name") or old.name)
        if name != old.name:
            raise InvalidArgument("renaming services is not supported")
        return self._change(old, spec_doc=spec_doc, task_doc=task_doc, plan=plan,
                            labels=labels, endpoint_mode=endpoint_mode,
                            force_changed=force_changed, rollback="")

    def rollback(self, service_id: str, version: int | None, why: str) -> ServiceRecord:
        """Back to the spec the last update replaced (`docker service rollback`, or an update
        whose failure action is rollback); afterwards there is none to go back to."""
        old = self.get(service_id) if version is None else self._at_version(service_id,
                                                                             version)
        if (old.previous_spec_doc is None or old.previous_plan is None
                or old.previous_task_doc is None):
            raise InvalidArgument(f"service {old.name} does not have a previous spec")
        previous_force = int(old.previous_task_doc.get("ForceUpdate") or 0)
        return self._change(old, spec_doc=old.previous_spec_doc,
                            task_doc=old.previous_task_doc, plan=old.previous_plan,
                            labels=old.labels, endpoint_mode=old.endpoint_mode,
                            force_changed=previous_force != int(
                                old.task_doc.get("ForceUpdate") or 0), rollback=why)

    def _at_version(self, service_id: str, version: int) -> ServiceRecord:
        old = self.get(service_id)
        if version != old.version:
            raise Conflict("update out of sequence: the service changed since version "
                           f"{version} was read (it is at {old.version}); read it again")
        return old

    def _change(self, old: ServiceRecord, *, spec_doc: dict[str, Any],
                task_doc: dict[str, Any], plan: ServicePlan,
                labels: tuple[tuple[str, str], ...], endpoint_mode: str,
                force_changed: bool, rollback: str) -> ServiceRecord:
        # What each task runs changed: its tasks are replaced (a rolling update).
        outdated = (force_changed or plan.template != old.plan.template
                    or plan.mode is not old.plan.mode)
        top = max(old.top_generation, old.generation)
        if rollback and old.previous_generation:
            generation = old.previous_generation  # the tasks of that template are current
        else:
            generation = top + 1 if outdated else old.generation
        now = now_rfc3339()
        status = old.update_status
        if rollback:
            status = UpdateStatus(UpdateState.ROLLBACK_STARTED, now, message=rollback)
        elif outdated:
            status = UpdateStatus(UpdateState.UPDATING, now, message="update in progress")
        record = replace(old, version=old.version + 1, updated_at=now, spec_doc=spec_doc,
                         task_doc=task_doc, plan=plan, labels=labels,
                         endpoint_mode=endpoint_mode,
                         previous_spec_doc=None if rollback else old.spec_doc,
                         previous_task_doc=None if rollback else old.task_doc,
                         previous_plan=None if rollback else old.plan,
                         update_status=status, generation=generation,
                         top_generation=max(top, generation),
                         previous_generation=0 if rollback else old.generation)
        self.store.save_service(record)
        self.services[record.id] = record
        self._event(record, "update")
        self._changed()
        return record

    def set_update_status(self, service_id: str, status: UpdateStatus) -> None:
        """The orchestrator's verdict on a rolling update (completed, paused)."""
        record = replace(self.get(service_id), update_status=status)
        self.store.save_service(record)
        self.services[record.id] = record
        self._changed()

    def set_virtual_ips(self, service_id: str, vips: tuple[tuple[str, str], ...],
                        ports: tuple[PortMapping, ...] = ()) -> None:
        """For the VIP layer: the service's address on each of its networks, and its ports
        as published."""
        record = replace(self.get(service_id), virtual_ips=vips, published_ports=ports)
        self.store.save_service(record)
        self.services[record.id] = record

    def remove(self, service_id: str) -> None:
        """The service is gone at once for every client; the orchestrator removes its tasks
        and their containers."""
        record = self.get(service_id)
        self.store.delete_service(service_id)
        del self.services[service_id]
        self._event(record, "remove")
        self._changed()

    def _event(self, record: ServiceRecord, action: str) -> None:
        self.events.publish("service", action, record.id, {"name": record.name}, record.tenant)
