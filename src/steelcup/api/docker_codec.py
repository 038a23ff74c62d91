"""Docker Engine API JSON <-> runtime records. Docker's CamelCase keys live only here.

Decoding validates types and raises InvalidArgument with the offending key, so a malformed
request gets a 400 and never reaches the runtime.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from steelcup import boundedfs
from steelcup.api.detach_keys import parse_detach_keys
from steelcup.api.filters import parse_filters
from steelcup.cgroups import paths as cgroup_paths
from steelcup.errors import InvalidArgument, NotFound, Unsupported
from steelcup.humanize import human_duration
from steelcup.image.config import HealthConfig
from steelcup.runtime import healthcheck as health_rules
from steelcup.runtime.autosuspend import parse_idle
from steelcup.runtime.healthcheck import HealthState, HealthStatus
from steelcup.runtime.logs import format_time_ns, parse_time_ns
from steelcup.runtime.model import (
    HOST_GATEWAY,
    ContainerConfig,
    ContainerRecord,
    ContainerState,
    ExecConfig,
    NetView,
    Status,
)
from steelcup.runtime.spec import parse_mem_bytes
from steelcup.runtime.vmstats import VmSample

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


def _ip(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise InvalidArgument(f"{what}: {text!r} is not an IP address") from None


def _words(values: Iterable[str], what: str) -> tuple[str, ...]:
    for value in values:
        if not value or any(c.isspace() for c in value):
            raise InvalidArgument(f"{what}: {value!r} must be one word")
    return tuple(values)


def decode_extra_hosts(entries: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """docker's --add-host NAME:IP (or NAME=IP; IPv6 may be bracketed); IP may be
    host-gateway."""
    out = []
    for entry in entries:
        name, sep, address = entry.partition("=") if "=" in entry else entry.partition(":")
        if not sep or not name or any(c.isspace() for c in name):
            raise InvalidArgument(f"HostConfig.ExtraHosts: bad entry {entry!r} (NAME:IP)")
        address = address if address == HOST_GATEWAY else _ip(address, "HostConfig.ExtraHosts")
        out.append((name, address))
    return tuple(out)


def decode_links(entries: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """docker's --link NAME[:ALIAS] (also `/NAME:/CONTAINER/ALIAS`, as inspect shows them)
    -> (linked container's name, alias) pairs."""
    out = []
    for entry in entries:
        parts = entry.split(":")
        if not entry or len(parts) > 2:
            raise InvalidArgument(f"HostConfig.Links: bad format for links: {entry!r} "
                                  "(NAME:ALIAS)")
        name, alias = (parts[0], parts[-1]) if len(parts) == 2 else (entry, entry)
        name, alias = name.lstrip("/"), alias.rsplit("/", 1)[-1]
        if not name or not alias or any(c.isspace() or c == "/" for c in name + alias):
            raise InvalidArgument(f"HostConfig.Links: bad link {entry!r} (NAME:ALIAS)")
        out.append((name, alias))
    return tuple(out)


def decode_shm_size(host: dict[str, Any]) -> int:
    """HostConfig.ShmSize in bytes (0 = the default)."""
    size = _get(host, "ShmSize", int, 0)
    if size < 0:
        raise InvalidArgument("SHM size can not be less than 0")
    return int(size)


# dockerd's namespaced sysctls (what runc lets a container set): the VM's own here too.
SYSCTLS_ALLOWED = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                             "kernel.shmall", "kernel.shmmax", "kernel.shmmni",
                             "kernel.shm_rmid_forced"})
SYSCTL_PREFIXES_ALLOWED = ("fs.mqueue.", "net.")
_SYSCTL_KEY = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+")
ULIMIT_NAMES = frozenset({"as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue",
                          "nice", "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending",
                          "stack"})
PIDS_LIMIT_MAX = 0xFFFFFFFF


