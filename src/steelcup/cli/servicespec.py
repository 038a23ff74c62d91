"""Pure translation of `steelcup service create` flags into a ServiceSpec (the body of POST
/services/create), shaped as the docker CLI sends it, and the parsing of its composite flags
(--mount, --publish)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from steelcup.cli.createspec import (
    expand_env,
    health_config,
    parse_cpus,
    parse_duration,
    parse_labels,
    parse_memory,
)
from steelcup.errors import InvalidArgument

TYPE_CHECKING = False  # the CLI does not import typing at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any

RESTART_CONDITIONS = ("none", "on-failure", "any")
_TRUE = ("", "1", "true", "yes")


@dataclass
class ServiceOptions:
    image: str
    args: list[str] = field(default_factory=list)
    name: str = ""
    mode: str = "replicated"
    replicas: int | None = None
    env: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    container_labels: list[str] = field(default_factory=list)
    restart_condition: str = ""
    restart_delay: str = ""
    restart_max_attempts: int | None = None
    restart_window: str = ""
    health_cmd: str = ""
    health_interval: str = ""
    health_timeout: str = ""
    health_retries: int = 0
    health_start_period: str = ""
    no_healthcheck: bool = False
    limit_memory: str = ""
    limit_cpu: str = ""
    reserve_memory: str = ""
    reserve_cpu: str = ""
    mounts: list[str] = field(default_factory=list)
    publish: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    workdir: str = ""
    user: str = ""
    hostname: str = ""
    entrypoint: str | None = None
    stop_grace_period: str = ""
    stop_signal: str = ""
    tty: bool = False
    update_parallelism: int | None = None
    update_order: str = ""
    update_delay: str = ""
    update_failure_action: str = ""
    update_monitor: str = ""
    update_max_failure_ratio: float | None = None
    rollback_parallelism: int | None = None
    rollback_order: str = ""
    rollback_delay: str = ""
    rollback_failure_action: str = ""
    rollback_monitor: str = ""
    rollback_max_failure_ratio: float | None = None
    endpoint_mode: str = "vip"
    secrets: list[str] = field(default_factory=list)  # --secret source=,target=,uid=,gid=,mode=
    configs: list[str] = field(default_factory=list)  # --config, the same fields
    checkpointable: bool = False  # ContainerSpec.SteelcupCheckpointable
    auto_suspend: str = ""  # ContainerSpec.SteelcupAutoSuspend (a duration)


def service_spec(opts: ServiceOptions, environ: dict[str, str]) -> dict[str, Any]:
    """The ServiceSpec for `opts`; InvalidArgument naming the flag that is wrong."""
    if opts.mode not in ("replicated", "global"):
        raise InvalidArgument(f"invalid --mode {opts.mode!r}: replicated or global")
    if opts.mode == "global" and opts.replicas is not None:
        raise InvalidArgument("--replicas can only be used with replicated mode")
    container: dict[str, Any] = {"Image": opts.image}
    if opts.entrypoint is not None:
        container["Command"] = opts.entrypoint.split() if opts.entrypoint else []
    if opts.args:
        container["Args"] = list(opts.args)
    env = expand_env(opts.env, environ)
    if env:
        container["Env"] = env
    if opts.container_labels:
        container["Labels"] = parse_labels(opts.container_labels)
    for key, value in (("Dir", opts.workdir), ("User", opts.user),
                       ("Hostname", opts.hostname), ("StopSignal", opts.stop_signal)):
        if value:
            container[key] = value
    if opts.tty:
        container["TTY"] = True
    if opts.stop_grace_period:
        container["StopGracePeriod"] = parse_duration(opts.stop_grace_period,
                                                      "--stop-grace-period")
    health = health_config(cmd=opts.health_cmd, interval=opts.health_interval,
                           timeout=opts.health_timeout, start_period=opts.health_start_period,
                           retries=opts.health_retries, disabled=opts.no_healthcheck)
    if health is not None:
        container["Healthcheck"] = health
    if opts.mounts:
        container["Mounts"] = [parse_mount(m) for m in opts.mounts]
    container.update(suspend_fields(opts.checkpointable or None, opts.auto_suspend))
    task: dict[str, Any] = {"ContainerSpec": container,
                            "Resources": resources(opts), "ForceUpdate": 0}
    restart = restart_policy(opts)
    if restart:
        task["RestartPolicy"] = restart
    if opts.constraints:
        task["Placement"] = {"Constraints": list(opts.constraints)}
    if opts.networks:
        task["Networks"] = [{"Target": n} for n in opts.networks]
    spec: dict[str, Any] = {"Name": opts.name, "Labels": parse_labels(opts.labels),
                            "TaskTemplate": task}
    spec["Mode"] = ({"Global": {}} if opts.mode == "global" else
                    {"Replicated": {"Replicas": 1 if opts.replicas is None
                                    else opts.replicas}})
    update = roll_config("update", opts.update_parallelism, opts.update_order,
                         opts.update_delay, opts.update_failure_action, opts.update_monitor,
                         opts.update_max_failure_ratio)
    if update:
        spec["UpdateConfig"] = update
    rollback = roll_config("rollback", opts.rollback_parallelism, opts.rollback_order,
                           opts.rollback_delay, opts.rollback_failure_action,
                           opts.rollback_monitor, opts.rollback_max_failure_ratio)
    if rollback:
        spec["RollbackConfig"] = rollback
    if opts.secrets:
        container["Secrets"] = [file_reference("secret", text) for text in opts.secrets]
    if opts.configs:
        container["Configs"] = [file_reference("config", text) for text in opts.configs]
    endpoint: dict[str, Any] = {"Mode": opts.endpoint_mode}
    if opts.publish:
        endpoint["Ports"] = [parse_publish(p) for p in opts.publish]
    spec["EndpointSpec"] = endpoint
    return spec


def suspend_fields(checkpointable: bool | None, auto_suspend: str) -> dict[str, Any]:
    """ContainerSpec's SteelcupCheckpointable and SteelcupAutoSuspend (seconds) from
    --checkpointable / --no-checkpointable (None: neither) and --auto-suspend DURATION (""
    not given; 0 turns it off)."""
    out: dict[str, Any] = {}
    if checkpointable is not None:
        out["SteelcupCheckpointable"] = checkpointable
    if auto_suspend:
        idle_ns = parse_duration(auto_suspend, "--auto-suspend")
        out["SteelcupAutoSuspend"] = max(1, round(idle_ns / 1e9)) if idle_ns else 0
    return out


def roll_config(kind: str, parallelism: int | None, order: str, delay: str, action: str,
                monitor: str, ratio: float | None) -> dict[str, Any]:
    """UpdateConfig (kind "update") or RollbackConfig ("rollback") from the --KIND-* flags;
    a rollback's failure action is pause or continue."""
    out: dict[str, Any] = {}
    if parallelism is not None:
        out["Parallelism"] = parallelism
    if order:
        if order not in ("stop-first", "start-first"):
            raise InvalidArgument(f"invalid --{kind}-order {order!r}: stop-first or "
                                  "start-first")
        out["Order"] = order
    if delay:
        out["Delay"] = parse_duration(delay, f"--{kind}-delay")
    if action:
        actions = ("pause", "continue", "rollback") if kind == "update" else ("pause",
                                                                             "continue")
        if action not in actions:
            raise InvalidArgument(f"invalid --{kind}-failure-action {action!r}: "
                                  f"{' or '.join(actions)}")
        out["FailureAction"] = action
    if monitor:
        out["Monitor"] = parse_duration(monitor, f"--{kind}-monitor")
    if ratio is not None:
        if not 0 <= ratio <= 1:
            raise InvalidArgument(f"--{kind}-max-failure-ratio: a number from 0 to 1")
        out["MaxFailureRatio"] = ratio
    return out


