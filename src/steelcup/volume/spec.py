"""Pure parsing of docker's mount syntaxes into `MountPlan`s: `-v`/Binds, `--mount`/Mounts
(CLI flag text and the API's JSON), `--tmpfs`, and the image's anonymous VOLUMEs.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from steelcup.errors import InvalidArgument, Unsupported

# Docker's rule, matched whole (Python's `$` would let a trailing newline through).
VOLUME_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]+")
VOLUME_NAME_MAX = 255  # the volume's directory name
# Bind options with nothing to do in a VM: SELinux relabelling (the host's files keep their
# labels; dockerd skips it too without SELinux), macOS consistency hints, and the private
# propagation every 9p share has.
_NO_OP_BIND_OPTS = frozenset({"z", "Z", "rprivate", "private", "consistent", "cached",
                              "delegated"})
_PRIVATE = ("", "rprivate", "private")
_NO_PROPAGATION = ("mount propagation into or out of a VM does not exist: a share is always "
                   "rprivate")


class MountKind(Enum):
    VOLUME = "volume"
    BIND = "bind"
    TMPFS = "tmpfs"


@dataclass(frozen=True)
class MountPlan:
    kind: MountKind
    target: str
    source: str = ""  # volume name (empty: anonymous, named at prepare) or host path
    readonly: bool = False
    tmpfs_size_bytes: int = 0
    tmpfs_mode: int = 0  # 0 = default (1777)
    nocopy: bool = False
    create_host_path: bool = False  # -v /host/path creates it; --mount type=bind does not
    # --mount volume-opt=K=V (VolumeOptions.DriverConfig.Options): for the volume it creates
    volume_options: tuple[tuple[str, str], ...] = ()
    # --mount volume-label=K=V (VolumeOptions.Labels): for the volume it creates
    volume_labels: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """For the container record (the runtime stores resolved plans)."""
        return {"kind": self.kind.value, "target": self.target, "source": self.source,
                "readonly": self.readonly, "tmpfs_size_bytes": self.tmpfs_size_bytes,
                "tmpfs_mode": self.tmpfs_mode, "nocopy": self.nocopy,
                "create_host_path": self.create_host_path,
                "volume_options": dict(self.volume_options),
                "volume_labels": dict(self.volume_labels)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MountPlan:
        return cls(MountKind(data["kind"]), str(data["target"]), str(data.get("source", "")),
                   bool(data.get("readonly", False)), int(data.get("tmpfs_size_bytes", 0)),
                   int(data.get("tmpfs_mode", 0)), bool(data.get("nocopy", False)),
                   bool(data.get("create_host_path", False)),
                   tuple(sorted((data.get("volume_options") or {}).items())),
                   tuple(sorted((data.get("volume_labels") or {}).items())))

    def tmpfs_options(self) -> str:
        opts = []
        if self.tmpfs_size_bytes:
            opts.append(f"size={self.tmpfs_size_bytes}")
        opts.append(f"mode={self.tmpfs_mode or 0o1777:o}")
        return ",".join(opts)


def _target(path: str) -> str:
    if not path.startswith("/"):
        raise InvalidArgument(f"invalid mount path {path!r}: mount path must be absolute")
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    if norm == "/":
        raise InvalidArgument("invalid mount path '/': cannot mount over the container root")
    if ".." in norm.split("/"):
        raise InvalidArgument(f"invalid mount path {path!r}")
    return norm


def check_volume_name(name: str) -> str:
    if not VOLUME_NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"{name!r} includes invalid characters for a local volume name, only "
            "\"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed")
    if len(name) > VOLUME_NAME_MAX:
        raise InvalidArgument(f"volume name longer than {VOLUME_NAME_MAX} characters")
    return name


def parse_bind(spec: str) -> MountPlan:
    """One `-v` / HostConfig.Binds entry: `/ctr`, `name:/ctr[:opts]`, `/host:/ctr[:opts]`."""
    parts = spec.split(":")
    if len(parts) == 1:
        return MountPlan(MountKind.VOLUME, _target(parts[0]))
    if len(parts) > 3 or not parts[0] or not parts[1]:
        raise InvalidArgument(f"invalid volume specification: {spec!r}")
    source, target = parts[0], _target(parts[1])
    opts = parts[2].split(",") if len(parts) == 3 else []
    readonly = False
    nocopy = False
    for opt in opts:
        if opt == "ro":
            readonly = True
        elif opt == "rw":
            readonly = False
        elif opt == "nocopy":
            nocopy = True
        elif opt in ("shared", "rshared", "slave", "rslave"):
            raise InvalidArgument(f"propagation mode {opt!r} in {spec!r} is not supported: "
                                  + _NO_PROPAGATION)
        elif opt not in _NO_OP_BIND_OPTS:
            raise InvalidArgument(f"invalid mode {opt!r} in volume specification {spec!r}")
    if source.startswith("/"):
        return MountPlan(MountKind.BIND, target, posixpath.normpath(source), readonly,
                         create_host_path=True)
    if source.startswith("."):
        raise InvalidArgument(f"invalid volume specification {spec!r}: a host path must be "
                              "absolute")
    return MountPlan(MountKind.VOLUME, target, check_volume_name(source), readonly,
                     nocopy=nocopy)


def _truthy(value: str) -> bool:
    if value.lower() in ("", "1", "true"):
        return True
    if value.lower() in ("0", "false"):
        return False
    raise InvalidArgument(f"invalid boolean {value!r}")


def parse_mount_flag(text: str) -> dict[str, Any]:
    """`--mount type=...,src=...,dst=...,readonly,...` -> the API's HostConfig.Mounts entry."""
    out: dict[str, Any] = {"Type": "volume"}
    for item in text.split(","):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if key == "type":
            out["Type"] = value
        elif key in ("source", "src"):
            out["Source"] = value
        elif key in ("target", "destination", "dst"):
            out["Target"] = value
        elif key in ("readonly", "ro"):
            out["ReadOnly"] = _truthy(value if eq else "")
        elif key == "volume-nocopy":
            out.setdefault("VolumeOptions", {})["NoCopy"] = _truthy(value if eq else "")
        elif key == "volume-label":
            k, _, v = value.partition("=")
            out.setdefault("VolumeOptions", {}).setdefault("Labels", {})[k] = v
        elif key == "volume-opt":
            k, _, v = value.partition("=")
            driver = out.setdefault("VolumeOptions", {}).setdefault("DriverConfig", {})
            driver.setdefault("Options", {})[k] = v
        elif key == "tmpfs-size":
            out.setdefault("TmpfsOptions", {})["SizeBytes"] = parse_size(value)
        elif key == "tmpfs-mode":
            try:
                out.setdefault("TmpfsOptions", {})["Mode"] = int(value, 8)
            except ValueError:
                raise InvalidArgument(f"invalid tmpfs-mode {value!r}") from None
        elif key == "bind-propagation":
            out.setdefault("BindOptions", {})["Propagation"] = value
        elif key == "bind-nonrecursive":
            out.setdefault("BindOptions", {})["NonRecursive"] = _truthy(value if eq else "")
        elif key == "consistency":
            out["Consistency"] = value
        else:
            raise InvalidArgument(f"unexpected key {key!r} in {text!r}")
    if "Target" not in out:
        raise InvalidArgument(f"target is required in --mount {text!r}")
    return out