def decode_sysctls(host: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """HostConfig.Sysctls -> (key, value) pairs, docker's namespaced ones only."""
    out = []
    for key, value in sorted(_str_map(host, "Sysctls").items()):
        if not _SYSCTL_KEY.fullmatch(key):
            raise InvalidArgument(f"HostConfig.Sysctls: bad sysctl name {key!r} (dotted, "
                                  "e.g. net.core.somaxconn)")
        if key not in SYSCTLS_ALLOWED and not key.startswith(SYSCTL_PREFIXES_ALLOWED):
            raise InvalidArgument(f"HostConfig.Sysctls: sysctl '{key}' is not allowed (only "
                                  "docker's namespaced ones: kernel.msg*, kernel.sem, "
                                  "kernel.shm*, fs.mqueue.*, net.*)")
        if not value or "\n" in value or "\x00" in value:
            raise InvalidArgument(f"HostConfig.Sysctls: bad value for {key}: {value!r}")
        out.append((key, value))
    return tuple(out)


def decode_ulimits(host: dict[str, Any]) -> tuple[tuple[str, int, int], ...]:
    """HostConfig.Ulimits ([{Name, Soft, Hard}]) -> (name, soft, hard), -1 = unlimited."""
    entries = _get(host, "Ulimits", list, [])
    out: dict[str, tuple[str, int, int]] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise InvalidArgument("HostConfig.Ulimits: expected a list of objects")
        name = _get(entry, "Name", str, "")
        soft, hard = _get(entry, "Soft", int, 0), _get(entry, "Hard", int, 0)
        if name not in ULIMIT_NAMES:
            raise InvalidArgument(f"HostConfig.Ulimits: invalid ulimit type: {name!r}")
        for value in (soft, hard):
            if value < -1 or value >= 1 << 63:
                raise InvalidArgument(f"HostConfig.Ulimits: bad {name} limit {value} (a "
                                      "number, -1 for unlimited)")
        unlimited = 1 << 64  # -1 compares above every number
        if (unlimited if soft == -1 else soft) > (unlimited if hard == -1 else hard):
            raise InvalidArgument(f"HostConfig.Ulimits: ulimit soft limit must be less than "
                                  f"or equal to hard limit: {soft} > {hard} ({name})")
        out[name] = (name, soft, hard)  # the last one of a name wins, as in dockerd
    return tuple(out.values())


def decode_pids_limit(host: dict[str, Any]) -> int:
    """HostConfig.PidsLimit: > 0 a limit; 0, -1 (or any negative, as dockerd) none."""
    limit = _get(host, "PidsLimit", int, 0)
    if limit > PIDS_LIMIT_MAX:
        raise InvalidArgument(f"HostConfig.PidsLimit: at most {PIDS_LIMIT_MAX}")
    return max(int(limit), 0)


# -- HostConfig: every field the API defines, and what steelcup does with it -----------------
#
# No setting is accepted and ignored. Each HostConfig field (Engine API 1.43, Resources
# included) is one of:
#   applied  - decoded into ContainerConfig and acted on;
#   always   - what every VM does anyway (its own PID/IPC/cgroup namespaces, an init as PID 1):
#              the values asking for that are accepted, any other value is refused;
#   shown    - recorded and shown by inspect, with no effect on a VM;
#   client   - for the client (dockerd does not act on it either);
#   refused  - any value but the empty one is refused with a 400 naming the field.
# docs/api-settings.md is the same table for people; tests/unit/api/test_api_settings.py
# walks both, so a field cannot drift back to "accepted and ignored".


@dataclass(frozen=True)
class Setting:
    status: str  # applied | always | shown | client | refused
    note: str
    accepted: tuple[Any, ...] = ()  # `always`/`refused`: values accepted besides empty ones


_NOT_YET = "not applied yet"
HOST_SETTINGS: dict[str, Setting] = {
    "Binds": Setting("applied", "volumes and host paths, shared into the VM"),
    "ContainerIDFile": Setting("client", "the docker CLI writes the file; dockerd ignores it"),
    "LogConfig": Setting("applied", "json-file with max-size and max-file; other drivers and "
                                    "options are refused"),
    "NetworkMode": Setting("applied", "default/bridge, none or a network; host and "
                                      "container:ID are refused"),
    "PortBindings": Setting("applied", "published on the host"),
    "RestartPolicy": Setting("applied", "no, always, on-failure[:N], unless-stopped"),
    "AutoRemove": Setting("applied", "removed when it exits"),
    "VolumeDriver": Setting("always", "only the local volume driver exists", ("local",)),
    "VolumesFrom": Setting("refused", _NOT_YET + ": name the volumes with -v/--mount"),
    "Mounts": Setting("applied", "bind, volume and tmpfs; propagation other than "
                                 "(r)private, Subpath, non-recursive binds and tmpfs Options "
                                 "are refused"),
    "ConsoleSize": Setting("client", "the CLI sizes the TTY through /resize once attached, "
                                     "which is applied"),
    "Annotations": Setting("refused", "OCI annotations have no runtime to read them"),
    "CapAdd": Setting("applied", "capabilities of the container's processes in the guest"),
    "CapDrop": Setting("applied", "capabilities of the container's processes in the guest"),
    "CgroupnsMode": Setting("always", "a VM has its own cgroup namespace; host is refused",
                            ("private",)),
    "Dns": Setting("applied", "nameservers in the guest's resolv.conf, after its network's"),
    "DnsOptions": Setting("applied", "options in the guest's resolv.conf"),
    "DnsSearch": Setting("applied", "search domains in the guest's resolv.conf"),
    "ExtraHosts": Setting("applied", "lines of the guest's /etc/hosts (NAME:IP, IP may be "
                                     "host-gateway)"),
    "GroupAdd": Setting("applied", "supplementary groups of the container's processes "
                                   "(names of its /etc/group or gids)"),
    "IpcMode": Setting("always", "a VM has its own IPC namespace; host and container:ID are "
                                 "refused", ("private", "shareable")),
    "Cgroup": Setting("refused", "a VM has its own cgroups"),
    "Links": Setting("applied", "/etc/hosts lines naming a running container it shares a "
                                "network with (no link environment variables)"),
    "OomScoreAdj": Setting("refused", "the host's OOM killer sees the VM, not its processes"),
    "PidMode": Setting("refused", "a VM has its own PID namespace"),
    "Privileged": Setting("applied", "all capabilities in the guest; never host access"),
    "PublishAllPorts": Setting("applied", "every exposed port on a free host port"),
    "ReadonlyRootfs": Setting("applied", "the rootfs is mounted read-only in the guest"),
    "SecurityOpt": Setting("refused", "seccomp, AppArmor and SELinux profiles are not applied "
                                      "inside the guest; the VM is the boundary"),
    "StorageOpt": Setting("applied", "size of the writable layer"),
    "Tmpfs": Setting("applied", "tmpfs mounts in the guest"),
    "UTSMode": Setting("refused", "a VM has its own hostname"),
    "UsernsMode": Setting("refused", "the VM's ids are mapped by steelcup"),
    "ShmSize": Setting("applied", "size of the guest's /dev/shm tmpfs (default: the kernel's, "
                                  "half the VM's memory)"),
    "Sysctls": Setting("applied", "written in the guest before the process starts; docker's "
                                  "namespaced ones only (kernel.msg*, kernel.sem, kernel.shm*, "
                                  "fs.mqueue.*, net.*)"),
    "Runtime": Setting("always", "every container is a steelcup VM", ("steelcup",)),
    "Isolation": Setting("always", "every container is isolated as a VM", ("default",)),
    "MaskedPaths": Setting("refused", "the guest's /proc and /sys are the VM's own"),
    "ReadonlyPaths": Setting("refused", "the guest's /proc and /sys are the VM's own"),
    # Resources
    "CpuShares": Setting("shown", "recorded; a VM's vCPUs are its CPU limit"),
    "Memory": Setting("applied", "the VM's RAM"),
    "CgroupParent": Setting("refused", "QEMU's cgroup is steelcup's"),
    "BlkioWeight": Setting("refused", "block I/O limits are not applied"),
    "BlkioWeightDevice": Setting("refused", "block I/O limits are not applied"),
    "BlkioDeviceReadBps": Setting("refused", "block I/O limits are not applied"),
    "BlkioDeviceWriteBps": Setting("refused", "block I/O limits are not applied"),
    "BlkioDeviceReadIOps": Setting("refused", "block I/O limits are not applied"),
    "BlkioDeviceWriteIOps": Setting("refused", "block I/O limits are not applied"),
    "CpuPeriod": Setting("refused", "use NanoCpus (--cpus): the VM's vCPUs"),
    "CpuQuota": Setting("refused", "use NanoCpus (--cpus): the VM's vCPUs"),
    "CpuRealtimePeriod": Setting("refused", "no real-time scheduling for VMs"),
    "CpuRealtimeRuntime": Setting("refused", "no real-time scheduling for VMs"),
    "CpusetCpus": Setting("refused", "vCPUs are not pinned to host CPUs"),
    "CpusetMems": Setting("refused", "guest memory is not pinned to host NUMA nodes"),
    "Devices": Setting("refused", "host devices are not passed into VMs"),
    "DeviceCgroupRules": Setting("refused", "host devices are not passed into VMs"),
    "DeviceRequests": Setting("refused", "host devices (GPUs) are not passed into VMs"),
    "KernelMemoryTCP": Setting("refused", "the guest kernel's memory is the VM's"),
    "MemoryReservation": Setting("refused", "a VM's memory is reserved whole"),
    "MemorySwap": Setting("always", "a VM has no swap: 0, or equal to Memory"),
    "MemorySwappiness": Setting("always", "a VM has no swap", (-1,)),
    "NanoCpus": Setting("applied", "the VM's vCPUs"),
    "OomKillDisable": Setting("refused", "the guest kernel's OOM killer is the VM's"),
    "Init": Setting("always", "steelcup's init is PID 1 of every VM, reaping zombies and "
                              "forwarding signals (false asks for dockerd's default: the same)",
                    (True,)),
    "PidsLimit": Setting("applied", "a pids cgroup in the guest for the container's processes "
                                    "(execs included); 0 or -1: none"),
    "Ulimits": Setting("applied", "rlimits of the container's processes (execs included)"),
    "CpuCount": Setting("refused", "Windows only"),
    "CpuPercent": Setting("refused", "Windows only"),
    "IOMaximumIOps": Setting("refused", "Windows only"),
    "IOMaximumBandwidth": Setting("refused", "Windows only"),
}

# NetworkingConfig.EndpointsConfig.*: settings refused unless empty (Aliases and IPAMConfig are
# decoded in decode_networking; the rest are dockerd's output fields, which it ignores too).
ENDPOINT_REFUSED: dict[str, str] = {
    "MacAddress": _NOT_YET + ": steelcup chooses each NIC's MAC",
    "DriverOpts": "the bridge driver takes no endpoint options",
    "GwPriority": _NOT_YET,
}
IPAM_REFUSED: dict[str, str] = {
    "IPv6Address": "IPv6 networks are not supported",
    "LinkLocalIPs": _NOT_YET,
}


def _empty(value: Any) -> bool:
    return value is None or value in ("", 0, False, [], {}) and value is not True


def check_host_settings(host: dict[str, Any]) -> None:
    """Refuse, naming it, every HostConfig setting steelcup would otherwise not honour."""
    for key, value in host.items():
        setting = HOST_SETTINGS.get(key)
        if setting is None:
            if not _empty(value):
                raise InvalidArgument(f"HostConfig.{key} is not a setting steelcup knows; it "
                                      "is refused rather than ignored")
            continue
        if setting.status not in ("refused", "always") or _empty(value):
            continue
        if key == "MemorySwap" and value == host.get("Memory"):
            continue
        if key == "ConsoleSize" or any(value == a and type(value) is type(a)
                                       for a in setting.accepted):
            continue
        raise InvalidArgument(f"HostConfig.{key}={json.dumps(value)} is not supported by "
                              f"steelcup ({setting.note})")


def check_endpoint_settings(body: dict[str, Any]) -> None:
    """Refuse the endpoint settings of NetworkingConfig that steelcup would not honour."""
    networking = body.get("NetworkingConfig")
    endpoints = networking.get("EndpointsConfig") if isinstance(networking, dict) else None
    if not isinstance(endpoints, dict):
        return
    for name, endpoint in endpoints.items():
        if not isinstance(endpoint, dict):
            continue
        for key, why in ENDPOINT_REFUSED.items():
            if not _empty(endpoint.get(key)):
                raise InvalidArgument(f"EndpointsConfig.{name}.{key} is not supported by "
                                      f"steelcup ({why})")
        parse_links(endpoint.get("Links"), f"EndpointsConfig.{name}")
        ipam = endpoint.get("IPAMConfig")
        for key, why in IPAM_REFUSED.items():
            if isinstance(ipam, dict) and not _empty(ipam.get(key)):
                raise InvalidArgument(f"EndpointsConfig.{name}.IPAMConfig.{key} is not "
                                      f"supported by steelcup ({why})")


def decode_create(body: Any) -> ContainerConfig:
    """POST /containers/create body -> ContainerConfig (image not resolved yet)."""
    if not isinstance(body, dict):
        raise InvalidArgument("request body must be a JSON object")
    image = _get(body, "Image", str, "")
    host = dict(_get(body, "HostConfig", dict, {}))
    # steelcup's own field, not docker's (so not in HOST_SETTINGS): a host directory as the
    # root, for steelcup-runtime; the runtime refuses it to tenants (docs/oci-runtime.md).
    rootfs_dir = _get(host, "SteelcupRootfs", str, "")
    host.pop("SteelcupRootfs", None)
    if rootfs_dir and not rootfs_dir.startswith("/"):
        raise InvalidArgument(f"HostConfig.SteelcupRootfs must be an absolute path, not "
                              f"{rootfs_dir!r}")
    if not image and not rootfs_dir:
        raise InvalidArgument("Config cannot be empty in order to create a container")
    # steelcup's own as well (steelcup-runtime's pods; the runtime refuses them to tenants)
    pod_sandbox = _get(host, "SteelcupPodSandbox", bool, False)
    pod_of = _get(host, "SteelcupPodOf", str, "")
    host.pop("SteelcupPodSandbox", None)
    host.pop("SteelcupPodOf", None)
    # and a netns of the engine's for the VM's NIC (steelcup-runtime; operator only as well)
    netns_path = _get(host, "SteelcupNetns", str, "")
    host.pop("SteelcupNetns", None)
    if netns_path and not netns_path.startswith("/"):
        raise InvalidArgument(f"HostConfig.SteelcupNetns must be an absolute path, not "
                              f"{netns_path!r}")
    # steelcup's own, for anyone: the root in guest RAM, so the VM can be checkpointed
    checkpointable = _get(host, "SteelcupCheckpointable", bool, False)
    host.pop("SteelcupCheckpointable", None)
    # ... and suspended when idle that long (seconds, or a duration such as "5m")
    auto_suspend_s = parse_idle(host.pop("SteelcupAutoSuspend", 0) or 0,
                                "HostConfig.SteelcupAutoSuspend")
    # and the container's cgroup on the host, which the VM's QEMU joins (operator only)
    cgroup_path = _get(host, "SteelcupCgroup", str, "")
    host.pop("SteelcupCgroup", None)
    if cgroup_path:
        cgroup_path = cgroup_paths.validate(cgroup_path)
    check_host_settings(host)
    check_endpoint_settings(body)
    if body.get("MacAddress"):  # where clients before API 1.44 put --mac-address
        raise InvalidArgument("MacAddress is not supported by steelcup (" +
                              ENDPOINT_REFUSED["MacAddress"] + ")")
    nano_cpus = _get(host, "NanoCpus", int, 0)
    if nano_cpus < 0:
        raise InvalidArgument("NanoCpus must not be negative")
    policy, retries = decode_restart_policy(host)
    cpu_shares = _get(host, "CpuShares", int, 0)
    if cpu_shares < 0:
        raise InvalidArgument("CpuShares must not be negative")
    network_mode = _get(host, "NetworkMode", str, "")
    healthcheck = decode_healthcheck(body)
    for key in ("Binds", "Links", "Dns", "DnsSearch", "ExtraHosts", "CapAdd", "CapDrop"):
        _str_list(host, key)
    for key in ("PortBindings", "LogConfig", "RestartPolicy"):
        _get(host, key, dict, {})
    mounts = _get(host, "Mounts", list, [])
    if not all(isinstance(m, dict) for m in mounts):
        raise InvalidArgument("HostConfig.Mounts: expected a list of objects")
    port_bindings = _get(host, "PortBindings", dict, {})
    log_max_bytes, log_max_files = decode_log_config(host)
    aliases, extra_networks, network_ipv4 = decode_networking(body, network_mode)
    auto_remove = _get(host, "AutoRemove", bool, False)
    if auto_remove and policy != "no":
        raise InvalidArgument("conflicting options: AutoRemove and restart policy "
                              f"{policy!r} (can't create 'AutoRemove' container with restart "
                              "policy)")
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
        auto_remove=auto_remove,
        mem_mib=parse_mem_bytes(_get(host, "Memory", int, 0)),
        cpus=nano_cpus / 1e9,
        cpu_shares=cpu_shares,
        restart_policy=policy,
        restart_max_retries=retries,
        network_mode=network_mode,
        network_aliases=aliases,
        extra_networks=extra_networks,
        network_ipv4=network_ipv4,
        exposed_ports=tuple(sorted(_get(body, "ExposedPorts", dict, {}))),
        port_bindings=json.dumps(port_bindings) if port_bindings else "",
        publish_all_ports=_get(host, "PublishAllPorts", bool, False),
        binds=_str_list(host, "Binds") or (),
        mounts=tuple(mounts),
        tmpfs=tuple(sorted(_str_map(host, "Tmpfs").items())),
        volumes=tuple(sorted(_get(body, "Volumes", dict, {}))),
        storage_bytes=decode_storage_opt(host),
        log_max_bytes=log_max_bytes,
        log_max_files=log_max_files,
        cap_add=_str_list(host, "CapAdd") or (),
        cap_drop=_str_list(host, "CapDrop") or (),
        extra_hosts=decode_extra_hosts(_str_list(host, "ExtraHosts") or ()),
        dns=tuple(_ip(a, "HostConfig.Dns") for a in _str_list(host, "Dns") or ()),
        dns_search=_words(_str_list(host, "DnsSearch") or (), "HostConfig.DnsSearch"),
        dns_options=_words(_str_list(host, "DnsOptions") or (), "HostConfig.DnsOptions"),
        group_add=_words(_str_list(host, "GroupAdd") or (), "HostConfig.GroupAdd"),
        privileged=_get(host, "Privileged", bool, False),
        read_only=_get(host, "ReadonlyRootfs", bool, False),
        shm_size_bytes=decode_shm_size(host),
        links=decode_links(_str_list(host, "Links") or ()),
        sysctls=decode_sysctls(host),
        ulimits=decode_ulimits(host),
        pids_limit=decode_pids_limit(host),
        healthcheck=healthcheck,
        rootfs_dir=rootfs_dir,
        pod_sandbox=pod_sandbox,
        pod_of=pod_of,
        netns_path=netns_path,
        checkpointable=checkpointable,
        auto_suspend_s=auto_suspend_s,
        cgroup_path=cgroup_path,
    )


