"""Typed records of the swarm, its services and their tasks, as the services layer keeps them.

A service keeps the docker document it was created or updated with (`spec_doc`, opaque here:
the API codec reads and writes it) next to the decoded parts the orchestrator acts on
(`ServicePlan`); a task keeps the task template document of its generation the same way.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

from steelcup.net.model import PortMapping
from steelcup.runtime.model import ContainerConfig

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
ID_LEN = 25  # swarmkit's identity.NewID: 128 random bits in base 36


def new_object_id() -> str:
    """A swarm object id (node, service, task): 25 lowercase base-36 characters."""
    value = secrets.randbits(128)
    out = []
    for _ in range(ID_LEN):
        value, digit = divmod(value, 36)
        out.append(_ID_ALPHABET[digit])
    return "".join(reversed(out))


class TaskState(enum.Enum):
    """swarmkit's task states, in their order."""

    NEW = "new"
    PENDING = "pending"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    PREPARING = "preparing"
    READY = "ready"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETE = "complete"
    SHUTDOWN = "shutdown"
    FAILED = "failed"
    REJECTED = "rejected"
    REMOVE = "remove"
    ORPHANED = "orphaned"

    @property
    def terminal(self) -> bool:
        """The task's container runs no more and never will again."""
        return self in _TERMINAL


_TERMINAL = frozenset({TaskState.COMPLETE, TaskState.SHUTDOWN, TaskState.FAILED,
                       TaskState.REJECTED, TaskState.REMOVE, TaskState.ORPHANED})


class Mode(enum.Enum):
    REPLICATED = "replicated"
    GLOBAL = "global"


class Condition(enum.Enum):
    """RestartPolicy.Condition: when a task that ended is replaced."""

    ANY = "any"
    ON_FAILURE = "on-failure"
    NONE = "none"


@dataclass(frozen=True)
class RestartPolicy:
    condition: Condition = Condition.ANY
    delay_s: float = 5.0  # swarmkit's default
    max_attempts: int = 0  # 0: unlimited
    window_s: float = 0.0  # 0: attempts are counted over the task's whole life


class FailureAction(enum.Enum):
    """UpdateConfig.FailureAction: what an update does when its new tasks fail."""

    PAUSE = "pause"
    CONTINUE = "continue"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class FailurePolicy:
    action: FailureAction = FailureAction.PAUSE
    monitor_s: float = 5.0  # a new task failing this long after it runs still counts
    max_failure_ratio: float = 0.0  # failed / updated tasks tolerated


@dataclass(frozen=True)
class RollbackPolicy:
    """RollbackConfig: how a rollback replaces tasks (docker's defaults: one at a time,
    stop-first, no delay, pause on any failure, monitored 5 s)."""

    parallelism: int = 1
    start_first: bool = False
    delay_s: float = 0.0
    failure: FailurePolicy = FailurePolicy()  # action pause or continue

    def to_json(self) -> dict[str, Any]:
        return {"parallelism": self.parallelism, "start_first": self.start_first,
                "delay_s": self.delay_s, "action": self.failure.action.value,
                "monitor_s": self.failure.monitor_s,
                "max_failure_ratio": self.failure.max_failure_ratio}

    @staticmethod
    def from_json(data: dict[str, Any]) -> RollbackPolicy:
        return RollbackPolicy(int(data["parallelism"]), bool(data["start_first"]),
                              float(data["delay_s"]),
                              FailurePolicy(FailureAction(data["action"]),
                                            float(data["monitor_s"]),
                                            float(data["max_failure_ratio"])))


class UpdateState(enum.Enum):
    UPDATING = "updating"
    PAUSED = "paused"
    COMPLETED = "completed"
    ROLLBACK_STARTED = "rollback_started"
    ROLLBACK_PAUSED = "rollback_paused"
    ROLLBACK_COMPLETED = "rollback_completed"

    @property
    def in_progress(self) -> bool:
        return self in (UpdateState.UPDATING, UpdateState.ROLLBACK_STARTED)


@dataclass(frozen=True)
class UpdateStatus:
    """A service's last update (docker's UpdateStatus)."""

    state: UpdateState
    started_at: str
    completed_at: str = ""
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state.value, "started_at": self.started_at,
                "completed_at": self.completed_at, "message": self.message}

    @staticmethod
    def from_json(data: dict[str, Any]) -> UpdateStatus:
        return UpdateStatus(UpdateState(data["state"]), data["started_at"],
                            data.get("completed_at", ""), data.get("message", ""))


