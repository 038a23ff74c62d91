"""An OCI bundle's config.json as a steelcup container: the Engine API create body.

Pure: the parsed document in, the body for POST /containers/create out (with steelcup's own
HostConfig.SteelcupRootfs naming the bundle's root directory). What a VM provides by itself
(proc, sysfs, devpts, mqueue, cgroup, /dev, the engine's /etc/hosts and friends) is left out;
what steelcup cannot honour is refused with a message naming the field. docs/oci-runtime.md
lists both.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from steelcup.cgroups import paths as cgroup_paths
from steelcup.errors import InvalidArgument
from steelcup.oci.pods import PodRole, pod_role
from steelcup.runtime.capabilities import DEFAULT_NAMES, NAMES

# Mount types the guest makes itself, and targets it fills (its own /dev, /dev/shm).
GUEST_MOUNT_TYPES = frozenset({"proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2"})
GUEST_TARGETS = frozenset({"/dev", "/dev/shm", "/proc", "/sys", "/sys/fs/cgroup"})
# Files an engine binds for every container; the guest writes its own (docs/oci-runtime.md).
ENGINE_FILES = frozenset({"/etc/hosts", "/etc/hostname", "/etc/resolv.conf",
                          "/run/.containerenv"})
_TMPFS_OPTIONS = ("size=", "mode=")
_RLIMIT_PREFIX = "RLIMIT_"
PODMAN_PRIVILEGED = "io.podman.annotations.privileged"


@dataclass(frozen=True)
class Bundle:
    """What steelcup-runtime needs of a bundle: the create body, and what `state` shows."""

    body: dict[str, Any]
    annotations: Mapping[str, str] = field(default_factory=dict)
    terminal: bool = False
    # a pod's sandbox (the body says so) or member (its sandbox's OCI id: main.py resolves it)
    pod: PodRole = PodRole()
    # The engine's /etc/resolv.conf for a container on the engine's network (its netns):
    # main.py reads it into the body with `resolv_settings`; "" = none.
    resolv_conf: str = ""
    # linux.cgroupsPath as a cgroup path (steelcup.cgroups.paths): main.py makes it and puts
    # the keeper there; the daemon puts the VM's QEMU there (not a member's: the sandbox's
    # VM is in the sandbox's). "" = none given.
    cgroup: str = ""


def _obj(doc: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"config.json: {where}{key} must be an object")
    return value


def _list(doc: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidArgument(f"config.json: {where}{key} must be a list")
    return value


def _strings(doc: Mapping[str, Any], key: str, where: str) -> list[str]:
    items = _list(doc, key, where)
    if not all(isinstance(i, str) for i in items):
        raise InvalidArgument(f"config.json: {where}{key} must be a list of strings")
    return items


def root_path(doc: Mapping[str, Any], bundle: str) -> str:
    """root.path, relative to the bundle directory unless absolute."""
    root = _obj(doc, "root", "")
    path = root.get("path")
    if not isinstance(path, str) or not path:
        raise InvalidArgument("config.json: root.path is required")
    return posixpath.normpath(posixpath.join(bundle, path))


def _user(process: Mapping[str, Any]) -> tuple[str, list[str]]:
    user = _obj(process, "user", "process.")
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    if not isinstance(uid, int) or not isinstance(gid, int) or uid < 0 or gid < 0:
        raise InvalidArgument("config.json: process.user.uid and gid must be numbers")
    extra = _list(user, "additionalGids", "process.user.")
    if not all(isinstance(g, int) and g >= 0 for g in extra):
        raise InvalidArgument("config.json: process.user.additionalGids must be numbers")
    return f"{uid}:{gid}", [str(g) for g in extra if g != gid]


def _ulimits(process: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for item in _list(process, "rlimits", "process."):
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise InvalidArgument("config.json: process.rlimits entries need a type")
        name = item["type"].upper().removeprefix(_RLIMIT_PREFIX).lower()
        soft, hard = item.get("soft", 0), item.get("hard", 0)
        # the runtime spec's values are uint64: all ones means unlimited
        out.append({"Name": name, "Soft": -1 if soft >= 1 << 63 else soft,
                    "Hard": -1 if hard >= 1 << 63 else hard})
    return out


def _caps(process: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """CapAdd and CapDrop that turn docker's default set into the bundle's bounding set."""
    caps = process.get("capabilities")
    if caps is None:
        return [], list(DEFAULT_NAMES)
    if not isinstance(caps, dict):
        raise InvalidArgument("config.json: process.capabilities must be an object")
    bounding = set(_strings(caps, "bounding", "process.capabilities.")) & set(NAMES)
    add = sorted(bounding - set(DEFAULT_NAMES))
    drop = sorted(set(DEFAULT_NAMES) - bounding)
    return add, drop


def _mounts(doc: Mapping[str, Any]) -> tuple[list[str], dict[str, str]]:
    """Binds ("SRC:DST[:ro]") and Tmpfs ({DST: options}) of the bundle's mounts."""
    binds: list[str] = []
    tmpfs: dict[str, str] = {}
    for n, mount in enumerate(_list(doc, "mounts", "")):
        if not isinstance(mount, dict) or not isinstance(mount.get("destination"), str):
            raise InvalidArgument(f"config.json: mounts[{n}] needs a destination")
        target = posixpath.normpath(mount["destination"])
        kind = mount.get("type") or ""
        options = [o for o in mount.get("options") or [] if isinstance(o, str)]
        if kind in GUEST_MOUNT_TYPES or target in GUEST_TARGETS or target in ENGINE_FILES:
            continue
        if kind == "tmpfs":
            tmpfs[target] = ",".join(o for o in options if o.startswith(_TMPFS_OPTIONS))
        elif kind == "bind" or "bind" in options or "rbind" in options:
            source = mount.get("source")
            if not isinstance(source, str) or not source.startswith("/"):
                raise InvalidArgument(f"config.json: mounts[{n}] ({target}): a bind needs an "
                                      "absolute source")
            binds.append(f"{source}:{target}" + (":ro" if "ro" in options else ""))
        else:
            raise InvalidArgument(f"config.json: mounts[{n}] ({target}): mount type "
                                  f"{kind!r} is not supported by steelcup (bind and tmpfs are)")
    return binds, tmpfs


