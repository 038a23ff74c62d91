"""Pure translation of a compose file into a stack: the networks to create and the
ServiceSpecs to create or update, as `docker stack deploy` makes them (names prefixed with
the stack's, the `com.docker.stack.namespace` label, each service known on its networks by
its short name). Every key steelcup cannot honour is refused naming it
(`services.web.cap_add`); the keys docker's own stack deploy ignores are warned about by
name. docs/services.md lists both."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field

from steelcup.cli.servicespec import ServiceOptions, service_spec
from steelcup.errors import InvalidArgument

TYPE_CHECKING = False  # the CLI does not import typing at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any

NAMESPACE = "com.docker.stack.namespace"
TOP_KEYS = frozenset({"version", "name", "services", "networks", "volumes", "secrets",
                      "configs"})
SERVICE_KEYS = frozenset({"image", "command", "entrypoint", "environment", "env_file", "ports",
                          "volumes", "networks", "deploy", "healthcheck", "labels",
                          "working_dir", "user", "hostname", "stop_grace_period",
                          "stop_signal", "tty", "secrets", "configs"})
# What docker's stack deploy itself ignores (it says so): warned about, not refused.
IGNORED_SERVICE_KEYS = ("build", "container_name", "depends_on", "links", "restart")
DEPLOY_KEYS = frozenset({"mode", "replicas", "update_config", "rollback_config",
                         "restart_policy", "resources", "labels", "endpoint_mode", "placement"})
ROLL_KEYS = frozenset({"parallelism", "delay", "order", "failure_action", "monitor",
                       "max_failure_ratio"})
OBJECT_KEYS = frozenset({"file", "external", "name", "labels"})
FILE_REF_KEYS = frozenset({"source", "target", "uid", "gid", "mode"})
NETWORK_KEYS = frozenset({"driver", "attachable", "labels", "external", "name"})
VOLUME_KEYS = frozenset({"driver", "labels", "external", "name"})
_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|"
                  r"([A-Za-z_][A-Za-z0-9_]*))")


@dataclass
class StackPlan:
    networks: list[dict[str, Any]] = field(default_factory=list)  # network create bodies
    services: list[dict[str, Any]] = field(default_factory=list)  # ServiceSpecs
    # Secrets and configs to create: {"kind", "Name", "Labels", "file" (its path)}
    objects: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def interpolate(value: Any, environ: dict[str, str]) -> Any:
    """Compose's variable substitution in every string: $VAR, ${VAR}, ${VAR:-default},
    ${VAR-default}; $$ is a literal $."""
    if isinstance(value, str):
        def one(match: re.Match[str]) -> str:
            if match.group(1):
                return "$"
            name = match.group(2) or match.group(5)
            have = environ.get(name)
            op = match.group(3)
            if op == ":-" and not have or op == "-" and have is None:
                return str(match.group(4))
            return have or ""
        return _VAR.sub(one, value)
    if isinstance(value, list):
        return [interpolate(v, environ) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, environ) for k, v in value.items()}
    return value


def _check_keys(obj: Any, allowed: frozenset[str], where: str) -> dict[str, Any]:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise InvalidArgument(f"{where}: expected a mapping")
    for key in obj:
        if key not in allowed and not str(key).startswith("x-"):
            raise InvalidArgument(f"{where}.{key} is not supported by steelcup stacks "
                                  f"(supported: {', '.join(sorted(allowed))})")
    return obj


def _str_map(value: Any, where: str) -> dict[str, str]:
    """A compose mapping or a list of KEY=VALUE."""
    if value is None:
        return {}
    if isinstance(value, list):
        out = {}
        for item in value:
            key, _, val = str(item).partition("=")
            out[key] = val
        return out
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    raise InvalidArgument(f"{where}: expected a mapping or a list of KEY=VALUE")


def _words(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, list):
        return [str(v) for v in value]
    raise InvalidArgument(f"{where}: expected a string or a list")


def _duration(value: Any) -> str:
    return f"{value}s" if isinstance(value, int | float) else str(value)


def stack_plan(doc: Any, stack: str, environ: dict[str, str], base_dir: str,
               read_file: Any = None) -> StackPlan:
    """The networks and services of compose document `doc` deployed as `stack`.
    `read_file(path) -> str` reads env_files (relative to `base_dir`)."""
    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", stack):
        raise InvalidArgument(f"invalid stack name {stack!r}")
    doc = interpolate(_check_keys(doc, TOP_KEYS, "compose file"), environ)
    services = _check_keys(doc.get("services"), frozenset(doc.get("services") or {}),
                           "services")
    if not services:
        raise InvalidArgument("compose file: no services")
    plan = StackPlan()
    networks = _networks(doc.get("networks"), stack, plan)
    volumes = _volumes(doc.get("volumes"), stack)
    objects = {kind: _objects(doc.get(f"{kind}s"), kind, stack, base_dir, plan)
               for kind in ("secret", "config")}
    used_default = False
    for name, svc in services.items():
        spec, uses_default = _service(name, svc, stack, networks, volumes, environ,
                                      base_dir, read_file, plan)
        container = spec["TaskTemplate"]["ContainerSpec"]
        for kind in ("secret", "config"):
            refs = [_file_ref(kind, ref, objects[kind], f"services.{name}.{kind}s")
                    for ref in (svc or {}).get(f"{kind}s") or []]
            if refs:
                container[f"{kind.capitalize()}s"] = refs
        used_default |= uses_default
        plan.services.append(spec)
    if used_default and "default" not in networks:
        plan.networks.append({"Name": f"{stack}_default", "Driver": "overlay",
                              "Labels": {NAMESPACE: stack}})
    return plan


def _networks(top: Any, stack: str, plan: StackPlan) -> dict[str, str]:
    """Top-level networks: name in the file -> the network's name; the stack's own are
    planned for creation."""
    out: dict[str, str] = {}
    for name, net in _check_keys(top, frozenset(top or {}), "networks").items():
        net = _check_keys(net, NETWORK_KEYS, f"networks.{name}")
        if net.get("external"):
            out[name] = str(net.get("name") or name)
            continue
        driver = net.get("driver") or "overlay"
        if driver not in ("overlay", "bridge"):
            raise InvalidArgument(f"networks.{name}.driver {driver!r} is not supported "
                                  "(overlay or bridge)")
        full = str(net.get("name") or f"{stack}_{name}")
        out[name] = full
        plan.networks.append({"Name": full, "Driver": driver,
                              "Attachable": bool(net.get("attachable")),
                              "Labels": {**_str_map(net.get("labels"),
                                                    f"networks.{name}.labels"),
                                         NAMESPACE: stack}})
    return out


def _objects(top: Any, kind: str, stack: str, base_dir: str, plan: StackPlan
             ) -> dict[str, str]:
    """Top-level secrets or configs: name in the file -> the object's name; those read
    from a `file:` are planned for creation (as STACK_NAME, labelled with the stack)."""
    out: dict[str, str] = {}
    where = f"{kind}s"
    for name, obj in _check_keys(top, frozenset(top or {}), where).items():
        obj = _check_keys(obj, OBJECT_KEYS, f"{where}.{name}")
        if obj.get("external"):
            out[name] = str(obj.get("name") or name)
            continue
        if not obj.get("file"):
            raise InvalidArgument(f"{where}.{name}: `file:` or `external: true` is needed "
                                  "(steelcup stacks read secrets and configs from files)")
        full = str(obj.get("name") or f"{stack}_{name}")
        out[name] = full
        plan.objects.append({
            "kind": kind, "Name": full,
            "Labels": {**_str_map(obj.get("labels"), f"{where}.{name}.labels"),
                       NAMESPACE: stack},
            "file": os.path.normpath(os.path.join(base_dir, os.path.expanduser(
                str(obj["file"]))))})
    return out


def _file_ref(kind: str, value: Any, declared: dict[str, str], where: str
              ) -> dict[str, Any]:
    """A service's secret or config (short: its name; long: source, target, uid, gid, mode)
    as a reference by name; the target defaults to the name (a config's to /NAME)."""
    ref = {"source": value} if isinstance(value, str) else _check_keys(
        value, FILE_REF_KEYS, f"{where}[]")
    source = str(ref.get("source") or "")
    if source not in declared:
        raise InvalidArgument(f"{where}: {kind} {source!r} is not declared in the top-level "
                              f"{kind}s")
    target = str(ref.get("target") or (source if kind == "secret" else f"/{source}"))
    mode = ref.get("mode", 0o444)
    if isinstance(mode, str):
        try:
            mode = int(mode, 8)
        except ValueError:
            raise InvalidArgument(f"{where}: mode {mode!r} is not octal") from None
    prefix = kind.capitalize()
    return {f"{prefix}ID": "", f"{prefix}Name": declared[source],
            "File": {"Name": target, "UID": str(ref.get("uid") or "0"),
                     "GID": str(ref.get("gid") or "0"), "Mode": int(mode)}}


def _volumes(top: Any, stack: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, vol in _check_keys(top, frozenset(top or {}), "volumes").items():
        vol = _check_keys(vol, VOLUME_KEYS, f"volumes.{name}")
        if (vol.get("driver") or "local") != "local":
            raise InvalidArgument(f"volumes.{name}.driver {vol['driver']!r} is not supported "
                                  "(local)")
        out[name] = str(vol.get("name") or (name if vol.get("external")
                                            else f"{stack}_{name}"))
    return out


def _service(name: str, svc: Any, stack: str, networks: dict[str, str],
             volumes: dict[str, str], environ: dict[str, str], base_dir: str,
             read_file: Any, plan: StackPlan) -> tuple[dict[str, Any], bool]:
    where = f"services.{name}"
    ignored = [k for k in IGNORED_SERVICE_KEYS if k in (svc or {})]
    if ignored:
        plan.warnings.append(f"Ignoring unsupported options of {where}: {', '.join(ignored)}")
    svc = {k: v for k, v in (svc or {}).items() if k not in IGNORED_SERVICE_KEYS}
    svc = _check_keys(svc, SERVICE_KEYS, where)
    if not svc.get("image"):
        raise InvalidArgument(f"{where}.image is required (steelcup stacks do not build)")
    deploy = _check_keys(svc.get("deploy"), DEPLOY_KEYS, f"{where}.deploy")
    opts = ServiceOptions(image=str(svc["image"]), name=f"{stack}_{name}")
    if svc.get("command") is not None:
        opts.args = _words(svc["command"], f"{where}.command")
    env: dict[str, str] = {}
    env_files = svc.get("env_file") or []
    for env_file in [env_files] if isinstance(env_files, str) else _words(
            env_files, f"{where}.env_file"):
        if read_file is None:
            raise InvalidArgument(f"{where}.env_file: no file reader")
        text = read_file(os.path.join(base_dir, env_file))
        env.update(_str_map([line for line in text.splitlines()
                             if line.strip() and not line.lstrip().startswith("#")],
                            f"{where}.env_file"))
    env.update(_str_map(svc.get("environment"), f"{where}.environment"))
    opts.env = [f"{k}={v}" for k, v in env.items()]
    opts.container_labels = [f"{k}={v}" for k, v in {
        **_str_map(svc.get("labels"), f"{where}.labels"), NAMESPACE: stack}.items()]
    opts.labels = [f"{k}={v}" for k, v in {
        **_str_map(deploy.get("labels"), f"{where}.deploy.labels"), NAMESPACE: stack}.items()]
    for key, attr in (("working_dir", "workdir"), ("user", "user"), ("hostname", "hostname"),
                      ("stop_signal", "stop_signal")):
        if svc.get(key):
            setattr(opts, attr, str(svc[key]))
    if svc.get("stop_grace_period"):
        opts.stop_grace_period = _duration(svc["stop_grace_period"])
    opts.tty = bool(svc.get("tty"))
    _healthcheck(svc.get("healthcheck"), opts, where)
    _deploy(deploy, opts, where)
    opts.publish = [_port(p, where) for p in svc.get("ports") or []]
    opts.mounts = [_mount(v, volumes, base_dir, where) for v in svc.get("volumes") or []]
    spec = service_spec(opts, environ)
    if svc.get("entrypoint") is not None:
        spec["TaskTemplate"]["ContainerSpec"]["Command"] = _words(svc["entrypoint"],
                                                                  f"{where}.entrypoint")
    attachments, uses_default = _attachments(svc.get("networks"), name, stack, networks,
                                             where)
    spec["TaskTemplate"]["Networks"] = attachments
    return spec, uses_default


def _attachments(value: Any, name: str, stack: str, networks: dict[str, str], where: str
                 ) -> tuple[list[dict[str, Any]], bool]:
    if value is None:
        return [{"Target": networks.get("default", f"{stack}_default"),
                 "Aliases": [name]}], "default" not in networks
    items = value if isinstance(value, dict) else {n: None for n in _words(value, where)}
    out = []
    for net, config in items.items():
        if net not in networks and net != "default":
            raise InvalidArgument(f"{where}.networks: network {net!r} is not declared in the "
                                  "top-level networks")
        config = _check_keys(config, frozenset({"aliases"}), f"{where}.networks.{net}")
        aliases = [name, *_words(config.get("aliases") or [], f"{where}.networks.{net}")]
        out.append({"Target": networks.get(net, f"{stack}_default"), "Aliases": aliases})
    return out, any(n == "default" and n not in networks for n in items)


def _healthcheck(value: Any, opts: ServiceOptions, where: str) -> None:
    check = _check_keys(value, frozenset({"test", "interval", "timeout", "retries",
                                          "start_period", "disable"}), f"{where}.healthcheck")
    if not check:
        return
    test = check.get("test")
    if check.get("disable") or test in (["NONE"], "NONE"):
        opts.no_healthcheck = True
        return
    if isinstance(test, list):
        if not test or test[0] not in ("CMD", "CMD-SHELL"):
            raise InvalidArgument(f"{where}.healthcheck.test: [CMD, ...], [CMD-SHELL, cmd] "
                                  "or a string")
        opts.health_cmd = (str(test[1]) if test[0] == "CMD-SHELL"
                           else shlex.join(str(t) for t in test[1:]))
    elif test:
        opts.health_cmd = str(test)
    for key, attr in (("interval", "health_interval"), ("timeout", "health_timeout"),
                      ("start_period", "health_start_period")):
        if check.get(key) is not None:
            setattr(opts, attr, _duration(check[key]))
    if check.get("retries") is not None:
        opts.health_retries = int(check["retries"])


def _deploy(deploy: dict[str, Any], opts: ServiceOptions, where: str) -> None:
    where = f"{where}.deploy"
    opts.mode = str(deploy.get("mode") or "replicated")
    if deploy.get("replicas") is not None:
        opts.replicas = int(deploy["replicas"])
    if deploy.get("endpoint_mode"):
        opts.endpoint_mode = str(deploy["endpoint_mode"])
    for kind in ("update", "rollback"):
        roll = _check_keys(deploy.get(f"{kind}_config"), ROLL_KEYS, f"{where}.{kind}_config")
        if roll.get("parallelism") is not None:
            setattr(opts, f"{kind}_parallelism", int(roll["parallelism"]))
        for key in ("delay", "monitor"):
            if roll.get(key) is not None:
                setattr(opts, f"{kind}_{key}", _duration(roll[key]))
        setattr(opts, f"{kind}_order", str(roll.get("order") or ""))
        setattr(opts, f"{kind}_failure_action", str(roll.get("failure_action") or ""))
        if roll.get("max_failure_ratio") is not None:
            setattr(opts, f"{kind}_max_failure_ratio", float(roll["max_failure_ratio"]))
    restart = _check_keys(deploy.get("restart_policy"), frozenset({
        "condition", "delay", "max_attempts", "window"}), f"{where}.restart_policy")
    opts.restart_condition = str(restart.get("condition") or "")
    for key, attr in (("delay", "restart_delay"), ("window", "restart_window")):
        if restart.get(key) is not None:
            setattr(opts, attr, _duration(restart[key]))
    if restart.get("max_attempts") is not None:
        opts.restart_max_attempts = int(restart["max_attempts"])
    resources = _check_keys(deploy.get("resources"), frozenset({"limits", "reservations"}),
                            f"{where}.resources")
    for kind, prefix in (("limits", "limit"), ("reservations", "reserve")):
        part = _check_keys(resources.get(kind), frozenset({"cpus", "memory"}),
                           f"{where}.resources.{kind}")
        if part.get("cpus") is not None:
            setattr(opts, f"{prefix}_cpu", str(part["cpus"]))
        if part.get("memory") is not None:
            setattr(opts, f"{prefix}_memory", str(part["memory"]))
    placement = _check_keys(deploy.get("placement"), frozenset({"constraints"}),
                            f"{where}.placement")
    opts.constraints = [str(c) for c in placement.get("constraints") or []]


def _port(value: Any, where: str) -> str:
    """A compose port (short or long syntax) as a --publish value."""
    if isinstance(value, dict):
        port = _check_keys(value, frozenset({"target", "published", "protocol", "mode"}),
                           f"{where}.ports[]")
        text = ",".join(f"{k}={v}" for k, v in port.items())
    else:
        text = str(value)
    if "-" in text.split("/")[0]:
        raise InvalidArgument(f"{where}.ports: port ranges ({text!r}) are not supported")
    return text


def _mount(value: Any, volumes: dict[str, str], base_dir: str, where: str) -> str:
    """A compose volume (short `SOURCE:TARGET[:ro]` or long syntax) as a --mount value."""
    if isinstance(value, dict):
        vol = _check_keys(value, frozenset({"type", "source", "target", "read_only"}),
                          f"{where}.volumes[]")
        kind, source = str(vol.get("type") or "volume"), str(vol.get("source") or "")
        target, read_only = str(vol.get("target") or ""), bool(vol.get("read_only"))
    else:
        parts = str(value).split(":")
        if len(parts) == 1:
            kind, source, target, read_only = "volume", "", parts[0], False
        else:
            source, target = parts[0], parts[1]
            mode = parts[2] if len(parts) > 2 else "rw"
            if mode not in ("ro", "rw"):
                raise InvalidArgument(f"{where}.volumes: mode {mode!r} (ro or rw)")
            read_only = mode == "ro"
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
    if kind == "bind":
        source = os.path.normpath(os.path.join(base_dir, os.path.expanduser(source)))
    elif kind == "volume" and source:
        if source not in volumes:
            raise InvalidArgument(f"{where}.volumes: volume {source!r} is not declared in "
                                  "the top-level volumes")
        source = volumes[source]
    elif kind not in ("volume", "tmpfs"):
        raise InvalidArgument(f"{where}.volumes: type {kind!r} (volume, bind or tmpfs)")
    fields = [f"type={kind}", f"target={target}"]
    if source:
        fields.insert(1, f"source={source}")
    if read_only:
        fields.append("readonly")
    return ",".join(fields)