@dataclass(frozen=True)
class ServicePlan:
    """What the orchestrator does for a service: how many tasks, each a container made from
    `template` (tenant, labels and name are added per task), replaced per `restart`;
    outdated tasks are replaced `parallelism` slots at a time (0: all at once)."""

    mode: Mode
    replicas: int
    template: ContainerConfig
    restart: RestartPolicy = RestartPolicy()
    parallelism: int = 1
    stop_grace_s: int | None = None
    update_start_first: bool = False  # UpdateConfig.Order start-first
    update_delay_s: float = 0.0  # UpdateConfig.Delay
    failure: FailurePolicy = FailurePolicy()  # UpdateConfig's FailureAction, Monitor, ratio
    rollback: RollbackPolicy = RollbackPolicy()  # RollbackConfig: a rollback to this spec

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "replicas": self.replicas,
                "template": self.template.to_json(),
                "restart": {"condition": self.restart.condition.value,
                            "delay_s": self.restart.delay_s,
                            "max_attempts": self.restart.max_attempts,
                            "window_s": self.restart.window_s},
                "parallelism": self.parallelism, "stop_grace_s": self.stop_grace_s,
                "update_start_first": self.update_start_first,
                "update_delay_s": self.update_delay_s,
                "failure": {"action": self.failure.action.value,
                            "monitor_s": self.failure.monitor_s,
                            "max_failure_ratio": self.failure.max_failure_ratio},
                "rollback": self.rollback.to_json()}

    @staticmethod
    def from_json(data: dict[str, Any]) -> ServicePlan:
        restart = data["restart"]
        return ServicePlan(
            mode=Mode(data["mode"]), replicas=int(data["replicas"]),
            template=ContainerConfig.from_json(data["template"]),
            restart=RestartPolicy(Condition(restart["condition"]), float(restart["delay_s"]),
                                  int(restart["max_attempts"]), float(restart["window_s"])),
            parallelism=int(data["parallelism"]), stop_grace_s=data.get("stop_grace_s"),
            update_start_first=bool(data.get("update_start_first", False)),
            update_delay_s=float(data.get("update_delay_s", 0.0)),
            failure=FailurePolicy(FailureAction(failure["action"]), float(failure["monitor_s"]),
                                  float(failure["max_failure_ratio"]))
            if (failure := data.get("failure")) else FailurePolicy(),
            rollback=RollbackPolicy.from_json(data["rollback"])
            if data.get("rollback") else RollbackPolicy())


@dataclass(frozen=True)
class ServiceRecord:
    id: str
    name: str
    tenant: str
    version: int  # Version.Index: every change increments it
    created_at: str
    updated_at: str
    spec_doc: dict[str, Any]  # the ServiceSpec as the client sent it (the API's document)
    task_doc: dict[str, Any]  # its TaskTemplate, copied into each task made from it
    plan: ServicePlan
    # Which task template tasks must run: a new number (above `top_generation`, every
    # number used so far) when what a task runs changes; a rollback goes back to
    # `previous_generation`, so the tasks still running the old template are kept.
    generation: int = 1
    top_generation: int = 1
    previous_generation: int = 0
    # What the last update replaced (a rollback goes back to it), as kept for this one.
    previous_spec_doc: dict[str, Any] | None = None
    previous_task_doc: dict[str, Any] | None = None
    previous_plan: ServicePlan | None = None
    update_status: UpdateStatus | None = None
    # Service addressing (filled in by the VIP layer): "vip" or "dnsrr", and per network
    # (network id, "ADDR/PREFIX").
    endpoint_mode: str = "vip"
    virtual_ips: tuple[tuple[str, str], ...] = ()
    published_ports: tuple[PortMapping, ...] = ()  # as published (host ports chosen)
    labels: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "tenant": self.tenant,
                "version": self.version, "created_at": self.created_at,
                "updated_at": self.updated_at, "spec_doc": self.spec_doc,
                "task_doc": self.task_doc, "plan": self.plan.to_json(),
                "generation": self.generation, "top_generation": self.top_generation,
                "previous_generation": self.previous_generation,
                "previous_spec_doc": self.previous_spec_doc,
                "previous_task_doc": self.previous_task_doc,
                "previous_plan": self.previous_plan.to_json() if self.previous_plan else None,
                "update_status": self.update_status.to_json() if self.update_status else None,
                "endpoint_mode": self.endpoint_mode,
                "virtual_ips": [list(v) for v in self.virtual_ips],
                "published_ports": [[p.container_port, p.proto, p.host_ip, p.host_port]
                                    for p in self.published_ports],
                "labels": [list(kv) for kv in self.labels]}

    @staticmethod
    def from_json(data: dict[str, Any]) -> ServiceRecord:
        return ServiceRecord(
            id=data["id"], name=data["name"], tenant=data["tenant"],
            version=int(data["version"]), created_at=data["created_at"],
            updated_at=data["updated_at"], spec_doc=data["spec_doc"],
            task_doc=data["task_doc"], plan=ServicePlan.from_json(data["plan"]),
            generation=int(data["generation"]),
            top_generation=int(data.get("top_generation", data["generation"])),
            previous_generation=int(data.get("previous_generation", 0)),
            previous_spec_doc=data.get("previous_spec_doc"),
            previous_task_doc=data.get("previous_task_doc"),
            previous_plan=ServicePlan.from_json(data["previous_plan"])
            if data.get("previous_plan") else None,
            update_status=UpdateStatus.from_json(data["update_status"])
            if data.get("update_status") else None,
            endpoint_mode=data.get("endpoint_mode", "vip"),
            virtual_ips=tuple((str(n), str(a)) for n, a in data.get("virtual_ips", ())),
            published_ports=tuple(PortMapping(int(c), str(p), str(h), int(hp))
                                  for c, p, h, hp in data.get("published_ports", ())),
            labels=tuple((str(k), str(v)) for k, v in data.get("labels", ())))


