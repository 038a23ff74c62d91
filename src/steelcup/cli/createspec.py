"""Pure translation of `run`/`create`/`exec` flags into Docker Engine API request bodies."""

from __future__ import annotations

import re
from collections.abc import Sequence

from steelcup.errors import InvalidArgument

TYPE_CHECKING = False  # the CLI does not import typing at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_MEM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*$", re.IGNORECASE)


def parse_memory(text: str) -> int:
    """Docker's RAMInBytes: '512m', '1g', '1.5G', '1024' (bytes) -> bytes."""
    match = _MEM.match(text)
    if match is None:
        raise InvalidArgument(f"invalid size: {text!r}")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    return int(value)


def parse_cpus(text: str) -> int:
    """--cpus 1.5 -> NanoCpus."""
    try:
        value = float(text)
    except ValueError:
        raise InvalidArgument(f"invalid argument {text!r} for --cpus") from None
    if value < 0:
        raise InvalidArgument("--cpus must be positive")
    return int(round(value * 1e9))


def parse_key_values(values: Sequence[str], flag: str) -> dict[str, str]:
    """Repeated KEY=VALUE flags (--storage-opt, --log-opt) -> a map, as docker's CLI does."""
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"invalid {flag} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def parse_env_file(text: str, lookup: dict[str, str]) -> list[str]:
    """Docker's env-file format: KEY=VALUE lines, '#' comments, bare KEY taken from `lookup`."""
    out: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not key or any(c.isspace() for c in key):
            raise InvalidArgument(f"env file line {number}: variable {key!r} contains whitespace")
        if sep:
            out.append(f"{key}={value}")
        elif key in lookup:
            out.append(f"{key}={lookup[key]}")
    return out


def expand_env(values: Sequence[str], lookup: dict[str, str]) -> list[str]:
    """-e KEY=VAL as is; -e KEY takes KEY from the client's environment (dropped if unset)."""
    out: list[str] = []
    for item in values:
        if "=" in item:
            if item.startswith("="):
                raise InvalidArgument(f"invalid environment variable: {item}")
            out.append(item)
        elif item in lookup:
            out.append(f"{item}={lookup[item]}")
    return out