def parse_size(text: str) -> int:
    """`64m`, `1g`, `4096` -> bytes."""
    m = re.fullmatch(r"(\d+)([bkmg]?)b?", text.strip().lower())
    if not m:
        raise InvalidArgument(f"invalid size {text!r}")
    return int(m.group(1)) * {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2)]


def mount_from_json(data: Mapping[str, Any]) -> MountPlan:
    """One HostConfig.Mounts entry (docker's JSON shape)."""
    kind_text = str(data.get("Type", "volume"))
    try:
        kind = MountKind(kind_text)
    except ValueError:
        raise InvalidArgument(f"mount type {kind_text!r} is not supported") from None
    target = _target(str(data.get("Target", "")))
    source = str(data.get("Source", "") or "")
    readonly = bool(data.get("ReadOnly", False))
    bopts = _options(data, "BindOptions")
    topts = _options(data, "TmpfsOptions")
    vopts = _options(data, "VolumeOptions")
    if kind is not MountKind.BIND and bopts:
        raise InvalidArgument(f"BindOptions cannot be used with mount type {kind.value!r}")
    if kind is not MountKind.TMPFS and topts:
        raise InvalidArgument(f"TmpfsOptions cannot be used with mount type {kind.value!r}")
    if kind is not MountKind.VOLUME and vopts:
        raise InvalidArgument(f"VolumeOptions cannot be used with mount type {kind.value!r}")
    if kind is MountKind.BIND:
        if not source.startswith("/"):
            raise InvalidArgument(f"invalid mount config for type \"bind\": source {source!r} "
                                  "must be an absolute path")
        propagation = bopts.get("Propagation") or ""
        if propagation not in _PRIVATE:
            raise InvalidArgument(f"BindOptions.Propagation {propagation!r} is not supported: "
                                  + _NO_PROPAGATION)
        for key in ("NonRecursive", "ReadOnlyNonRecursive"):
            if bopts.get(key):
                raise InvalidArgument(f"BindOptions.{key} is not supported: a bind is shared "
                                      "into the VM whole, with the mounts below it")
        return MountPlan(kind, target, posixpath.normpath(source), readonly,
                         create_host_path=bool(bopts.get("CreateMountpoint", False)))
    if kind is MountKind.TMPFS:
        if source:
            raise InvalidArgument("invalid mount config for type \"tmpfs\": source must be empty")
        if topts.get("Options"):
            raise InvalidArgument("TmpfsOptions.Options is not supported (SizeBytes and Mode "
                                  "are)")
        return MountPlan(kind, target, "", readonly, int(topts.get("SizeBytes", 0) or 0),
                         int(topts.get("Mode", 0) or 0))
    if vopts.get("Subpath"):
        raise InvalidArgument("VolumeOptions.Subpath is not supported yet: mount the whole "
                              "volume")
    if source:
        check_volume_name(source)
    driver = vopts.get("DriverConfig") or {}
    driver_opts = driver.get("Options") or {} if isinstance(driver, Mapping) else None
    if not isinstance(driver, Mapping) or not isinstance(driver_opts, Mapping):
        raise InvalidArgument("VolumeOptions.DriverConfig.Options must be an object")
    if str(driver.get("Name") or "local") != "local":
        raise Unsupported(f"volume driver {driver.get('Name')!r} is not supported (only local)")
    labels = vopts.get("Labels") or {}
    if not isinstance(labels, Mapping):
        raise InvalidArgument("VolumeOptions.Labels must be an object")
    return MountPlan(kind, target, source, readonly, nocopy=bool(vopts.get("NoCopy", False)),
                     volume_options=tuple(sorted((str(k), str(v))
                                                 for k, v in driver_opts.items())),
                     volume_labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())))