@dataclass(frozen=True)
class TaskRecord:
    id: str
    service_id: str
    tenant: str
    slot: int  # 1..replicas; 0 for a global service's task (one per node)
    node_id: str
    generation: int  # the service generation it was made from
    task_doc: dict[str, Any]
    created_at: str
    desired: TaskState = TaskState.RUNNING
    state: TaskState = TaskState.NEW
    state_at: str = ""  # when `state` was reached (Status.Timestamp)
    updated_at: str = ""
    message: str = ""
    err: str = ""
    container_id: str = ""
    exit_code: int | None = None
    ended_ns: int = 0  # wall clock when it reached a terminal state (restart delay, window)
    unhealthy: bool = False  # ended because its health check failed
    version: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "service_id": self.service_id, "tenant": self.tenant,
                "slot": self.slot, "node_id": self.node_id, "generation": self.generation,
                "task_doc": self.task_doc, "created_at": self.created_at,
                "desired": self.desired.value, "state": self.state.value,
                "state_at": self.state_at, "updated_at": self.updated_at,
                "message": self.message, "err": self.err, "container_id": self.container_id,
                "exit_code": self.exit_code, "ended_ns": self.ended_ns,
                "unhealthy": self.unhealthy, "version": self.version}

    @staticmethod
    def from_json(data: dict[str, Any]) -> TaskRecord:
        return TaskRecord(
            id=data["id"], service_id=data["service_id"], tenant=data["tenant"],
            slot=int(data["slot"]), node_id=data["node_id"],
            generation=int(data["generation"]), task_doc=data["task_doc"],
            created_at=data["created_at"], desired=TaskState(data["desired"]),
            state=TaskState(data["state"]), state_at=data.get("state_at", ""),
            updated_at=data.get("updated_at", ""), message=data.get("message", ""),
            err=data.get("err", ""), container_id=data.get("container_id", ""),
            exit_code=data.get("exit_code"), ended_ns=int(data.get("ended_ns", 0)),
            unhealthy=bool(data.get("unhealthy", False)), version=int(data.get("version", 1)))

    def bump(self, **changes: Any) -> TaskRecord:
        return replace(self, version=self.version + 1, **changes)


@dataclass(frozen=True)
class SwarmState:
    """The one-node swarm: this node's id (made once), and whether the operator initialised
    it (tenants always see it active: docs/services.md)."""

    node_id: str
    cluster_id: str = ""
    active: bool = False
    created_at: str = ""
    updated_at: str = ""
    version: int = 1
    spec_doc: dict[str, Any] = field(default_factory=dict)
    worker_token: str = ""
    manager_token: str = ""
    listen_addr: str = "0.0.0.0:2377"
    advertise_addr: str = "127.0.0.1:2377"
    history_limit: int = 5  # Orchestration.TaskHistoryRetentionLimit: replaced tasks kept

    def to_json(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "cluster_id": self.cluster_id, "active": self.active,
                "created_at": self.created_at, "updated_at": self.updated_at,
                "version": self.version, "spec_doc": self.spec_doc,
                "worker_token": self.worker_token, "manager_token": self.manager_token,
                "listen_addr": self.listen_addr, "advertise_addr": self.advertise_addr,
                "history_limit": self.history_limit}

    @staticmethod
    def from_json(data: dict[str, Any]) -> SwarmState:
        return SwarmState(**data)


class Kind(enum.Enum):
    SECRET = "secret"
    CONFIG = "config"

    @property
    def max_bytes(self) -> int:
        """swarmkit's size limits: 500 KB for a secret, 1000 KB for a config."""
        return 500 * 1024 if self is Kind.SECRET else 1000 * 1024


@dataclass(frozen=True)
class SwarmObject:
    id: str
    kind: Kind
    tenant: str
    name: str
    version: int
    created_at: str
    updated_at: str
    labels: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind.value, "tenant": self.tenant,
                "name": self.name, "version": self.version, "created_at": self.created_at,
                "updated_at": self.updated_at, "labels": [list(kv) for kv in self.labels]}

    @staticmethod
    def from_json(data: dict[str, Any]) -> SwarmObject:
        return SwarmObject(id=data["id"], kind=Kind(data["kind"]), tenant=data["tenant"],
                           name=data["name"], version=int(data["version"]),
                           created_at=data["created_at"], updated_at=data["updated_at"],
                           labels=tuple((str(k), str(v)) for k, v in data.get("labels", ())))