def file_reference(kind: str, text: str) -> dict[str, Any]:
    """--secret / --config NAME or source=NAME[,target=T][,uid=U][,gid=G][,mode=0440] -> a
    SecretReference / ConfigReference by name (the daemon resolves it among the caller's).
    A secret's target defaults to its name (in /run/secrets), a config's to /NAME."""
    fields = dict(_csv_fields(text, f"--{kind}")) if "=" in text else {"source": text}
    unknown = set(fields) - {"source", "src", "target", "uid", "gid", "mode"}
    if unknown:
        raise InvalidArgument(f"--{kind} {text!r}: unsupported field {sorted(unknown)[0]!r} "
                              "(source, target, uid, gid, mode)")
    source = fields.get("source") or fields.get("src") or ""
    if not source:
        raise InvalidArgument(f"--{kind} {text!r}: source is required")
    mode_text = fields.get("mode") or "0444"
    try:
        mode = int(mode_text, 8)
    except ValueError:
        raise InvalidArgument(f"--{kind} {text!r}: mode {mode_text!r} is not octal") from None
    target = fields.get("target") or (source if kind == "secret" else f"/{source}")
    prefix = "Secret" if kind == "secret" else "Config"
    return {f"{prefix}ID": "", f"{prefix}Name": source,
            "File": {"Name": target, "UID": fields.get("uid") or "0",
                     "GID": fields.get("gid") or "0", "Mode": mode}}