def parse_labels(values: Sequence[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in values:
        key, _, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"invalid label: {item!r}")
        labels[key] = value
    return labels


_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                   "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str, flag: str) -> int:
    """A Go duration as docker's flags take it ("30s", "1m30s", "500ms", "0") -> ns."""
    body = text.strip()
    sign = -1 if body.startswith("-") else 1
    body = body.lstrip("+-")
    if body == "0":
        return 0
    total, pos = 0.0, 0
    for match in _DURATION_PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise InvalidArgument(f"invalid argument {text!r} for {flag}: expected a duration "
                              "such as 30s, 1m30s or 500ms")
    return sign * int(round(total))


def health_config(*, cmd: str = "", interval: str = "", timeout: str = "",
                  start_period: str = "", start_interval: str = "", retries: int = 0,
                  disabled: bool = False) -> dict[str, Any] | None:
    """Config.Healthcheck for the --health-* flags and --no-healthcheck, as the docker CLI
    builds it (None: the image's)."""
    durations = {}
    for key, flag, value in (("Interval", "--health-interval", interval),
                             ("Timeout", "--health-timeout", timeout),
                             ("StartPeriod", "--health-start-period", start_period),
                             ("StartInterval", "--health-start-interval", start_interval)):
        durations[key] = parse_duration(value, flag) if value else 0
        if durations[key] < 0:
            raise InvalidArgument(f"{flag} cannot be negative")
    if retries < 0:
        raise InvalidArgument("--health-retries cannot be negative")
    any_setting = bool(cmd) or retries != 0 or any(durations.values())
    if disabled:
        if any_setting:
            raise InvalidArgument("--no-healthcheck conflicts with --health-* options")
        return {"Test": ["NONE"]}
    if not any_setting:
        return None
    return {"Test": ["CMD-SHELL", cmd] if cmd else None, **durations, "Retries": retries}


class ContainerOptions:
    """What `run`/`create` accept, already split from argv.

    A plain class rather than a dataclass: importing dataclasses (and inspect, ast, ...) would
    add ~20 ms to every `steelcup run`.
    """

    def __init__(
        self,
        image: str,
        *,
        command: Sequence[str] = (),
        detach: bool = False,
        interactive: bool = False,
        tty: bool = False,
        auto_remove: bool = False,
        name: str = "",
        env: Sequence[str] = (),
        workdir: str = "",
        user: str = "",
        entrypoint: str | None = None,
        hostname: str = "",
        cpus: str | None = None,
        memory: str | None = None,
        labels: Sequence[str] = (),
        stop_signal: str = "",
        attach: Sequence[str] = (),  # -a stdin|stdout|stderr (create/run)
        console_size: tuple[int, int] | None = None,  # (rows, cols) when -t on a terminal
        storage_opts: Sequence[str] = (),  # --storage-opt KEY=VAL
        log_driver: str = "",
        log_opts: Sequence[str] = (),  # --log-opt KEY=VAL
        cap_add: Sequence[str] = (),
        cap_drop: Sequence[str] = (),
        privileged: bool = False,
        read_only: bool = False,  # --read-only: HostConfig.ReadonlyRootfs
        add_hosts: Sequence[str] = (),  # --add-host NAME:IP
        dns: Sequence[str] = (),
        dns_search: Sequence[str] = (),
        dns_options: Sequence[str] = (),
        group_add: Sequence[str] = (),
        healthcheck: dict[str, Any] | None = None,  # Config.Healthcheck (health_config)
        checkpointable: bool = False,  # HostConfig.SteelcupCheckpointable
        auto_suspend: str = "",  # HostConfig.SteelcupAutoSuspend (a duration)
    ) -> None:
        self.image = image
        self.command = list(command)
        self.detach = detach
        self.interactive = interactive
        self.tty = tty
        self.auto_remove = auto_remove
        self.name = name
        self.env = list(env)
        self.workdir = workdir
        self.user = user
        self.entrypoint = entrypoint
        self.hostname = hostname
        self.cpus = cpus
        self.memory = memory
        self.labels = list(labels)
        self.stop_signal = stop_signal
        self.attach = list(attach)
        self.console_size = console_size
        self.storage_opts = list(storage_opts)
        self.log_driver = log_driver
        self.log_opts = list(log_opts)
        self.cap_add = list(cap_add)
        self.cap_drop = list(cap_drop)
        self.privileged = privileged
        self.read_only = read_only
        self.checkpointable = checkpointable
        self.auto_suspend = auto_suspend
        self.add_hosts = list(add_hosts)
        self.dns = list(dns)
        self.dns_search = list(dns_search)
        self.dns_options = list(dns_options)
        self.group_add = list(group_add)
        self.healthcheck = healthcheck


def create_body(opts: ContainerOptions, *, for_run: bool) -> dict[str, Any]:
    """The POST /containers/create body the docker CLI would send for these flags."""
    streams = {s.lower() for s in opts.attach}
    for stream in streams:
        if stream not in ("stdin", "stdout", "stderr"):
            raise InvalidArgument(
                f"invalid argument {stream!r} for -a: must be stdin, stdout or stderr"
            )
    if for_run and opts.detach and streams:
        raise InvalidArgument("conflicting options: cannot specify both --attach and --detach")
    attach_stdin = "stdin" in streams or opts.interactive
    attach_stdout = "stdout" in streams or not streams
    attach_stderr = "stderr" in streams or not streams
    stdin_once = False
    if for_run:
        if opts.detach:
            attach_stdin = attach_stdout = attach_stderr = False
        elif attach_stdin:
            stdin_once = True
    entrypoint: list[str] | None = None
    if opts.entrypoint is not None:
        entrypoint = [opts.entrypoint] if opts.entrypoint else [""]
    host_config: dict[str, Any] = {"AutoRemove": opts.auto_remove}
    if opts.memory is not None:
        host_config["Memory"] = parse_memory(opts.memory)
    if opts.cpus is not None:
        host_config["NanoCpus"] = parse_cpus(opts.cpus)
    if opts.console_size is not None and opts.tty:
        host_config["ConsoleSize"] = list(opts.console_size)
    if opts.storage_opts:
        host_config["StorageOpt"] = parse_key_values(opts.storage_opts, "--storage-opt")
    if opts.log_driver or opts.log_opts:
        host_config["LogConfig"] = {"Type": opts.log_driver,
                                    "Config": parse_key_values(opts.log_opts, "--log-opt")}
    # As given: the daemon validates the names and applies docker's rules (ALL, case, CAP_).
    if opts.cap_add:
        host_config["CapAdd"] = list(opts.cap_add)
    if opts.cap_drop:
        host_config["CapDrop"] = list(opts.cap_drop)
    if opts.privileged:
        host_config["Privileged"] = True
    if opts.read_only:
        host_config["ReadonlyRootfs"] = True
    if opts.checkpointable:
        host_config["SteelcupCheckpointable"] = True
    if opts.auto_suspend:
        idle_ns = parse_duration(opts.auto_suspend, "--auto-suspend")
        host_config["SteelcupAutoSuspend"] = max(1, round(idle_ns / 1e9)) if idle_ns else 0
    for key, values in (("ExtraHosts", opts.add_hosts), ("Dns", opts.dns),
                        ("DnsSearch", opts.dns_search), ("DnsOptions", opts.dns_options),
                        ("GroupAdd", opts.group_add)):
        if values:
            host_config[key] = list(values)
    body: dict[str, Any] = {
        "Hostname": opts.hostname,
        "Domainname": "",
        "User": opts.user,
        "AttachStdin": attach_stdin,
        "AttachStdout": attach_stdout,
        "AttachStderr": attach_stderr,
        "Tty": opts.tty,
        "OpenStdin": opts.interactive,
        "StdinOnce": stdin_once,
        "Env": list(opts.env),
        "Cmd": list(opts.command) or None,
        "Image": opts.image,
        "Volumes": {},
        "WorkingDir": opts.workdir,
        "Entrypoint": entrypoint,
        "OnBuild": None,
        "Labels": parse_labels(opts.labels),
        "HostConfig": host_config,
        "NetworkingConfig": {"EndpointsConfig": {}},
    }
    if opts.stop_signal:
        body["StopSignal"] = opts.stop_signal
    if opts.healthcheck is not None:
        body["Healthcheck"] = opts.healthcheck
    return body


def exec_body(
    command: Sequence[str],
    *,
    detach: bool,
    interactive: bool,
    tty: bool,
    env: Sequence[str] = (),
    workdir: str = "",
    user: str = "",
    console_size: tuple[int, int] | None = None,
    privileged: bool = False,
) -> dict[str, Any]:
    """The POST /containers/{id}/exec body of `docker exec`."""
    if not command:
        raise InvalidArgument("exec needs a command to run")
    body: dict[str, Any] = {
        "User": user,
        "Privileged": privileged,
        "Tty": tty,
        "AttachStdin": interactive and not detach,
        "AttachStdout": not detach,
        "AttachStderr": not detach,
        "Detach": detach,
        "DetachKeys": "",
        "Env": list(env),
        "WorkingDir": workdir,
        "Cmd": list(command),
    }
    if console_size is not None and tty:
        body["ConsoleSize"] = list(console_size)
    return body
