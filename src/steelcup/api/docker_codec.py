"""Docker Engine API JSON <-> runtime records. Docker's CamelCase keys live only here.

Decoding validates types and raises InvalidArgument with the offending key, so a malformed
request gets a 400 and never reaches the runtime.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from steelcup.errors import InvalidArgument
from steelcup.runtime.logs import parse_time_ns
from steelcup.runtime.model import ContainerConfig, ContainerRecord, ExecConfig, Status
from steelcup.runtime.spec import parse_mem_bytes

# -- decoding helpers ------------------------------------------------------------------------


def _get(body: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    if kind is int and isinstance(value, bool):
        raise InvalidArgument(f"{key}: expected an integer")
    if isinstance(value, float) and kind is int and value.is_integer():
        return int(value)
    if not isinstance(value, kind):
        raise InvalidArgument(f"{key}: expected {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", list: "a list",
             dict: "an object", float: "a number"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def _str_list(body: dict[str, Any], key: str, allow_str: bool = False) -> tuple[str, ...] | None:
    """A list of strings; docker also accepts a single string for Cmd/Entrypoint."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, str) and allow_str:
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{key}: expected a list of strings")
    return tuple(value)


def _str_map(body: dict[str, Any], key: str) -> dict[str, str]:
    value = _get(body, key, dict, {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidArgument(f"{key}: expected an object of strings")
    return dict(value)


def decode_create(body: Any) -> ContainerConfig:
    """POST /containers/create body -> ContainerConfig (image not resolved yet)."""
    if not isinstance(body, dict):
        raise InvalidArgument("request body must be a JSON object")
    image = _get(body, "Image", str, "")
    if not image:
        raise InvalidArgument("Config cannot be empty in order to create a container")
    host = _get(body, "HostConfig", dict, {})
    nano_cpus = _get(host, "NanoCpus", int, 0)
    if nano_cpus < 0:
        raise InvalidArgument("NanoCpus must not be negative")
    stop_timeout = body.get("StopTimeout")
    if stop_timeout is not None and (not isinstance(stop_timeout, int) or
                                     isinstance(stop_timeout, bool)):
        raise InvalidArgument("StopTimeout: expected an integer")
    return ContainerConfig(
        image=image,
        image_id="",
        entrypoint=_str_list(body, "Entrypoint", allow_str=True),
        cmd=_str_list(body, "Cmd", allow_str=True),
        env=_str_list(body, "Env") or (),
        working_dir=_get(body, "WorkingDir", str, ""),
        user=_get(body, "User", str, ""),
        hostname=_get(body, "Hostname", str, ""),
        tty=_get(body, "Tty", bool, False),
        open_stdin=_get(body, "OpenStdin", bool, False),
        stdin_once=_get(body, "StdinOnce", bool, False),
        attach_stdin=_get(body, "AttachStdin", bool, False),
        attach_stdout=_get(body, "AttachStdout", bool, True),
        attach_stderr=_get(body, "AttachStderr", bool, True),
        labels=tuple(sorted(_str_map(body, "Labels").items())),
        stop_signal=_get(body, "StopSignal", str, ""),
        stop_timeout_s=stop_timeout,
        auto_remove=_get(host, "AutoRemove", bool, False),
        mem_mib=parse_mem_bytes(_get(host, "Memory", int, 0)),
        cpus=nano_cpus / 1e9,
    )


def decode_exec(container_id: str, body: Any) -> ExecConfig:
    if not isinstance(body, dict):
        raise InvalidArgument("request body must be a JSON object")
    cmd = _str_list(body, "Cmd", allow_str=True)
    if not cmd:
        raise InvalidArgument("No exec command specified")
    return ExecConfig(
        container_id=container_id,
        cmd=cmd,
        env=_str_list(body, "Env") or (),
        working_dir=_get(body, "WorkingDir", str, ""),
        user=_get(body, "User", str, ""),
        tty=_get(body, "Tty", bool, False),
        attach_stdin=_get(body, "AttachStdin", bool, False),
        attach_stdout=_get(body, "AttachStdout", bool, True),
        attach_stderr=_get(body, "AttachStderr", bool, True),
    )


# -- encoding --------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """Docker's HumanDuration ("Less than a second", "5 seconds", "About a minute", ...)."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def _ts(text: str) -> float:
    return parse_time_ns(text) / 1e9


def status_text(record: ContainerRecord, now: float | None = None) -> str:
    """The STATUS column of `docker ps`."""
    now = time.time() if now is None else now
    state = record.state
    if state.status is Status.RUNNING:
        return f"Up {human_duration(now - _ts(state.started_at))}"
    if state.status is Status.PAUSED:
        return f"Up {human_duration(now - _ts(state.started_at))} (Paused)"
    if state.status is Status.EXITED:
        if state.finished_at.startswith("0001"):
            return "Created"
        return f"Exited ({state.exit_code}) {human_duration(now - _ts(state.finished_at))} ago"
    return str(state.status.value).capitalize()


def _command(record: ContainerRecord) -> str:
    return " ".join([record.path, *record.args])


def encode_summary(record: ContainerRecord) -> dict[str, Any]:
    """One entry of GET /containers/json."""
    config = record.config
    return {
        "Id": record.id,
        "Names": [f"/{record.name}"],
        "Image": config.image,
        "ImageID": config.image_id,
        "Command": _command(record),
        "Created": int(_ts(record.created)),
        "Ports": [],
        "Labels": dict(config.labels),
        "State": record.state.status.value,
        "Status": status_text(record),
        "HostConfig": {"NetworkMode": "default"},
        "NetworkSettings": {"Networks": {}},
        "Mounts": [],
    }


def encode_inspect(record: ContainerRecord, log_path: str) -> dict[str, Any]:
    """GET /containers/{id}/json."""
    config, state = record.config, record.state
    return {
        "Id": record.id,
        "Created": record.created,
        "Path": record.path,
        "Args": list(record.args),
        "State": {
            "Status": state.status.value,
            "Running": state.status in (Status.RUNNING, Status.PAUSED),
            "Paused": state.status is Status.PAUSED,
            "Restarting": state.status is Status.RESTARTING,
            "OOMKilled": state.oom_killed,
            "Dead": state.status is Status.DEAD,
            "Pid": state.pid,
            "ExitCode": state.exit_code,
            "Error": state.error,
            "StartedAt": state.started_at,
            "FinishedAt": state.finished_at,
        },
        "Image": config.image_id,
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": log_path,
        "Name": f"/{record.name}",
        "RestartCount": record.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": {
            "AutoRemove": config.auto_remove,
            "Memory": config.mem_mib << 20,
            "NanoCpus": int(config.cpus * 1e9),
            "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
            "NetworkMode": "default",
            "Binds": None,
            "PortBindings": {},
            "LogConfig": {"Type": "json-file", "Config": {}},
            "Runtime": "steelcup",
        },
        "GraphDriver": {"Name": "overlay", "Data": None},
        "Mounts": [],
        "Config": {
            "Hostname": config.hostname,
            "Domainname": "",
            "User": config.user,
            "AttachStdin": config.attach_stdin,
            "AttachStdout": config.attach_stdout,
            "AttachStderr": config.attach_stderr,
            "Tty": config.tty,
            "OpenStdin": config.open_stdin,
            "StdinOnce": config.stdin_once,
            "Env": list(config.env),
            "Cmd": list(config.cmd) if config.cmd is not None else None,
            "Image": config.image,
            "Volumes": None,
            "WorkingDir": config.working_dir,
            "Entrypoint": list(config.entrypoint) if config.entrypoint is not None else None,
            "OnBuild": None,
            "Labels": dict(config.labels),
            "StopSignal": config.stop_signal,
            "StopTimeout": config.stop_timeout_s,
        },
        "NetworkSettings": {"Bridge": "", "Ports": {}, "Networks": {}, "IPAddress": ""},
    }


# -- list filters ----------------------------------------------------------------------------

_FILTER_KEYS = {"id", "name", "label", "status", "ancestor", "exited", "before", "since"}


def decode_filters(text: str) -> dict[str, list[str]]:
    """Docker's `filters` query value: {"key": ["v", ...]} or the old {"key": {"v": true}}."""
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"invalid filters: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidArgument("invalid filters: expected an object")
    result: dict[str, list[str]] = {}
    for key, value in raw.items():
        if key not in _FILTER_KEYS:
            raise InvalidArgument(f"invalid filter '{key}'")
        if isinstance(value, dict):
            result[key] = [str(k) for k, v in value.items() if v]
        elif isinstance(value, list):
            result[key] = [str(v) for v in value]
        else:
            raise InvalidArgument(f"invalid filter '{key}'")
    return result


def matches(record: ContainerRecord, filters: dict[str, list[str]]) -> bool:
    """Every key must match; values of one key are alternatives (docker's semantics)."""
    checks: dict[str, Callable[[str], bool]] = {
        "id": lambda v: record.id.startswith(v),
        "name": lambda v: v.lstrip("/") in record.name,
        "status": lambda v: record.state.status.value == v,
        "ancestor": lambda v: v in (record.config.image, record.config.image_id)
        or record.config.image_id.startswith("sha256:" + v),
        "exited": lambda v: record.state.status is Status.EXITED
        and str(record.state.exit_code) == v,
        "label": lambda v: _label_match(record.config.labels, v),
    }
    for key, values in filters.items():
        check = checks.get(key)
        if check is not None and not any(check(v) for v in values):
            return False
    return True


def _label_match(labels: Iterable[tuple[str, str]], want: str) -> bool:
    key, sep, value = want.partition("=")
    found = dict(labels)
    return key in found and (not sep or found[key] == value)