def decode_healthcheck(body: dict[str, Any]) -> HealthConfig | None:
    """Config.Healthcheck, refused as dockerd refuses it (None: the image's, if any)."""
    value = body.get("Healthcheck")
    if value is None:
        return None
    try:
        config = HealthConfig.from_dict(value)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    health_rules.validate(config)
    return config


def decode_log_config(host: dict[str, Any]) -> tuple[int, int]:
    """HostConfig.LogConfig (json-file only) -> log_max_bytes, log_max_files (0 = default)."""
    value = _get(host, "LogConfig", dict, {})
    kind = _get(value, "Type", str, "")
    if kind not in ("", "json-file"):
        raise InvalidArgument(f"logging driver {kind!r} is not supported (steelcup keeps "
                              "json-file logs)")
    options = _str_map(value, "Config")
    for key in options:
        if key in ("labels", "labels-regex", "env", "env-regex", "tag", "compress"):
            raise InvalidArgument(f"log opt '{key}' is not supported by steelcup (only "
                                  "max-size and max-file)")
        if key not in ("max-size", "max-file"):
            raise InvalidArgument(f"unknown log opt '{key}' for json-file log driver")
    max_bytes = max_files = 0
    if options.get("max-size"):
        max_bytes = boundedfs.parse_size(options["max-size"])
        if max_bytes <= 0:
            raise InvalidArgument("max-size must be a positive size (logs are always capped)")
    if options.get("max-file"):
        text = options["max-file"]
        if not text.isdigit() or int(text) < 1:
            raise InvalidArgument(f"max-file must be a number of at least 1, got {text!r}")
        max_files = int(text)
    return max_bytes, max_files