def _network(linux: Mapping[str, Any]) -> tuple[str, str | None]:
    """(NetworkMode, SteelcupNetns). A new, empty network namespace asked for: none. One the
    engine made (a path): none of the daemon's networks, the VM's NIC goes into that netns
    instead (steelcup.net.netnsnic). No network namespace (the host's): the daemon's default
    networking, the VM's own NIC on its bridge (docs/oci-runtime.md)."""
    for ns in _list(linux, "namespaces", "linux."):
        if isinstance(ns, dict) and ns.get("type") == "network":
            path = ns.get("path")
            if path and not isinstance(path, str):
                raise InvalidArgument("config.json: linux.namespaces[network].path must be a "
                                      "string")
            if path and not path.startswith("/"):
                raise InvalidArgument(f"config.json: the network namespace path {path!r} "
                                      "must be absolute")
            return "none", path or None
    return "", None


def _engine_file(doc: Mapping[str, Any], target: str) -> str:
    """The host file the engine binds at `target` ("" if it binds none)."""
    for mount in _list(doc, "mounts", ""):
        if (isinstance(mount, dict) and mount.get("destination") == target
                and isinstance(mount.get("source"), str)):
            return str(mount["source"])
    return ""


def resolv_settings(text: str) -> dict[str, list[str]]:
    """An engine's resolv.conf as HostConfig.Dns, DnsSearch and DnsOptions (empty ones left
    out), so the daemon writes the same servers into the container's root."""
    servers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) < 2:
            continue
        if words[0] == "nameserver":
            servers.append(words[1])
        elif words[0] in ("search", "domain"):
            search = words[1:]  # the last one counts, as for the resolver
        elif words[0] == "options":
            options += words[1:]
    out = {"Dns": servers, "DnsSearch": search, "DnsOptions": options}
    return {k: v for k, v in out.items() if v}


def _resources(linux: Mapping[str, Any]) -> dict[str, Any]:
    return resources_body(_obj(linux, "resources", "linux."))


def resources_body(resources: Mapping[str, Any]) -> dict[str, Any]:
    """The runtime spec's LinuxResources (config.json's, or `update --resources`') as the
    Engine API's HostConfig resource fields steelcup acts on."""
    out: dict[str, Any] = {}
    memory = _obj(resources, "memory", "linux.resources.")
    limit = memory.get("limit")
    if isinstance(limit, int) and limit > 0:
        out["Memory"] = limit
    cpu = _obj(resources, "cpu", "linux.resources.")
    quota, period = cpu.get("quota"), cpu.get("period") or 100_000
    if isinstance(quota, int) and quota > 0 and isinstance(period, int) and period > 0:
        out["NanoCpus"] = quota * 1_000_000_000 // period
    shares = cpu.get("shares")
    if isinstance(shares, int) and shares > 0:
        out["CpuShares"] = shares
    pids = _obj(resources, "pids", "linux.resources.")
    if isinstance(pids.get("limit"), int) and pids["limit"] > 0:
        out["PidsLimit"] = pids["limit"]
    return out