def _options(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{key} must be an object")
    return value


def parse_tmpfs(target: str, options: str) -> MountPlan:
    """One HostConfig.Tmpfs entry (`--tmpfs /run:size=64m,mode=755`)."""
    size = 0
    mode = 0
    readonly = False
    for opt in filter(None, options.split(",")):
        key, _, value = opt.partition("=")
        if key == "size":
            size = parse_size(value)
        elif key == "mode":
            mode = int(value, 8)
        elif key == "ro":
            readonly = True
        elif key in ("rw", "nosuid", "nodev", "noexec", "exec", "suid", "dev"):
            pass
        else:
            raise Unsupported(f"tmpfs option {key!r} is not supported")
    return MountPlan(MountKind.TMPFS, _target(target), "", readonly, size, mode)


def resolve_mounts(
    binds: Sequence[str] = (),
    mounts: Sequence[Mapping[str, Any]] = (),
    image_volumes: Iterable[str] = (),
    tmpfs: Mapping[str, str] | None = None,
) -> list[MountPlan]:
    """All mounts of a container, parents before children; image VOLUMEs not covered by an
    explicit mount become anonymous volumes. Duplicate targets are an error, like docker."""
    plans = [parse_bind(b) for b in binds]
    plans += [mount_from_json(m) for m in mounts]
    plans += [parse_tmpfs(t, o) for t, o in (tmpfs or {}).items()]
    seen: set[str] = set()
    for plan in plans:
        if plan.target in seen:
            raise InvalidArgument(f"Duplicate mount point: {plan.target}")
        seen.add(plan.target)
    for vol in image_volumes:
        target = _target(vol)
        if target not in seen:
            plans.append(MountPlan(MountKind.VOLUME, target))
            seen.add(target)
    return sorted(plans, key=lambda p: (p.target.count("/"), p.target))