def decode_storage_opt(host: dict[str, Any]) -> int:
    """HostConfig.StorageOpt -> the writable layer's size in bytes (0 = daemon default)."""
    options = _str_map(host, "StorageOpt")
    for key in options:
        if key.lower() != "size":
            raise InvalidArgument(f"unknown storage option {key!r} (supported: size)")
    size = next((v for k, v in options.items() if k.lower() == "size"), "")
    return boundedfs.check_size(boundedfs.parse_size(size)) if size else 0


def decode_networking(
    body: dict[str, Any], network_mode: str
) -> tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...], tuple[tuple[str, str], ...]]:
    """NetworkingConfig.EndpointsConfig -> (aliases on the primary network, other networks,
    static IPv4 addresses by network; the primary's under `network_mode or "default"`)."""
    networking = _get(body, "NetworkingConfig", dict, {})
    endpoints = _get(networking, "EndpointsConfig", dict, {})
    primary = network_mode or "default"
    aliases: tuple[str, ...] = ()
    extra: list[tuple[str, tuple[str, ...]]] = []
    addresses: list[tuple[str, str]] = []
    for name, endpoint in endpoints.items():
        if endpoint is None:
            endpoint = {}
        if not isinstance(endpoint, dict):
            raise InvalidArgument(f"EndpointsConfig.{name}: expected an object")
        names = _str_list(endpoint, "Aliases") or ()
        ipam = _get(endpoint, "IPAMConfig", dict, {})
        address = _get(ipam, "IPv4Address", str, "")
        is_primary = name == primary or (primary in ("default", "bridge")
                                         and name in ("default", "bridge"))
        if is_primary:
            aliases = names
        else:
            extra.append((name, names))
        if address:
            addresses.append((primary if is_primary else name, address))
    return aliases, tuple(extra), tuple(addresses)