def translate(doc: Any, bundle: str, systemd_cgroup: bool = False) -> Bundle:
    """config.json (parsed) of the bundle directory `bundle` -> the create request.
    `systemd_cgroup`: the runtime's `--systemd-cgroup` (cgroupsPath is slice:prefix:name)."""
    if not isinstance(doc, dict):
        raise InvalidArgument("config.json must be a JSON object")
    hooks = _obj(doc, "hooks", "")
    if any(hooks.values()):
        raise InvalidArgument("config.json: hooks are not supported by steelcup (they would "
                              f"run in namespaces a VM does not have): {', '.join(hooks)}")
    process = _obj(doc, "process", "")
    args = _strings(process, "args", "process.")
    if not args:
        raise InvalidArgument("config.json: process.args must name a program")
    user, groups = _user(process)
    cap_add, cap_drop = _caps(process)
    binds, tmpfs = _mounts(doc)
    linux = _obj(doc, "linux", "")
    # The engine's privileged mode (podman says so in an annotation; otherwise every
    # capability): docker's Privileged in steelcup, whose devices are the VM's own, never the
    # host's the engine lists.
    annotations = {str(k): str(v) for k, v in _obj(doc, "annotations", "").items()}
    privileged = annotations.get(PODMAN_PRIVILEGED, "").upper() == "TRUE" or set(NAMES) <= set(
        _strings(_obj(process, "capabilities", "process."), "bounding", "process.capabilities."))
    for key, why in (("devices", "a VM has no host devices"),
                     ("uidMappings", "a VM has its own ids (the daemon maps them)"),
                     ("gidMappings", "a VM has its own ids (the daemon maps them)")):
        if _list(linux, key, "linux.") and not (key == "devices" and privileged):
            raise InvalidArgument(f"config.json: linux.{key} is not supported by steelcup "
                                  f"({why})")
    sysctls = _obj(linux, "sysctl", "linux.")
    terminal = process.get("terminal") is True
    cgroups_path = linux.get("cgroupsPath")
    if cgroups_path is not None and not isinstance(cgroups_path, str):
        raise InvalidArgument("config.json: linux.cgroupsPath must be a string")
    pod = pod_role(annotations, cgroups_path or "")
    cgroup = cgroup_paths.from_oci(cgroups_path, systemd_cgroup) if cgroups_path else ""
    network_mode, netns = _network(linux)
    host: dict[str, Any] = {
        "SteelcupRootfs": root_path(doc, bundle),
        "SteelcupPodSandbox": True if pod.sandbox else None,
        "ReadonlyRootfs": _obj(doc, "root", "").get("readonly") is True,
        "Binds": binds or None,
        "Tmpfs": tmpfs or None,
        "NetworkMode": network_mode,
        # a pod member shares its sandbox's VM and so the NIC the sandbox has in this netns
        "SteelcupNetns": None if pod.sandbox_id else netns,
        # a member's VM is its sandbox's, in the sandbox's cgroup
        "SteelcupCgroup": None if pod.sandbox_id else cgroup or None,
        "Privileged": privileged,
        "CapAdd": None if privileged else cap_add or None,
        "CapDrop": None if privileged else cap_drop or None,
        "GroupAdd": groups or None,
        "Ulimits": _ulimits(process) or None,
        "Sysctls": {str(k): str(v) for k, v in sysctls.items()} or None,
        **_resources(linux),
    }
    body: dict[str, Any] = {
        "Image": "",
        "Entrypoint": args,
        "Cmd": None,
        "Env": _strings(process, "env", "process."),
        "WorkingDir": process.get("cwd") or "/",
        "User": user,
        "Hostname": doc.get("hostname") or "",
        "Tty": terminal,
        # stdin is always relayed (the keeper gets what the engine gave the container: a
        # pipe or /dev/null, whose end closes the container's stdin as it would under runc)
        "OpenStdin": True,
        "StdinOnce": True,
        "AttachStdin": True,
        "HostConfig": {k: v for k, v in host.items() if v is not None},
    }
    return Bundle(body=body, annotations=annotations, terminal=terminal, pod=pod,
                  resolv_conf=_engine_file(doc, "/etc/resolv.conf") if netns else "",
                  cgroup=cgroup)