def resources(opts: ServiceOptions) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    reservations: dict[str, Any] = {}
    if opts.limit_memory:
        limits["MemoryBytes"] = parse_memory(opts.limit_memory)
    if opts.limit_cpu:
        limits["NanoCPUs"] = parse_cpus(opts.limit_cpu)
    if opts.reserve_memory:
        reservations["MemoryBytes"] = parse_memory(opts.reserve_memory)
    if opts.reserve_cpu:
        reservations["NanoCPUs"] = parse_cpus(opts.reserve_cpu)
    return {"Limits": limits, "Reservations": reservations}


def restart_policy(opts: ServiceOptions) -> dict[str, Any]:
    policy: dict[str, Any] = {}
    if opts.restart_condition:
        if opts.restart_condition not in RESTART_CONDITIONS:
            raise InvalidArgument(f"invalid --restart-condition {opts.restart_condition!r}: "
                                  "none, on-failure or any")
        policy["Condition"] = opts.restart_condition
    if opts.restart_delay:
        policy["Delay"] = parse_duration(opts.restart_delay, "--restart-delay")
    if opts.restart_max_attempts is not None:
        if opts.restart_max_attempts < 0:
            raise InvalidArgument("--restart-max-attempts cannot be negative")
        policy["MaxAttempts"] = opts.restart_max_attempts
    if opts.restart_window:
        policy["Window"] = parse_duration(opts.restart_window, "--restart-window")
    return policy


def _csv_fields(text: str, flag: str) -> list[tuple[str, str]]:
    out = []
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not key:
            raise InvalidArgument(f"invalid {flag} {text!r}: empty field")
        out.append((key, value if sep else ""))
    return out


def parse_mount(text: str) -> dict[str, Any]:
    """--mount type=volume|bind|tmpfs,source=...,target=...[,readonly] -> a Mount."""
    mount: dict[str, Any] = {"Type": "volume"}
    for key, value in _csv_fields(text, "--mount"):
        if key == "type":
            mount["Type"] = value
        elif key in ("source", "src"):
            mount["Source"] = value
        elif key in ("target", "destination", "dst"):
            mount["Target"] = value
        elif key in ("readonly", "ro"):
            mount["ReadOnly"] = value.lower() in _TRUE
        else:
            raise InvalidArgument(f"--mount {text!r}: unsupported field {key!r} (type, "
                                  "source, target, readonly)")
    if not mount.get("Target"):
        raise InvalidArgument(f"--mount {text!r}: target is required")
    return mount


def parse_publish(text: str) -> dict[str, Any]:
    """-p PUBLISHED:TARGET[/PROTO] or published=,target=,protocol=,mode= -> a PortConfig."""
    port: dict[str, Any] = {"Protocol": "tcp", "PublishMode": "ingress"}
    if "=" in text:
        for key, value in _csv_fields(text, "--publish"):
            if key in ("published", "target"):
                port["PublishedPort" if key == "published" else "TargetPort"] = _port(
                    value, text)
            elif key == "protocol":
                port["Protocol"] = value
            elif key == "mode":
                port["PublishMode"] = value
            else:
                raise InvalidArgument(f"--publish {text!r}: unsupported field {key!r}")
    else:
        ports, _, proto = text.partition("/")
        published, sep, target = ports.rpartition(":")
        port["TargetPort"] = _port(target, text)
        if sep:
            port["PublishedPort"] = _port(published, text)
        if proto:
            port["Protocol"] = proto
    if "TargetPort" not in port:
        raise InvalidArgument(f"--publish {text!r}: the target port is required")
    return port


def _port(value: str, text: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidArgument(f"--publish {text!r}: {value!r} is not a port") from None
    if not 0 < number < 65536:
        raise InvalidArgument(f"--publish {text!r}: {number} is not a port")
    return number


def scale_targets(items: Sequence[str]) -> list[tuple[str, int]]:
    """`service scale web=3 api=1` -> [(service, replicas)]."""
    out = []
    for item in items:
        name, sep, count = item.partition("=")
        if not sep or not name or not count.isdigit():
            raise InvalidArgument(f"invalid scale specifier {item!r}: expected "
                                  "SERVICE=REPLICAS")
        out.append((name, int(count)))
    return out
