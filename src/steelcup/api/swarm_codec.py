"""Docker's swarm-mode JSON <-> the services layer: the swarm, this node, service specs (kept
as the client sent them, decoded into what the orchestrator acts on) and tasks.

A service's container is decoded exactly as a `POST /containers/create` body
(`docker_codec.decode_create`): its ContainerSpec, Resources, LogDriver and Networks are
written as that body first, so every container setting steelcup honours or refuses is
honoured or refused the same way for a task.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from steelcup.api import docker_codec, object_codec
from steelcup.api.filters import labels_match, str_map
from steelcup.errors import InvalidArgument, Unsupported
from steelcup.runtime import checkpoints
from steelcup.runtime.autosuspend import parse_idle
from steelcup.runtime.model import ContainerConfig
from steelcup.runtime.names import random_name
from steelcup.services.model import (
    Condition,
    FailureAction,
    FailurePolicy,
    Mode,
    RestartPolicy,
    RollbackPolicy,
    ServicePlan,
    ServiceRecord,
    SwarmState,
    TaskRecord,
    TaskState,
)

NS = 1_000_000_000
SERVICE_FILTERS = frozenset({"id", "name", "label", "mode"})
TASK_FILTERS = frozenset({"id", "name", "service", "node", "label", "desired-state",
                          "_up-to-date", "runtime"})
NODE_FILTERS = frozenset({"id", "name", "label", "node.label", "membership", "role"})
# docker's service names: a DNS label
_SERVICE_NAME = re.compile(r"[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*")

# What `docker swarm init` stores when the client leaves a field out (dockerd's defaults).
DEFAULT_SWARM_SPEC: dict[str, Any] = {
    "Name": "default",
    "Labels": {},
    "Orchestration": {"TaskHistoryRetentionLimit": 5},
    "Raft": {"SnapshotInterval": 10000, "KeepOldSnapshots": 0,
             "LogEntriesForSlowFollowers": 500, "ElectionTick": 10, "HeartbeatTick": 1},
    "Dispatcher": {"HeartbeatPeriod": 5 * NS},
    "CAConfig": {"NodeCertExpiry": 90 * 24 * 3600 * NS},
    "TaskDefaults": {},
    "EncryptionConfig": {"AutoLockManagers": False},
}
DEFAULT_ADDR_POOL = ["10.0.0.0/8"]

# ContainerSpec keys and where they go in a container create body (None: handled apart).
_CONTAINER_KEYS: dict[str, str | None] = {
    "Image": "Image", "Labels": "Labels", "Command": "Entrypoint", "Args": "Cmd",
    "Hostname": "Hostname", "Env": "Env", "Dir": "WorkingDir", "User": "User",
    "TTY": "Tty", "OpenStdin": "OpenStdin", "StopSignal": "StopSignal",
    "Healthcheck": "Healthcheck", "Groups": "HostConfig.GroupAdd",
    "ReadOnly": "HostConfig.ReadonlyRootfs", "Mounts": "HostConfig.Mounts",
    "Init": "HostConfig.Init", "Sysctls": "HostConfig.Sysctls",
    "CapabilityAdd": "HostConfig.CapAdd", "CapabilityDrop": "HostConfig.CapDrop",
    "Ulimits": "HostConfig.Ulimits", "Isolation": "HostConfig.Isolation",
    "StopGracePeriod": None, "Hosts": None, "DNSConfig": None, "Privileges": None,
    "Secrets": None, "Configs": None,
    # steelcup's own (docs/services.md, "Auto-suspend"): each replica's HostConfig fields
    "SteelcupCheckpointable": "HostConfig.SteelcupCheckpointable",
    "SteelcupAutoSuspend": "HostConfig.SteelcupAutoSuspend",
}
# Service labels that say the same, for clients that send only docker's fields (the docker
# CLI's `service create --label`, a stack file's `deploy.labels`).
CHECKPOINTABLE_LABEL = "steelcup.checkpointable"
AUTO_SUSPEND_LABEL = "steelcup.auto-suspend"


@dataclass(frozen=True)
class DecodedService:
    name: str
    labels: tuple[tuple[str, str], ...]
    spec_doc: dict[str, Any]
    task_doc: dict[str, Any]
    plan: ServicePlan
    endpoint_mode: str
    force_update: int


def _dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what}: expected an object")
    return value


def _int(obj: dict[str, Any], key: str, what: str, default: int = 0) -> int:
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidArgument(f"{what}.{key}: expected a non-negative integer")
    return int(value)


# -- the swarm ---------------------------------------------------------------------------------


def decode_swarm_init(body: Any) -> tuple[str, str, dict[str, Any]]:
    """POST /swarm/init -> (listen address, advertise address, the swarm's Spec)."""
    body = _dict(body, "swarm init")
    listen = str(body.get("ListenAddr") or "0.0.0.0:2377")
    advertise = str(body.get("AdvertiseAddr") or "")
    host = advertise or listen.rsplit(":", 1)[0]
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"  # this one node's address as its (only) peers would reach it
    if ":" not in host or host.startswith("["):
        host = f"{host}:{listen.rsplit(':', 1)[1] if ':' in listen else '2377'}"
    return listen, host, merge_swarm_spec(DEFAULT_SWARM_SPEC, _dict(body.get("Spec"), "Spec"))


def history_limit(spec: dict[str, Any]) -> int:
    """Orchestration.TaskHistoryRetentionLimit of a swarm spec (replaced tasks kept per
    slot)."""
    orchestration = _dict(spec.get("Orchestration"), "Spec.Orchestration")
    return _int(orchestration, "TaskHistoryRetentionLimit", "Spec.Orchestration", 5)


def merge_swarm_spec(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`given` over `base`, one level deep (docker's swarm spec sections). A zero or empty
    value is "not set", as dockerd reads the docker CLI's (it sends 0 for flags not given)."""
    out = copy.deepcopy(base)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **{k: v for k, v in value.items()
                                       if not _unset(v) or k not in out[key]}}
        elif not _unset(value) or key not in out:
            out[key] = value
    return out


def _unset(value: Any) -> bool:
    return value is None or (value in (0, "", [], {}) and value is not False)


def encode_swarm(state: SwarmState, tenant: bool) -> dict[str, Any]:
    """GET /swarm; a tenant gets no join tokens (nothing joins its swarm)."""
    spec = state.spec_doc or DEFAULT_SWARM_SPEC
    return {
        "ID": state.cluster_id or state.node_id,
        "Version": {"Index": state.version},
        "CreatedAt": state.created_at,
        "UpdatedAt": state.updated_at or state.created_at,
        "Spec": spec,
        "TLSInfo": {"TrustRoot": "", "CertIssuerSubject": "", "CertIssuerPublicKey": ""},
        "RootRotationInProgress": False,
        "DefaultAddrPool": DEFAULT_ADDR_POOL,
        "SubnetSize": 24,
        "DataPathPort": 4789,
        "JoinTokens": {"Worker": "" if tenant else state.worker_token,
                       "Manager": "" if tenant else state.manager_token},
    }


def info_section(state: SwarmState, active: bool, tenant: bool) -> dict[str, Any]:
    """`Swarm` of GET /info: an active manager of a one-node swarm, or inactive."""
    if not active:
        return {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                "ControlAvailable": False, "Error": "", "RemoteManagers": None}
    addr = state.advertise_addr
    return {"NodeID": state.node_id, "NodeAddr": addr.rsplit(":", 1)[0],
            "LocalNodeState": "active", "ControlAvailable": True, "Error": "",
            "RemoteManagers": [{"NodeID": state.node_id, "Addr": addr}],
            "Nodes": 1, "Managers": 1, "Cluster": encode_swarm(state, tenant)}


def encode_node(state: SwarmState, *, hostname: str, ncpu: int, mem_bytes: int,
                engine_version: str) -> dict[str, Any]:
    addr = state.advertise_addr
    return {
        "ID": state.node_id,
        "Version": {"Index": state.version},
        "CreatedAt": state.created_at,
        "UpdatedAt": state.updated_at or state.created_at,
        "Spec": {"Labels": {}, "Role": "manager", "Availability": "active"},
        "Description": {
            "Hostname": hostname,
            "Platform": {"Architecture": "x86_64", "OS": "linux"},
            "Resources": {"NanoCPUs": ncpu * NS, "MemoryBytes": mem_bytes},
            "Engine": {"EngineVersion": engine_version, "Labels": {},
                       "Plugins": [{"Type": "Network", "Name": "bridge"},
                                   {"Type": "Volume", "Name": "local"}]},
            "TLSInfo": {"TrustRoot": "", "CertIssuerSubject": "", "CertIssuerPublicKey": ""},
        },
        "Status": {"State": "ready", "Addr": addr.rsplit(":", 1)[0]},
        "ManagerStatus": {"Leader": True, "Reachability": "reachable", "Addr": addr},
    }


def node_matches(node: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    facts = {"id": [node["ID"]], "name": [node["Description"]["Hostname"]],
             "role": ["manager"], "membership": ["accepted"]}
    for key, values in filters.items():
        if key in ("label", "node.label"):
            if not labels_match({}, values):
                return False
            continue
        if key == "id":
            if not any(node["ID"].startswith(v) for v in values):
                return False
        elif not any(v in facts[key] for v in values):
            return False
    return True


# -- services ----------------------------------------------------------------------------------


def decode_service(body: Any, node: dict[str, Any]) -> DecodedService:
    """A ServiceSpec (create or update body) -> what steelcup keeps and runs; InvalidArgument
    naming the field steelcup cannot honour. `node`: this node (placement constraints)."""
    spec = _dict(body, "service spec")
    name = spec.get("Name") or random_name()
    if not isinstance(name, str) or len(name) > 63 or not _SERVICE_NAME.fullmatch(name):
        raise InvalidArgument(f"Invalid service name {name!r}: it must be valid as a DNS "
                              "name component (letters, digits, '-' and '_', at most 63)")
    labels = str_map(spec.get("Labels"), "Labels")
    task = _dict(spec.get("TaskTemplate"), "TaskTemplate")
    if task.get("PluginSpec") or task.get("NetworkAttachmentSpec"):
        raise Unsupported("steelcup runs container services only (no plugin or network "
                          "attachment tasks)")
    if (task.get("Runtime") or "container") != "container":
        raise InvalidArgument(f"TaskTemplate.Runtime {task['Runtime']!r}: only container")
    container = _dict(task.get("ContainerSpec"), "TaskTemplate.ContainerSpec")
    if not container.get("Image"):
        raise InvalidArgument("ContainerSpec: image reference must be provided")
    check_placement(_dict(task.get("Placement"), "TaskTemplate.Placement"), node)
    mode, replicas = decode_mode(spec)
    update = _dict(spec.get("UpdateConfig"), "UpdateConfig")
    parallelism = _int(update, "Parallelism", "UpdateConfig", 1) if update else 1
    order = update.get("Order") or "stop-first"
    if order not in ("stop-first", "start-first"):
        raise InvalidArgument(f"UpdateConfig.Order {order!r}: stop-first or start-first")
    endpoint = _dict(spec.get("EndpointSpec"), "EndpointSpec")
    endpoint_mode = str(endpoint.get("Mode") or "vip")
    if endpoint_mode not in ("vip", "dnsrr"):
        raise InvalidArgument(f"EndpointSpec.Mode {endpoint_mode!r}: expected vip or dnsrr")
    check_endpoint_ports(endpoint, endpoint_mode)
    networks = task.get("Networks") or spec.get("Networks") or []
    grace = container.get("StopGracePeriod")
    stop_grace_s = None if grace is None else _int(container, "StopGracePeriod",
                                                   "ContainerSpec") // NS
    container = with_suspend_labels(container, labels)
    template = replace(decode_task_container(container, task, networks),
                       swarm_files=object_codec.decode_references(container))
    try:
        checkpoints.check_config(template)
    except InvalidArgument as exc:
        raise InvalidArgument(f"service {name}: {exc}") from None
    plan = ServicePlan(mode=mode, replicas=replicas, template=template,
                       restart=decode_restart(_dict(task.get("RestartPolicy"),
                                                    "RestartPolicy")),
                       parallelism=parallelism, stop_grace_s=stop_grace_s,
                       update_start_first=order == "start-first",
                       update_delay_s=_int(update, "Delay", "UpdateConfig") / NS,
                       failure=decode_failure_policy(update),
                       rollback=decode_rollback_policy(_dict(spec.get("RollbackConfig"),
                                                             "RollbackConfig")))
    spec_doc = copy.deepcopy(spec)
    spec_doc["Name"] = name
    if mode is Mode.REPLICATED:  # dockerd stores the default it applied (1 replica)
        spec_doc["Mode"] = {**_dict(spec.get("Mode"), "Mode"), "Replicated": {
            **_dict(_dict(spec.get("Mode"), "Mode").get("Replicated"), "Mode.Replicated"),
            "Replicas": replicas}}
    return DecodedService(name=name, labels=tuple(sorted(labels.items())), spec_doc=spec_doc,
                          task_doc=copy.deepcopy(task), plan=plan, endpoint_mode=endpoint_mode,
                          force_update=_int(task, "ForceUpdate", "TaskTemplate"))


def with_suspend_labels(container: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """The ContainerSpec with the service labels `steelcup.checkpointable` (true/false) and
    `steelcup.auto-suspend` (a duration) as its SteelcupCheckpointable and
    SteelcupAutoSuspend; a label that says otherwise than the field is refused."""
    out = dict(container)
    checkpointable = labels.get(CHECKPOINTABLE_LABEL)
    if checkpointable is not None:
        value = checkpointable.strip().lower()
        if value not in ("true", "false", "1", "0", ""):
            raise InvalidArgument(f"label {CHECKPOINTABLE_LABEL}={checkpointable!r}: true or "
                                  "false")
        _label_field(out, "SteelcupCheckpointable", value in ("true", "1", ""),
                     CHECKPOINTABLE_LABEL)
    idle = labels.get(AUTO_SUSPEND_LABEL)
    if idle is not None:
        _label_field(out, "SteelcupAutoSuspend", parse_idle(idle, f"label {AUTO_SUSPEND_LABEL}"),
                     AUTO_SUSPEND_LABEL)
    return out


def _label_field(container: dict[str, Any], key: str, value: Any, label: str) -> None:
    given = container.get(key)
    if given is not None and given != value and not (
            key == "SteelcupAutoSuspend" and parse_idle(given, f"ContainerSpec.{key}") == value):
        raise InvalidArgument(f"label {label} says otherwise than ContainerSpec.{key}: give "
                              "one of them")
    container[key] = value


def check_endpoint_ports(endpoint: dict[str, Any], mode: str) -> None:
    """`EndpointSpec.Ports`: published on the service's virtual IP (docker's ingress mode);
    what steelcup cannot publish is refused naming the field."""
    ports = endpoint.get("Ports") or []
    if not isinstance(ports, list):
        raise InvalidArgument("EndpointSpec.Ports: expected a list")
    if ports and mode == "dnsrr":
        raise InvalidArgument("EndpointSpec.Ports: a service with endpoint mode dnsrr has no "
                              "virtual IP to publish ports from")
    seen: set[tuple[int, str]] = set()
    for port in ports:
        port = _dict(port, "EndpointSpec.Ports[]")
        target = _int(port, "TargetPort", "EndpointSpec.Ports[]")
        published = _int(port, "PublishedPort", "EndpointSpec.Ports[]")
        proto = port.get("Protocol") or "tcp"
        if proto not in ("tcp", "udp"):
            raise InvalidArgument(f"EndpointSpec.Ports[].Protocol {proto!r}: tcp or udp "
                                  "(sctp is not supported)")
        if (port.get("PublishMode") or "ingress") != "ingress":
            raise InvalidArgument(f"EndpointSpec.Ports[].PublishMode {port['PublishMode']!r} "
                                  "is not supported: ports are published on the service's "
                                  "virtual IP (ingress)")
        if not 1 <= target <= 65535 or not 0 <= published <= 65535:
            raise InvalidArgument(f"EndpointSpec.Ports[]: invalid port {published}:{target}")
        if (target, proto) in seen:
            raise InvalidArgument(f"EndpointSpec.Ports[]: target port {target}/{proto} is "
                                  "published twice")
        seen.add((target, proto))


def decode_failure_policy(update: dict[str, Any], what: str = "UpdateConfig"
                          ) -> FailurePolicy:
    action = update.get("FailureAction") or "pause"
    try:
        parsed = FailureAction(action)
    except ValueError:
        raise InvalidArgument(f"{what}.FailureAction {action!r}: pause, continue or "
                              "rollback") from None
    ratio = update.get("MaxFailureRatio") or 0
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
        raise InvalidArgument(f"{what}.MaxFailureRatio: a number from 0 to 1")
    monitor_ns = update.get("Monitor")
    return FailurePolicy(parsed, 5.0 if not monitor_ns else _int(
        update, "Monitor", what) / NS, float(ratio))


def decode_rollback_policy(config: dict[str, Any]) -> RollbackPolicy:
    """RollbackConfig: as UpdateConfig, but a rollback's failure action is pause or
    continue (there is nothing to roll a rollback back to)."""
    what = "RollbackConfig"
    order = config.get("Order") or "stop-first"
    if order not in ("stop-first", "start-first"):
        raise InvalidArgument(f"{what}.Order {order!r}: stop-first or start-first")
    failure = decode_failure_policy(config, what)
    if failure.action is FailureAction.ROLLBACK:
        raise InvalidArgument(f"{what}.FailureAction 'rollback': a rollback pauses or "
                              "continues on failure")
    return RollbackPolicy(parallelism=_int(config, "Parallelism", what, 1) if config else 1,
                          start_first=order == "start-first",
                          delay_s=_int(config, "Delay", what) / NS, failure=failure)


def decode_mode(spec: dict[str, Any]) -> tuple[Mode, int]:
    mode = _dict(spec.get("Mode"), "Mode")
    for job in ("ReplicatedJob", "GlobalJob"):
        if job in mode:
            raise Unsupported(f"steelcup does not run {job} services yet")
    if "Global" in mode:
        if "Replicated" in mode:
            raise InvalidArgument("Mode: only one of Replicated and Global")
        return Mode.GLOBAL, 1
    replicated = _dict(mode.get("Replicated"), "Mode.Replicated")
    return Mode.REPLICATED, _int(replicated, "Replicas", "Mode.Replicated", 1)


def decode_restart(policy: dict[str, Any]) -> RestartPolicy:
    condition = policy.get("Condition") or "any"
    try:
        parsed = Condition(condition)
    except ValueError:
        raise InvalidArgument(f"RestartPolicy.Condition {condition!r}: expected none, "
                              "on-failure or any") from None
    delay_ns = policy.get("Delay")
    return RestartPolicy(
        condition=parsed,
        delay_s=5.0 if delay_ns is None else _int(policy, "Delay", "RestartPolicy") / NS,
        max_attempts=_int(policy, "MaxAttempts", "RestartPolicy"),
        window_s=_int(policy, "Window", "RestartPolicy") / NS)


def check_placement(placement: dict[str, Any], node: dict[str, Any]) -> None:
    """Constraints are evaluated against this node, the swarm's only one: one it does not
    meet is refused (with dockerd its tasks would stay pending for ever)."""
    if placement.get("Preferences") or placement.get("Platforms") or placement.get(
            "MaxReplicas"):
        raise InvalidArgument("Placement preferences, platforms and max replicas mean nothing "
                              "on steelcup's one node: leave them out")
    facts = {"node.id": node["ID"], "node.hostname": node["Description"]["Hostname"],
             "node.role": "manager", "node.platform.os": "linux",
             "node.platform.arch": node["Description"]["Platform"]["Architecture"]}
    for constraint in placement.get("Constraints") or []:
        match = re.fullmatch(r"\s*([\w.\-]+)\s*(==|!=)\s*(.+?)\s*", str(constraint))
        if match is None:
            raise InvalidArgument(f"invalid placement constraint {constraint!r}")
        key, op, value = match.groups()
        if key.startswith(("node.labels.", "engine.labels.")):
            have: str | None = None  # this node has no labels
        elif key in facts:
            have = str(facts[key])
        else:
            raise InvalidArgument(f"placement constraint {constraint!r}: unknown key {key!r}")
        if (have is not None and have.lower() == value.lower()) != (op == "=="):
            raise InvalidArgument(f"placement constraint {constraint!r} is not met by this "
                                  "node, the swarm's only one: no task could ever run")


def decode_task_container(container: dict[str, Any], task: dict[str, Any],
                          networks: Any) -> ContainerConfig:
    """A task's ContainerSpec (+ Resources, LogDriver, Networks) as a container create body,
    decoded by the create path itself."""
    unknown = [k for k, v in container.items() if k not in _CONTAINER_KEYS and v]
    if unknown:
        raise InvalidArgument(f"ContainerSpec.{unknown[0]} is not supported by steelcup; it "
                              "is refused rather than ignored")
    privileges = _dict(container.get("Privileges"), "ContainerSpec.Privileges")
    if any(privileges.values()):
        raise InvalidArgument("ContainerSpec.Privileges (credential spec, SELinux, seccomp, "
                              "AppArmor profiles) are not supported: the VM is the boundary")
    body: dict[str, Any] = {}
    host: dict[str, Any] = {}
    for key, target in _CONTAINER_KEYS.items():
        if target is None or container.get(key) is None:
            continue
        if target.startswith("HostConfig."):
            host[target.removeprefix("HostConfig.")] = container[key]
        else:
            body[target] = container[key]
    if container.get("StopGracePeriod") is not None:
        body["StopTimeout"] = _int(container, "StopGracePeriod", "ContainerSpec") // NS
    hosts = container.get("Hosts") or []
    if not isinstance(hosts, list):
        raise InvalidArgument("ContainerSpec.Hosts: expected a list")
    host["ExtraHosts"] = swarm_hosts(hosts)
    dns = _dict(container.get("DNSConfig"), "ContainerSpec.DNSConfig")
    host["Dns"], host["DnsSearch"] = dns.get("Nameservers"), dns.get("Search")
    host["DnsOptions"] = dns.get("Options")
    resources = _dict(task.get("Resources"), "TaskTemplate.Resources")
    limits = _dict(resources.get("Limits"), "Resources.Limits")
    host["Memory"] = _int(limits, "MemoryBytes", "Resources.Limits")
    host["NanoCpus"] = _int(limits, "NanoCPUs", "Resources.Limits")
    host["PidsLimit"] = _int(limits, "Pids", "Resources.Limits")
    log_driver = _dict(task.get("LogDriver"), "TaskTemplate.LogDriver")
    if log_driver:
        host["LogConfig"] = {"Type": log_driver.get("Name") or "json-file",
                             "Config": log_driver.get("Options") or {}}
    if not isinstance(networks, list):
        raise InvalidArgument("TaskTemplate.Networks: expected a list")
    endpoints: dict[str, Any] = {}
    for attachment in networks:
        attachment = _dict(attachment, "TaskTemplate.Networks[]")
        target = attachment.get("Target")
        if not isinstance(target, str) or not target:
            raise InvalidArgument("TaskTemplate.Networks[].Target: a network name or id")
        if attachment.get("DriverOpts"):
            raise InvalidArgument("TaskTemplate.Networks[].DriverOpts are not supported")
        aliases = attachment.get("Aliases") or []
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise InvalidArgument("TaskTemplate.Networks[].Aliases: a list of names")
        # A service's aliases name its virtual IP (services/addressing.py), not its tasks.
        endpoints[target] = {}
    if endpoints:
        host["NetworkMode"] = next(iter(endpoints))
        body["NetworkingConfig"] = {"EndpointsConfig": endpoints}
    body["HostConfig"] = {k: v for k, v in host.items() if v is not None}
    return docker_codec.decode_create(body)


def swarm_hosts(entries: list[Any]) -> list[str]:
    """ContainerSpec.Hosts ("IP NAME [ALIAS...]", as /etc/hosts) -> ExtraHosts NAME:IP."""
    out: list[str] = []
    for entry in entries:
        words = str(entry).split()
        if len(words) < 2:
            raise InvalidArgument(f"ContainerSpec.Hosts: bad entry {entry!r} (IP HOSTNAME)")
        out.extend(f"{name}:{words[0]}" for name in words[1:])
    return out


def encode_service(service: ServiceRecord, status: dict[str, int] | None = None
                   ) -> dict[str, Any]:
    endpoint_spec = service.spec_doc.get("EndpointSpec") or {"Mode": service.endpoint_mode}
    endpoint: dict[str, Any] = {"Spec": endpoint_spec}
    if service.virtual_ips:
        endpoint["VirtualIPs"] = [{"NetworkID": n, "Addr": a} for n, a in service.virtual_ips]
    if service.published_ports:
        endpoint["Ports"] = [{"Protocol": p.proto, "TargetPort": p.container_port,
                              "PublishedPort": p.host_port, "PublishMode": "ingress"}
                             for p in service.published_ports]
    out: dict[str, Any] = {
        "ID": service.id,
        "Version": {"Index": service.version},
        "CreatedAt": service.created_at,
        "UpdatedAt": service.updated_at,
        "Spec": service.spec_doc,
        "Endpoint": endpoint,
    }
    if service.previous_spec_doc is not None:
        out["PreviousSpec"] = service.previous_spec_doc
    update = service.update_status
    if update is not None:
        out["UpdateStatus"] = {"State": update.state.value, "StartedAt": update.started_at,
                               "Message": update.message,
                               **({"CompletedAt": update.completed_at}
                                  if update.completed_at else {})}
    if status is not None:
        out["ServiceStatus"] = status
    return out


def service_matches(service: ServiceRecord, filters: dict[str, list[str]]) -> bool:
    checks: dict[str, Callable[[str], bool]] = {
        "id": lambda v: service.id.startswith(v),
        "name": lambda v: service.name.startswith(v),
        "mode": lambda v: v == service.plan.mode.value,
    }
    for key, values in filters.items():
        if key == "label":
            if not labels_match(dict(service.labels), values):
                return False
        elif not any(checks[key](v) for v in values):
            return False
    return True


# -- tasks -------------------------------------------------------------------------------------


def encode_task(task: TaskRecord, *, pid: int = 0) -> dict[str, Any]:
    status: dict[str, Any] = {"Timestamp": task.state_at, "State": task.state.value,
                              "Message": task.message, "PortStatus": {}}
    if task.err:
        status["Err"] = task.err
    if task.container_id:
        container_status: dict[str, Any] = {"ContainerID": task.container_id, "PID": pid}
        if task.exit_code is not None:
            container_status["ExitCode"] = task.exit_code
        status["ContainerStatus"] = container_status
    out: dict[str, Any] = {
        "ID": task.id,
        "Version": {"Index": task.version},
        "CreatedAt": task.created_at,
        "UpdatedAt": task.updated_at,
        "Labels": {},
        "Spec": task.task_doc,
        "ServiceID": task.service_id,
        "NodeID": task.node_id,
        "Status": status,
        "DesiredState": task.desired.value,
    }
    if task.slot:
        out["Slot"] = task.slot
    return out


def check_desired_states(values: list[str]) -> None:
    for value in values:
        try:
            TaskState(value.lower())
        except ValueError:
            raise InvalidArgument(f"Invalid desired-state filter: '{value}'") from None


def task_matches(task: TaskRecord, name: str, filters: dict[str, list[str]],
                 generation: int | None, service_labels: dict[str, str] | None = None
                 ) -> bool:
    """`name`: the task's name (SERVICE.SLOT); `filters["service"]` holds service ids;
    `generation`: its service's (None: the service is gone); `label` matches its service's
    labels, as swarmkit's (`docker stack ps` filters by the stack's namespace label)."""
    checks: dict[str, Callable[[str], bool]] = {
        "id": lambda v: task.id.startswith(v),
        "name": lambda v: name.startswith(v),
        "service": lambda v: task.service_id == v,
        "node": lambda v: task.node_id == v,
        "desired-state": lambda v: task.desired.value == v.lower(),
        "_up-to-date": lambda v: generation is not None and task.generation == generation,
        "runtime": lambda v: v == "container",
    }
    for key, values in filters.items():
        if key == "label":
            if not labels_match(service_labels or {}, values):
                return False
        elif not any(checks[key](v) for v in values):
            return False
    return True
