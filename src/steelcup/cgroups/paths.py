"""Container cgroup paths, pure: an OCI `linux.cgroupsPath` (cgroupfs `/a/b/c` or systemd's
`slice:prefix:name`) to a cgroup path, the check of a path the daemon is given
(`HostConfig.SteelcupCgroup`), and the directories one path names on this host's
hierarchies (from /proc/self/mountinfo text: cgroup v2, v1 or both).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from steelcup.errors import InvalidArgument

CGROUP_MOUNT = PurePosixPath("/sys/fs/cgroup")
MAX_PATH_CHARS = 1024
# systemd unit-name characters (what runc's systemd driver accepts in a slice or scope name)
_UNIT_CHARS = re.compile(r"[A-Za-z0-9:_.\\@-]+")
# a cgroup path component: no slash, no NUL or newline (/proc/PID/cgroup is line based)
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# mount options of a v1 cgroup mount that name no controller
_NOT_CONTROLLERS = frozenset({"rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec",
                              "noprefix", "clone_children", "xattr", "cpuset_v2_mode"})


def validate(path: str, what: str = "HostConfig.SteelcupCgroup") -> str:
    """A cgroup path as /proc/PID/cgroup shows it (`/kubepods/pod1/abc`), normalised; an
    InvalidArgument that says what is wrong otherwise. It must be absolute, name a cgroup
    below the root (not the root itself) and have no `.` or `..` component: joined to a
    hierarchy's mount point it stays below that mount, so below /sys/fs/cgroup."""
    if not isinstance(path, str) or not path:
        raise InvalidArgument(f"{what} must be a cgroup path such as /kubepods/pod1/ctr")
    if len(path) > MAX_PATH_CHARS:
        raise InvalidArgument(f"{what} is longer than {MAX_PATH_CHARS} characters")
    if not path.startswith("/"):
        raise InvalidArgument(f"{what} must be an absolute cgroup path (from the root of the "
                              f"cgroup hierarchy, as /proc/PID/cgroup shows it), not {path!r}")
    if _BAD_CHARS.search(path):
        raise InvalidArgument(f"{what} must not contain control characters: {path!r}")
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise InvalidArgument(f"{what} must not contain '.' or '..' components: {path!r} "
                              "(a container's cgroup stays below /sys/fs/cgroup)")
    if not parts:
        raise InvalidArgument(f"{what} must name a cgroup below the root, not {path!r}")
    return "/" + "/".join(parts)


def _expand_slice(slice_name: str) -> str:
    """systemd's slice nesting: `a-b-c.slice` lives at /a.slice/a-b.slice/a-b-c.slice."""
    if slice_name in ("", "-.slice"):
        return ""
    if not slice_name.endswith(".slice") or not _UNIT_CHARS.fullmatch(slice_name):
        raise InvalidArgument(f"linux.cgroupsPath: {slice_name!r} is not a systemd slice name "
                              "(NAME.slice)")
    stem = slice_name.removesuffix(".slice")
    if not stem or stem.startswith("-") or stem.endswith("-") or "--" in stem:
        raise InvalidArgument(f"linux.cgroupsPath: {slice_name!r} is not a valid slice name")
    out, prefix = [], ""
    for part in stem.split("-"):
        prefix = f"{prefix}-{part}" if prefix else part
        out.append(f"{prefix}.slice")
    return "/" + "/".join(out)


def is_systemd_form(cgroups_path: str) -> bool:
    """Whether a cgroupsPath is systemd's `slice:prefix:name` rather than a path."""
    return not cgroups_path.startswith("/") and cgroups_path.count(":") == 2


def from_oci(cgroups_path: str, systemd: bool) -> str:
    """An OCI linux.cgroupsPath to the cgroup path (validated). With `systemd` (the runtime's
    `--systemd-cgroup`, or a value in that form) `slice:prefix:name` is the scope
    `/SLICE-PATH/prefix-name.scope` as systemd would place it (the slice `system.slice`
    when empty, as runc does); otherwise a path, a relative one taken from the root."""
    if systemd or is_systemd_form(cgroups_path):
        parts = cgroups_path.split(":")
        if len(parts) != 3:
            raise InvalidArgument(f"linux.cgroupsPath {cgroups_path!r}: with systemd cgroups "
                                  "it must be slice:prefix:name")
        slice_name, prefix, name = parts
        if not name or not _UNIT_CHARS.fullmatch(name) or (
                prefix and not _UNIT_CHARS.fullmatch(prefix)):
            raise InvalidArgument(f"linux.cgroupsPath {cgroups_path!r}: the prefix and name "
                                  "must be systemd unit name characters")
        if name.endswith(".slice"):
            raise InvalidArgument(f"linux.cgroupsPath {cgroups_path!r}: a slice as the "
                                  "container's unit is not supported (a scope is)")
        unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
        return validate(f"{_expand_slice(slice_name or 'system.slice')}/{unit}",
                        "linux.cgroupsPath")
    return validate("/" + cgroups_path.lstrip("/"), "linux.cgroupsPath")


@dataclass(frozen=True)
class CgroupMount:
    """A cgroup or cgroup2 mount as /proc/self/mountinfo shows it."""

    root: PurePosixPath  # which cgroup the mount shows as its top (cgroup namespaces, binds)
    point: PurePosixPath
    fstype: str  # cgroup (v1) or cgroup2
    super_options: tuple[str, ...]  # v1: the controllers (and name=, release_agent=, ...)


def cgroup_mounts(mountinfo: str) -> list[CgroupMount]:
    """The cgroup and cgroup2 mounts of /proc/self/mountinfo text, in its order. Mount
    points escape blanks as octal (\\040); cgroup mount points have none."""
    out = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 5 or len(fields) < sep + 4 or fields[sep + 1] not in ("cgroup", "cgroup2"):
            continue
        out.append(CgroupMount(PurePosixPath(fields[3]), PurePosixPath(fields[4]),
                               fields[sep + 1], tuple(fields[sep + 3].split(","))))
    return out


@dataclass(frozen=True)
class Hierarchy:
    """One cgroup hierarchy mounted below /sys/fs/cgroup."""

    mount: PurePosixPath
    version: int  # 1 or 2
    controllers: frozenset[str]  # v1: what the mount's options name (cpu, memory, name=x)


def hierarchies(mountinfo: str) -> tuple[Hierarchy, ...]:
    """The cgroup hierarchies mounted below /sys/fs/cgroup (each once: the first mount of
    it), from /proc/self/mountinfo text. A mount that shows only part of its hierarchy (a
    cgroup namespace's or a bind's root is not `/`) is left out: a path from the hierarchy's
    root cannot be placed through it."""
    out: list[Hierarchy] = []
    seen: set[tuple[int, frozenset[str]]] = set()
    for m in cgroup_mounts(mountinfo):
        point = m.point
        if str(m.root) != "/":
            continue
        if point != CGROUP_MOUNT and CGROUP_MOUNT not in point.parents:
            continue
        version = 2 if m.fstype == "cgroup2" else 1
        controllers = frozenset() if version == 2 else frozenset(
            o for o in m.super_options
            if o not in _NOT_CONTROLLERS and not o.startswith("release_agent="))
        if (version, controllers) in seen:
            continue
        seen.add((version, controllers))
        out.append(Hierarchy(point, version, controllers))
    return tuple(out)


def directory(hierarchy: Hierarchy, path: str) -> PurePosixPath:
    """The directory of the (validated) cgroup `path` in `hierarchy`."""
    return hierarchy.mount / validate(path).lstrip("/")
