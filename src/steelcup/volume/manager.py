"""`VolumeManager`: local volumes under ROOT/volumes/NAME/_data that outlive containers, and
the preparation of a container's mounts into 9p shares plus guest MOUNT requests.

Why 9p: it is served inside QEMU (no shared guest RAM), so it also works for template clones
whose RAM is a private copy-on-write mapping; see docs/networking.md.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from steelcup.errors import Conflict, InvalidArgument, NotFound, Unsupported
from steelcup.net.guest_ops import GuestMount
from steelcup.vm.qemu_args import Share
from steelcup.volume.spec import MountKind, MountPlan, check_volume_name

META = "meta.json"
DATA = "_data"
SHARE_TAG_PREFIX = "v"
InUse = Callable[[str], list[str]]  # volume name -> ids of containers that use it


@dataclass(frozen=True)
class Volume:
    name: str
    mountpoint: Path
    created: str
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False
    driver: str = "local"


@dataclass(frozen=True)
class PreparedMount:
    """A mount ready for the VM: the 9p share to add (None for tmpfs) and the guest request."""

    plan: MountPlan
    share: Share | None
    request: GuestMount
    volume: str = ""  # the volume's name (also for anonymous ones), "" for binds/tmpfs


class VolumeManager:
    def __init__(self, root: Path, in_use: InUse | None = None) -> None:
        self.dir = root / "volumes"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.in_use: InUse = in_use or (lambda _name: [])

    def _load(self, name: str) -> Volume:
        vdir = self.dir / name
        try:
            meta: dict[str, Any] = json.loads((vdir / META).read_text())
        except (OSError, ValueError):
            raise NotFound(f"get {name}: no such volume") from None
        return Volume(name=name, mountpoint=vdir / DATA, created=meta.get("CreatedAt", ""),
                      labels=meta.get("Labels") or {}, options=meta.get("Options") or {},
                      anonymous=bool(meta.get("Anonymous", False)))

    def create(self, name: str | None = None, *, labels: dict[str, str] | None = None,
               options: dict[str, str] | None = None, driver: str = "local",
               anonymous: bool = False) -> Volume:
        """Create, or return the existing volume of that name (docker's create is idempotent)."""
        if driver not in ("local", ""):
            raise Unsupported(f"volume driver {driver!r} is not supported (only local)")
        if options:
            raise Unsupported("local volume options (type/device/o) are not supported yet")
        if name is None:
            name = os.urandom(32).hex()
        check_volume_name(name)
        vdir = self.dir / name
        if (vdir / META).exists():
            return self._load(name)
        tmp = self.dir / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / DATA).mkdir(parents=True)
        (tmp / DATA).chmod(0o755)
        meta = {"CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "Labels": labels or {}, "Options": options or {}, "Anonymous": anonymous}
        (tmp / META).write_text(json.dumps(meta))
        try:
            tmp.rename(vdir)  # atomic: a volume is either complete or absent
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if (vdir / META).exists():
                return self._load(name)
            raise
        return self._load(name)

    def get(self, name: str) -> Volume:
        return self._load(name)

    def list(self) -> list[Volume]:
        out = []
        for entry in sorted(self.dir.iterdir()):
            if entry.name.startswith(".") or not (entry / META).exists():
                continue
            out.append(self._load(entry.name))
        return out

    def remove(self, name: str, *, force: bool = False) -> None:
        vol = self._load(name)
        users = self.in_use(name)
        if users:
            raise Conflict(f"remove {name}: volume is in use - "
                           f"[{', '.join(u for u in users)}]")
        del force  # docker's force only ignores "not found" for local volumes
        doomed = self.dir / f".rm-{vol.name}"
        (self.dir / vol.name).rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def prune(self, *, all_volumes: bool = False) -> tuple[builtins.list[str], int]:
        """Remove unused volumes (anonymous only unless all_volumes, like docker 23+)."""
        removed: builtins.list[str] = []
        reclaimed = 0
        for vol in self.list():
            if (vol.anonymous or all_volumes) and not self.in_use(vol.name):
                reclaimed += _du(vol.mountpoint)
                self.remove(vol.name)
                removed.append(vol.name)
        return removed, reclaimed

    def materialize(self, plans: Sequence[MountPlan]) -> builtins.list[MountPlan]:
        """At container create: create every volume now and name the anonymous ones, so the
        record stores names and a restarted container gets the same volumes back."""
        out = []
        for plan in plans:
            if plan.kind is MountKind.VOLUME:
                vol = self.create(plan.source or None, anonymous=not plan.source)
                plan = replace(plan, source=vol.name)
            out.append(plan)
        return out

    def prepare(self, plans: Sequence[MountPlan], rootfs: Path | None = None
                ) -> builtins.list[PreparedMount]:
        """Create volumes as needed (copying the image's files into a new empty volume, like
        docker) and check binds; returns shares and guest requests in mount order."""
        out: builtins.list[PreparedMount] = []
        for i, plan in enumerate(plans):
            tag = f"{SHARE_TAG_PREFIX}{i}"
            if plan.kind is MountKind.TMPFS:
                out.append(PreparedMount(plan, None, GuestMount(
                    target=plan.target, fstype="tmpfs", options=plan.tmpfs_options(),
                    readonly=plan.readonly)))
                continue
            if plan.kind is MountKind.BIND:
                host = Path(plan.source)
                if not host.exists():
                    if not plan.create_host_path:
                        raise InvalidArgument(f"invalid mount config for type \"bind\": bind "
                                              f"source path does not exist: {host}")
                    host.mkdir(parents=True, exist_ok=True)
                if not host.is_dir():
                    raise Unsupported(f"bind-mounting a single file ({host}) is not supported: "
                                      "9p shares are directories")
                name = ""
            else:
                vol = self.create(plan.source or None, anonymous=not plan.source)
                host = vol.mountpoint
                name = vol.name
                if not plan.nocopy and rootfs is not None and not any(host.iterdir()):
                    _copy_up(rootfs, plan.target, host)
            share = Share(tag, host, plan.readonly)
            out.append(PreparedMount(plan, share, GuestMount(
                target=plan.target, fstype="9p", source=tag, readonly=plan.readonly), name))
        return out


def _copy_up(rootfs: Path, target: str, dest: Path) -> None:
    """Image content at the mount point seeds a new volume (no symlink is followed)."""
    src = rootfs / target.lstrip("/")
    cur = rootfs
    for part in target.strip("/").split("/"):
        cur = cur / part
        if cur.is_symlink():
            return
    if src.is_dir() and not any(dest.iterdir()):
        shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)


def _du(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total