def parse_links(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    """An endpoint's `Links` (["TARGET:ALIAS" or "TARGET"]) -> ((target, alias), ...)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidArgument(f"{where}.Links must be an array of NAME[:ALIAS] strings")
    out = []
    for item in value:
        target, _, alias = item.partition(":")
        out.append((target.lstrip("/"), (alias or target).lstrip("/")))
    return tuple(out)


def endpoint_links(body: dict[str, Any]) -> dict[str, tuple[tuple[str, str], ...]]:
    """NetworkingConfig.EndpointsConfig.*.Links of a create body, by network name."""
    networking = body.get("NetworkingConfig")
    endpoints = networking.get("EndpointsConfig") if isinstance(networking, dict) else None
    if not isinstance(endpoints, dict):
        return {}
    return {name: links for name, ep in endpoints.items() if isinstance(ep, dict)
            if (links := parse_links(ep.get("Links"), f"EndpointsConfig.{name}"))}


def decode_restart_policy(host: dict[str, Any]) -> tuple[str, int]:
    """HostConfig.RestartPolicy -> (name, maximum retry count); "" means "no"."""
    value = _get(host, "RestartPolicy", dict, {})
    name = _get(value, "Name", str, "") or "no"
    retries = _get(value, "MaximumRetryCount", int, 0)
    if name not in ("no", "always", "on-failure", "unless-stopped"):
        raise InvalidArgument(f"invalid restart policy: {name!r}")
    if retries < 0 or (retries and name != "on-failure"):
        raise InvalidArgument("invalid restart policy: maximum retry count can only be used "
                              "with 'on-failure' and can't be negative")
    return name, retries


def decode_update(body: Any) -> dict[str, Any]:
    """POST /containers/{id}/update -> keyword arguments of Runtime.update."""
    if not isinstance(body, dict):
        raise InvalidArgument("request body must be a JSON object")
    known = {"RestartPolicy", "Memory", "NanoCpus", "CpuShares", "MemorySwap",
             "MemoryReservation", "CpuPeriod", "CpuQuota", "CpusetCpus", "CpusetMems",
             "BlkioWeight", "KernelMemory", "PidsLimit", "CpuRealtimePeriod",
             "CpuRealtimeRuntime", "OomKillDisable", "Ulimits", "Devices", "BlkioWeightDevice",
             "BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps",
             "BlkioDeviceWriteIOps", "DeviceRequests", "DeviceCgroupRules", "MemorySwappiness",
             "KernelMemoryTCP", "CgroupParent", "CpuCount", "CpuPercent", "IOMaximumIOps",
             "IOMaximumBandwidth", "Init", "DiskQuota", "NanoCPUs"}
    unsupported = [k for k, v in body.items()
                   if k in known and k not in ("RestartPolicy", "Memory", "NanoCpus", "CpuShares")
                   and v not in (None, 0, "", [], {}, False)]
    if unsupported:
        raise Unsupported(f"steelcup cannot update {', '.join(sorted(unsupported))} "
                          "(only RestartPolicy, Memory, NanoCpus and CpuShares)")
    changes: dict[str, Any] = {}
    if body.get("RestartPolicy") is not None:
        changes["restart_policy"] = decode_restart_policy(body)
    memory = _get(body, "Memory", int, 0)
    if memory:
        changes["mem_mib"] = parse_mem_bytes(memory)
    nano_cpus = _get(body, "NanoCpus", int, 0)
    if nano_cpus < 0:
        raise InvalidArgument("NanoCpus must not be negative")
    if nano_cpus:
        changes["cpus"] = nano_cpus / 1e9
    shares = _get(body, "CpuShares", int, 0)
    if shares < 0:
        raise InvalidArgument("CpuShares must not be negative")
    if shares:
        changes["cpu_shares"] = shares
    return changes


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
        privileged=_get(body, "Privileged", bool, False),
        # docker-py spells it detachKeys; dockerd's JSON decoding ignores case
        detach_keys=parse_detach_keys(_get(body, "DetachKeys", str, "")
                                      or _get(body, "detachKeys", str, "")),
    )


# -- encoding --------------------------------------------------------------------------------


def _ts(text: str) -> float:
    return parse_time_ns(text) / 1e9


def shown_status(state: ContainerState) -> Status:
    """The status clients are shown: a suspended container is running to them (its VM runs
    on when they use it; docs/checkpoints.md)."""
    return Status.RUNNING if state.suspended else state.status


def status_text(record: ContainerRecord, now: float | None = None) -> str:
    """The STATUS column of `docker ps`."""
    now = time.time() if now is None else now
    state = record.state
    if state.suspended:
        return f"Up {human_duration(now - _ts(state.started_at))} (suspended)"
    if state.status is Status.RUNNING:
        up = f"Up {human_duration(now - _ts(state.started_at))}"
        if state.health is None:
            return up
        if state.health.status is HealthStatus.STARTING:
            return f"{up} (health: starting)"
        return f"{up} ({state.health.status.value})"
    if state.status is Status.PAUSED:
        return f"Up {human_duration(now - _ts(state.started_at))} (Paused)"
    if state.status is Status.RESTARTING:
        return (f"Restarting ({state.exit_code}) "
                f"{human_duration(now - _ts(state.finished_at))} ago")
    if state.status is Status.EXITED:
        if state.finished_at.startswith("0001"):
            return "Created"
        return f"Exited ({state.exit_code}) {human_duration(now - _ts(state.finished_at))} ago"
    if state.status is Status.REMOVING:
        return "Removal In Progress"
    return str(state.status.value).capitalize()


def _command(record: ContainerRecord) -> str:
    return " ".join([record.path, *record.args])


def encode_summary(record: ContainerRecord, net: NetView | None = None) -> dict[str, Any]:
    """One entry of GET /containers/json: what `docker ps` shows, ports included."""
    config = record.config
    net = net or NetView()
    return {
        "Id": record.id,
        "Names": [f"/{record.name}"],
        "Image": config.image,
        "ImageID": config.image_id,
        "Command": _command(record),
        "Created": int(_ts(record.created)),
        "Ports": _summary_ports(record, net),
        "Labels": dict(config.labels),
        "State": shown_status(record.state).value,
        "Status": status_text(record),
        "HostConfig": {"NetworkMode": config.network_mode or "default"},
        "NetworkSettings": {"Networks": _endpoints(record, net)},
        "Mounts": encode_mounts(config),
    }


def _summary_ports(record: ContainerRecord, net: NetView) -> list[dict[str, Any]]:
    """dockerd's list entries: each published port, and the exposed ones nothing publishes
    (those only while the container runs, as dockerd clears its ports at stop)."""
    out: list[dict[str, Any]] = [
        {"IP": p.host_ip or "0.0.0.0", "PrivatePort": p.container_port,
         "PublicPort": p.host_port, "Type": p.proto}
        for p in net.ports
    ]
    if record.state.running:
        published = {(p.container_port, p.proto) for p in net.ports}
        for spec in record.config.exposed_ports:
            port, _, proto = spec.partition("/")
            if port.isdigit() and (int(port), proto or "tcp") not in published:
                out.append({"PrivatePort": int(port), "Type": proto or "tcp"})
    return out


def encode_mounts(config: ContainerConfig) -> list[dict[str, Any]]:
    """Docker's `Mounts` entries from the container's resolved mount plans."""
    out = []
    for plan in config.mount_plans:
        kind = str(plan.get("kind", ""))
        entry: dict[str, Any] = {
            "Type": kind,
            "Destination": plan.get("target", ""),
            "Mode": "ro" if plan.get("readonly") else "",
            "RW": not plan.get("readonly"),
            "Propagation": "",
        }
        if kind == "volume":
            entry.update(Name=plan.get("source", ""), Driver="local", Source="")
        else:
            entry["Source"] = plan.get("source", "")
        if kind == "bind":
            # what a VM's bind is (nothing propagates between host and guest), and dockerd's
            # default
            entry["Propagation"] = "rprivate"
        out.append(entry)
    return out


def encode_inspect(
    record: ContainerRecord, log_path: str, net: NetView | None = None
) -> dict[str, Any]:
    """GET /containers/{id}/json."""
    config, state = record.config, record.state
    return {
        "Id": record.id,
        "Created": record.created,
        "Path": record.path,
        "Args": list(record.args),
        "State": {
            "Status": shown_status(state).value,
            "Running": shown_status(state) in (Status.RUNNING, Status.PAUSED,
                                               Status.RESTARTING),
            "SteelcupSuspended": state.suspended,
            "Paused": state.status is Status.PAUSED,
            "Restarting": state.status is Status.RESTARTING,
            "OOMKilled": state.oom_killed,
            "Dead": state.status is Status.DEAD,
            "Pid": state.pid,
            "ExitCode": state.exit_code,
            "Error": state.error,
            "StartedAt": state.started_at,
            "FinishedAt": state.finished_at,
            **({"Health": encode_health(state.health)} if state.health is not None else {}),
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
            "RestartPolicy": {"Name": config.restart_policy,
                              "MaximumRetryCount": config.restart_max_retries},
            "CpuShares": config.cpu_shares,
            "NetworkMode": config.network_mode or "default",
            "Binds": list(config.binds) or None,
            "PortBindings": json.loads(config.port_bindings) if config.port_bindings else {},
            "PublishAllPorts": config.publish_all_ports,
            "Tmpfs": dict(config.tmpfs) or None,
            "StorageOpt": {"size": str(config.storage_bytes)} if config.storage_bytes else None,
            "LogConfig": {"Type": "json-file", "Config": {
                key: str(value) for key, value in (("max-size", config.log_max_bytes),
                                                   ("max-file", config.log_max_files)) if value
            }},
            "CapAdd": list(config.cap_add) or None,
            "CapDrop": list(config.cap_drop) or None,
            "ExtraHosts": [f"{h}:{a}" for h, a in config.extra_hosts] or None,
            "Dns": list(config.dns),
            "DnsSearch": list(config.dns_search),
            "DnsOptions": list(config.dns_options),
            "GroupAdd": list(config.group_add) or None,
            "Privileged": config.privileged,
            "ReadonlyRootfs": config.read_only,
            "ShmSize": config.shm_size_bytes,
            "Links": [f"/{name}:/{record.name}/{alias}" for name, alias in config.links] or None,
            "Sysctls": dict(config.sysctls) or None,
            "Ulimits": [{"Name": n, "Soft": s, "Hard": h} for n, s, h in config.ulimits] or None,
            "PidsLimit": config.pids_limit or None,
            "Runtime": "steelcup",
            # steelcup's own, only when set (a container of steelcup-runtime's)
            **({"SteelcupRootfs": config.rootfs_dir} if config.rootfs_dir else {}),
            **({"SteelcupPodSandbox": True} if config.pod_sandbox else {}),
            **({"SteelcupPodOf": config.pod_of} if config.pod_of else {}),
            **({"SteelcupNetns": config.netns_path} if config.netns_path else {}),
            **({"SteelcupCheckpointable": True} if config.checkpointable else {}),
            **({"SteelcupAutoSuspend": config.auto_suspend_s} if config.auto_suspend_s else {}),
            **({"SteelcupCgroup": config.cgroup_path} if config.cgroup_path else {}),
        },
        "GraphDriver": {"Name": "overlay", "Data": None},
        "Mounts": encode_mounts(config),
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
            "Volumes": {v: {} for v in config.volumes} or None,
            "ExposedPorts": {p: {} for p in config.exposed_ports} or None,
            "WorkingDir": config.working_dir,
            "Entrypoint": list(config.entrypoint) if config.entrypoint is not None else None,
            "OnBuild": None,
            "Labels": dict(config.labels),
            "StopSignal": config.stop_signal,
            "StopTimeout": config.stop_timeout_s,
            **({"Healthcheck": config.healthcheck.to_dict()} if config.healthcheck else {}),
        },
        "NetworkSettings": _network_settings(record, net or NetView()),
    }


def encode_health(health: HealthState) -> dict[str, Any]:
    """State.Health of inspect."""
    return {
        "Status": health.status.value,
        "FailingStreak": health.failing_streak,
        "Log": [{"Start": r.start, "End": r.end, "ExitCode": r.exit_code, "Output": r.output}
                for r in health.log],
    }


def health_word(record: ContainerRecord) -> str:
    """What the `health` filter matches: starting, healthy, unhealthy or none."""
    health = record.state.health
    return "none" if health is None else health.status.value


def _endpoints(record: ContainerRecord, net: NetView) -> dict[str, Any]:
    """`NetworkSettings.Networks`, alike in inspect and list."""
    return {
        ep.network_name: {
            "NetworkID": ep.network_id,
            "EndpointID": ep.endpoint_id,
            "Gateway": ep.gateway,
            "IPAddress": ep.address,
            "IPPrefixLen": ep.prefix_len,
            "MacAddress": ep.mac,
            "Aliases": list(ep.aliases) or None,
            "IPAMConfig": {"IPv4Address": ep.static_ipv4} if ep.static_ipv4 else None,
            "DNSNames": [record.name, record.id[:12], *ep.aliases],
        }
        for ep in net.endpoints
    }


def _network_settings(record: ContainerRecord, net: NetView) -> dict[str, Any]:
    networks = _endpoints(record, net)
    ports: dict[str, list[dict[str, str]] | None] = {p: None for p in
                                                     record.config.exposed_ports}
    for pub in net.ports:
        entries = ports.get(f"{pub.container_port}/{pub.proto}") or []
        entries.append({"HostIp": pub.host_ip or "0.0.0.0", "HostPort": str(pub.host_port)})
        ports[f"{pub.container_port}/{pub.proto}"] = entries
    primary = net.endpoints[0] if net.endpoints else None
    return {
        "Bridge": "",
        "SandboxID": "",
        "Ports": ports,
        "Networks": networks,
        "IPAddress": primary.address if primary else "",
        "IPPrefixLen": primary.prefix_len if primary else 0,
        "Gateway": primary.gateway if primary else "",
        "MacAddress": primary.mac if primary else "",
    }


# -- list filters ----------------------------------------------------------------------------

CONTAINER_FILTERS = frozenset({
    "ancestor", "before", "expose", "exited", "health", "id", "isolation", "is-task", "label",
    "name", "network", "publish", "since", "status", "volume",
})
_STATUSES = {s.value for s in Status}
_HEALTH = {"starting", "healthy", "unhealthy", "none"}


def decode_filters(text: str, valid: frozenset[str] = CONTAINER_FILTERS) -> dict[str, list[str]]:
    """Docker's `filters` query value: {"key": ["v", ...]} or the old {"key": {"v": true}}."""
    result = parse_filters(text, valid)
    for value in result.get("status", []):
        if value not in _STATUSES:
            raise InvalidArgument(f"invalid filter 'status={value}'")
    for value in result.get("health", []):
        if value not in _HEALTH:
            raise InvalidArgument(f"invalid filter 'health={value}'")
    for value in result.get("is-task", []):
        if value not in ("true", "false"):
            raise InvalidArgument(f"invalid filter 'is-task={value}'")
    for value in result.get("exited", []):
        if not value.lstrip("-").isdigit():
            raise InvalidArgument(f"invalid filter 'exited={value}'")
    return result


def _name_match(pattern: str, name: str) -> bool:
    """Docker matches `name` as a regular expression against "/name"."""
    try:
        return re.search(pattern, "/" + name) is not None
    except re.error:
        return pattern.lstrip("/") in name


def _find(records: Sequence[ContainerRecord], ref: str) -> ContainerRecord:
    for record in records:
        if record.id == ref or record.name == ref.lstrip("/"):
            return record
    found = [r for r in records if ref and r.id.startswith(ref)]
    if len(found) == 1:
        return found[0]
    raise NotFound(f"No such container: {ref}")


def select_containers(
    records: Sequence[ContainerRecord], filters: dict[str, list[str]], *, all_: bool
) -> list[ContainerRecord]:
    """GET /containers/json: filter, newest first (before/since resolve against `records`)."""
    chosen = list(records)
    if not all_ and "status" not in filters and "exited" not in filters:
        chosen = [r for r in chosen if shown_status(r.state) in (Status.RUNNING, Status.PAUSED,
                                                                 Status.RESTARTING)]
    for value in filters.get("before", []):
        before = _find(records, value).created
        chosen = [r for r in chosen if r.created < before]
    for value in filters.get("since", []):
        since = _find(records, value).created
        chosen = [r for r in chosen if r.created > since]
    chosen = [r for r in chosen if matches(r, filters)]
    chosen.sort(key=lambda r: r.created, reverse=True)
    return chosen


def matches(record: ContainerRecord, filters: dict[str, list[str]]) -> bool:
    """Every key must match; values of one key are alternatives (docker's semantics)."""
    config = record.config
    network = config.network_mode or "default"
    checks: dict[str, Callable[[str], bool]] = {
        "id": lambda v: record.id.startswith(v),
        "name": lambda v: _name_match(v, record.name),
        "status": lambda v: shown_status(record.state).value == v,
        "ancestor": lambda v: v in (config.image, config.image_id)
        or config.image == f"{v}:latest"
        or config.image_id.startswith(v if v.startswith("sha256:") else "sha256:" + v),
        "exited": lambda v: shown_status(record.state) is Status.EXITED
        and not record.state.finished_at.startswith("0001")
        and str(record.state.exit_code) == v,
        "label": lambda v: _label_match(config.labels, v),
        "health": lambda v: health_word(record) == v,
        "is-task": lambda v: v == "false",
        "isolation": lambda v: v in ("default", "vm"),
        "network": lambda v: v in (network, "bridge" if network == "default" else network),
        "volume": lambda v: False,  # no container has mounts yet
        "publish": lambda v: False,  # no published ports yet
        "expose": lambda v: False,
    }
    for key, values in filters.items():
        check = checks.get(key)
        # Labels must all match (docker's MatchKVList); other keys' values are alternatives.
        combine = all if key == "label" else any
        if check is not None and not combine(check(v) for v in values):
            return False
    return True


def _label_match(labels: Iterable[tuple[str, str]], want: str) -> bool:
    key, sep, value = want.partition("=")
    found = dict(labels)
    return key in found and (not sep or found[key] == value)


# -- events ----------------------------------------------------------------------------------

EVENT_FILTERS = frozenset({
    "config", "container", "daemon", "event", "image", "label", "network", "node", "plugin",
    "scope", "secret", "service", "type", "volume",
})


def event_matches(event: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    """Docker's events filter: every key must match one of its values."""
    kind = str(event.get("Type", ""))
    action = str(event.get("Action", ""))
    actor = event.get("Actor", {})
    actor_id = str(actor.get("ID", ""))
    attrs: dict[str, str] = actor.get("Attributes", {})

    def fuzzy(value: str, *names: str) -> bool:
        return bool(value) and (actor_id.startswith(value) or value in names)

    checks: dict[str, Callable[[str], bool]] = {
        "type": lambda v: v == kind,
        "event": lambda v: v in (action, action.split(":", 1)[0]),
        "container": lambda v: kind == "container" and fuzzy(v, attrs.get("name", "")),
        "image": lambda v: attrs.get("image") == v or (kind == "image" and fuzzy(
            v, attrs.get("name", ""))),
        "label": lambda v: _label_match(attrs.items(), v),
        "scope": lambda v: v == event.get("scope", "local"),
        "network": lambda v: kind == "network" and fuzzy(v, attrs.get("name", "")),
        "volume": lambda v: kind == "volume" and fuzzy(v, attrs.get("name", "")),
        "daemon": lambda v: kind == "daemon" and fuzzy(v, attrs.get("name", "")),
        "service": lambda v: kind == "service" and fuzzy(v, attrs.get("name", "")),
        "node": lambda v: kind == "node" and fuzzy(v, attrs.get("name", "")),
    }
    for key, values in filters.items():
        check = checks.get(key)
        combine = all if key == "label" else any  # labels: every one must match
        if check is None or not combine(check(v) for v in values):
            return False
    return True


# -- top, stats ------------------------------------------------------------------------------


def encode_top(titles: list[str], rows: list[list[str]]) -> dict[str, Any]:
    return {"Titles": titles, "Processes": rows}


def _cpu_stats(sample: VmSample | None) -> dict[str, Any]:
    if sample is None:
        return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0,
                              "usage_in_usermode": 0},
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}
    host = sample.host_cpu
    if host is not None:
        # The container's cost to the host: QEMU's CPU time against the host's (dockerd's own
        # figures: cgroup CPU time against /proc/stat), not the guest's view of its vCPUs.
        return {
            "cpu_usage": {"total_usage": host.vm_ns,
                          "usage_in_kernelmode": host.vm_system_ns,
                          "usage_in_usermode": host.vm_user_ns},
            "system_cpu_usage": host.host_total_ns,
            "online_cpus": host.host_cpus,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        }
    return {
        "cpu_usage": {"total_usage": sample.cpu_busy_ns,
                      "percpu_usage": list(sample.percpu_busy_ns),
                      "usage_in_kernelmode": sample.cpu_system_ns,
                      "usage_in_usermode": sample.cpu_user_ns},
        "system_cpu_usage": sample.cpu_total_ns,
        "online_cpus": sample.online_cpus,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }


_ZERO_TIME = "0001-01-01T00:00:00Z"


def _blkio_stats(cur: VmSample | None) -> dict[str, Any]:
    """docker's cgroup v2 shape: the bytes read and written in `io_service_bytes_recursive`
    (the CLI's BlockIO sums its `read` and `write` entries), the rest null. The VM's storage
    is its QEMU's files on the host, so there is no device: major and minor are 0."""
    service_bytes = None
    if cur is not None and cur.host_io is not None:
        service_bytes = [
            {"major": 0, "minor": 0, "op": "read", "value": cur.host_io.read_bytes},
            {"major": 0, "minor": 0, "op": "write", "value": cur.host_io.write_bytes},
        ]
    return {"io_service_bytes_recursive": service_bytes, "io_serviced_recursive": None,
            "io_queue_recursive": None, "io_service_time_recursive": None,
            "io_wait_time_recursive": None, "io_merged_recursive": None,
            "io_time_recursive": None, "sectors_recursive": None}


def encode_stats(
    record: ContainerRecord, cur: VmSample | None, pre: VmSample | None
) -> dict[str, Any]:
    """Docker's stats JSON from VM samples: the VM is the container, so its /proc figures are
    the container's (memory: MemTotal - MemAvailable); CPU is QEMU's on the host when known,
    else the guest's busy vs. total vCPU time."""
    memory: dict[str, Any] = {}
    networks: dict[str, Any] | None = None
    if cur is not None:
        memory = {"usage": cur.mem_used_bytes, "limit": cur.mem_total_bytes,
                  "stats": {k.replace("(", "_").replace(")", ""): v
                            for k, v in sorted(cur.mem_fields.items())
                            if k != "inactive_file"}}
        networks = {name: {
            "rx_bytes": n.rx_bytes, "rx_packets": n.rx_packets, "rx_errors": n.rx_errors,
            "rx_dropped": n.rx_dropped, "tx_bytes": n.tx_bytes, "tx_packets": n.tx_packets,
            "tx_errors": n.tx_errors, "tx_dropped": n.tx_dropped,
        } for name, n in sorted(cur.networks.items())}
    out: dict[str, Any] = {
        "read": format_time_ns(cur.time_ns) if cur is not None else _ZERO_TIME,
        "preread": format_time_ns(pre.time_ns) if pre is not None else _ZERO_TIME,
        "pids_stats": {"current": cur.pids} if cur is not None else {},
        "blkio_stats": _blkio_stats(cur),
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": _cpu_stats(cur),
        "precpu_stats": _cpu_stats(pre),
        "memory_stats": memory,
        "name": "/" + record.name,
        "id": record.id,
    }
    if networks is not None:
        out["networks"] = networks
    return out
