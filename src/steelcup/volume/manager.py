"""`VolumeManager`: local volumes that outlive containers, and the preparation of a
container's mounts into 9p shares plus guest MOUNT requests.

Volumes are per tenant (steelcup.volume.namespace): the operator's under ROOT/volumes/NAME, a
tenant's under ROOT/volumes/@TENANT/NAME (meta.json `Tenant`). One volume is named daemon-wide
by its key (`NAME` or `TENANT/NAME`): every method that takes one volume takes its key, and
`resolve` turns what a caller typed into the key of a volume it may see.

A volume is a filesystem of bounded size (steelcup.boundedfs): `disk.img`, loop-mounted on
`_data` while a container that uses it runs, and `_data` exists only then, so an unmounted
volume can never be exported by mistake. The 9p share is `_data`, the filesystem's root.
Volumes made before volumes had a size are a plain `_data` directory (unbounded).

With a VM id range (steelcup.idmap) a volume's files hold shifted ids (meta.json `Ids`; none:
guest ids as-is, shifted on the next use), and a bind-mounted host dir reaches QEMU through an
idmapped mount under ROOT/binds/HOLDER (`IdRange.bind_map`: the guest's root is never host
root there).

A bind of a single file: 9p shares are directories, so each such file is bound (idmapped with a
range) on an empty file ROOT/binds/HOLDER/files/N, that directory is the container's one share
`files`, and the guest binds the file N of it onto the target (MOUNT with FSTYPE `bind`). The
host's bind is read-only for a read-only mount: the guest's root could write through the share.

Why 9p: it is served inside QEMU (no shared guest RAM), so it also works for template clones
whose RAM is a private copy-on-write mapping; see docs/networking.md.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from steelcup import boundedfs, sysmount, userns
from steelcup.errors import (
    Conflict,
    Forbidden,
    InvalidArgument,
    NotFound,
    SteelcupError,
    Unsupported,
)
from steelcup.guest.ops import GuestMount
from steelcup.idmap import IdRange
from steelcup.tenancy.quota import Admit, unlimited
from steelcup.vm.qemu_args import Share
from steelcup.volume import namespace
from steelcup.volume import snapshots as snapshots_module
from steelcup.volume.snapshots import SnapshotStore, VolumeState
from steelcup.volume.spec import MountKind, MountPlan, check_volume_name
from steelcup.volume.treecopy import copy_owners

log = logging.getLogger(__name__)
GIB = 1 << 30
META = "meta.json"
DATA = "_data"
DISK = "disk.img"
SIZE_OPTION = "size"
SNAPSHOT_OPTION = "snapshot"  # `volume create --snapshot N`: a new volume from snapshot N
# dockerd's local driver options for mounting something else (nfs, a device, tmpfs)
_MOUNT_OPTIONS = ("type", "device", "o")
SHARE_TAG_PREFIX = "v"
FILES_TAG = "files"  # the share of a container's single-file binds
FILES_DIR = "files"  # ROOT/binds/HOLDER/files: their mount points
ANONYMOUS_LABEL = "com.docker.volume.anonymous"
InUse = Callable[[str], list[str]]  # volume key -> ids of containers that use it


@dataclass(frozen=True)
class Volume:
    name: str
    mountpoint: Path
    created: str
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False
    driver: str = "local"
    size_bytes: int = 0  # its filesystem's size; 0: unbounded (made before volumes had one)
    tenant: str = ""  # its owner ("": the operator's)

    @property
    def key(self) -> str:
        """Its daemon-wide name (`NAME`, or `TENANT/NAME` for a tenant's)."""
        return namespace.key(self.tenant, self.name)


@dataclass(frozen=True)
class PreparedMount:
    """A mount ready for the VM: the 9p share to add (None for tmpfs) and the guest request."""

    plan: MountPlan
    share: Share | None
    request: GuestMount
    volume: str = ""  # the volume's key (also for anonymous ones), "" for binds/tmpfs


class _DaemonIds:
    """`prepare`'s default: the daemon's own id range."""


DAEMON_IDS = _DaemonIds()


class VolumeManager:
    """Volumes under `root`/volumes. With `disks`, new volumes are filesystems of bounded size
    (`disks.default_bytes` unless a `size` option asks), mounted for the containers that
    `hold` them; without, plain directories."""

    def __init__(self, root: Path, in_use: InUse | None = None,
                 disks: boundedfs.DiskMaker | None = None, ids: IdRange | None = None) -> None:
        self.dir = root / "volumes"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.binds_dir = root / "binds"  # idmapped binds, per holder (only with `ids`)
        self.in_use: InUse = in_use or (lambda _name: [])
        self.disks = disks
        self.ids = ids  # the VMs' id range (None: QEMU is host root, no shifting)
        self._lock = threading.Lock()  # guards _holders and every mount and unmount
        self._holders: dict[str, builtins.list[str]] = {}  # holder -> bounded volumes it holds
        self.snapshots = SnapshotStore(root, self.volume_state)
        # the tenant's quota gate around a creation (steelcup.tenancy.quota; none: unlimited)
        self.admit: Admit = unlimited

    def _vdir(self, ref: str) -> Path:
        """The dir of the volume with key `ref` (NotFound for a key no volume can have)."""
        try:
            tenant, name = namespace.split(ref)
        except InvalidArgument:
            raise NotFound(f"get {ref}: no such volume") from None
        return namespace.tenant_dir(self.dir, tenant) / name

    def _load(self, ref: str) -> Volume:
        vdir = self._vdir(ref)
        tenant, name = namespace.split(ref)
        try:
            meta: dict[str, Any] = json.loads((vdir / META).read_text())
        except (OSError, ValueError):
            raise NotFound(f"get {ref}: no such volume") from None
        if (meta.get("Tenant") or "") != tenant:  # moved by hand: never another's by mistake
            log.warning("volume dir %s belongs to tenant %r: ignored", vdir, meta.get("Tenant"))
            raise NotFound(f"get {ref}: no such volume")
        return Volume(name=name, mountpoint=vdir / DATA, created=meta.get("CreatedAt", ""),
                      labels=meta.get("Labels") or {}, options=meta.get("Options") or {},
                      anonymous=bool(meta.get("Anonymous", False)),
                      size_bytes=int(meta.get("SizeBytes", 0) or 0), tenant=tenant)

    def resolve(self, ref: str, tenant: str | None) -> str:
        """The key of the volume `ref` names for `tenant` (None: the operator, who sees every
        tenant's: a key, its own volume, else the only tenant's of that name). Another
        tenant's volume is exactly as missing as a missing one."""
        if tenant is not None:
            if "/" not in ref:
                with contextlib.suppress(NotFound):
                    return self._load(namespace.key(tenant, ref)).key
            raise NotFound(f"get {ref}: no such volume")
        if "/" in ref:
            return self._load(ref).key
        with contextlib.suppress(NotFound):
            return self._load(ref).key
        named = [vol for vol in self.list() if vol.name == ref]
        if len(named) > 1:
            raise InvalidArgument(f"{len(named)} volumes of different tenants are named "
                                  f"{ref!r}: use TENANT/{ref}")
        if named:
            return named[0].key
        raise NotFound(f"get {ref}: no such volume")

    def _size(self, options: dict[str, str], tenant: str) -> int:
        """The size the options ask for, else the default (0: an unbounded directory)."""
        for key in options:
            if key in _MOUNT_OPTIONS:
                raise Unsupported(f"local volume option {key!r} is not supported: volumes "
                                  "are the daemon's own filesystems (only size is)")
            if key not in (SIZE_OPTION, SNAPSHOT_OPTION):
                raise InvalidArgument(f"invalid option: {key!r}")
        if SNAPSHOT_OPTION in options:
            if SIZE_OPTION in options:
                raise InvalidArgument("a volume made from a snapshot has the snapshot's size")
            snapshot = self.snapshots.resolve(options[SNAPSHOT_OPTION], tenant)
            return self.snapshots.get(snapshot).size_bytes
        if SIZE_OPTION not in options:
            return self.disks.default_bytes if self.disks is not None else 0
        if self.disks is None:
            raise Unsupported("volume sizes are not available on this daemon")
        return boundedfs.check_size(boundedfs.parse_size(options[SIZE_OPTION]), "volume size")

    def create(self, name: str | None = None, *, tenant: str = "",
               labels: dict[str, str] | None = None, options: dict[str, str] | None = None,
               driver: str = "local", anonymous: bool = False) -> Volume:
        """Create, or return the existing volume of that name in `tenant`'s namespace (docker's
        create is idempotent). A `snapshot` option names one of `tenant`'s snapshots."""
        if driver not in ("local", ""):
            raise Unsupported(f"volume driver {driver!r} is not supported (only local)")
        options = dict(options or {})
        if anonymous:  # dockerd's mark: `volume prune` removes only these unless --all
            labels = {**(labels or {}), ANONYMOUS_LABEL: ""}
        size_bytes = self._size(options, tenant)
        if size_bytes:
            # inspect shows every volume's size, also the default's
            options.setdefault(SIZE_OPTION, boundedfs.format_size(size_bytes))
        if name is None:
            name = os.urandom(32).hex()
        check_volume_name(name)
        ref = namespace.key(tenant, name)
        space = namespace.tenant_dir(self.dir, tenant)
        vdir = space / name
        if (vdir / META).exists():
            return self._load(ref)
        with self.admit(tenant, {"volumes": 1, "volume_gib": -(-size_bytes // GIB)}):
            return self._make(name, tenant, ref, space, vdir, labels, options, anonymous,
                              size_bytes)

    def _make(self, name: str, tenant: str, ref: str, space: Path, vdir: Path,
              labels: dict[str, str] | None, options: dict[str, str], anonymous: bool,
              size_bytes: int) -> Volume:
        space.mkdir(exist_ok=True)
        tmp = space / f".tmp-{name}-{os.getpid()}-{threading.get_ident()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        ids: builtins.list[int] | None = None
        try:
            if SNAPSHOT_OPTION in options:
                snap, copy = self.snapshots.source(
                    self.snapshots.resolve(options[SNAPSHOT_OPTION], tenant))
                ids = list(snap.ids) if snap.ids else None
                if snap.size_bytes:
                    snapshots_module.clone_file(copy, tmp / DISK)
                else:
                    snapshots_module.copy_tree(copy, tmp / DATA)
            elif size_bytes and self.disks is not None:
                self.disks.make(tmp / DISK, size_bytes)  # `_data` appears when it is mounted
            else:
                (tmp / DATA).mkdir()
                (tmp / DATA).chmod(0o755)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        meta = {"CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "Labels": labels or {}, "Options": options, "Anonymous": anonymous,
                "SizeBytes": size_bytes, "Ids": ids, "Tenant": tenant}
        (tmp / META).write_text(json.dumps(meta))
        try:
            tmp.rename(vdir)  # atomic: a volume is either complete or absent
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if (vdir / META).exists():
                return self._load(ref)
            raise
        return self._load(ref)

    def get(self, ref: str) -> Volume:
        """The volume with key `ref` (NotFound)."""
        return self._load(ref)

    def volume_state(self, ref: str) -> VolumeState:
        """What a snapshot of the volume needs to know (SnapshotStore)."""
        vol = self._load(ref)
        ids = self.ids_of(ref)
        with self._lock:
            held = any(ref in keys for keys in self._holders.values())
            mounted = bool(vol.size_bytes) and sysmount.is_mountpoint(vol.mountpoint)
        return VolumeState(
            data=vol.mountpoint, disk=self._vdir(ref) / DISK if vol.size_bytes else None,
            mounted=mounted, in_use=held or bool(self.in_use(ref)),
            size_bytes=vol.size_bytes, ids=(ids.base, ids.count) if ids else None)

    def ids_of(self, ref: str) -> IdRange | None:
        """The id range the volume's files are stored with (None: guest ids as-is)."""
        try:
            base, count = json.loads((self._vdir(ref) / META).read_text())["Ids"]
            return IdRange(int(base), int(count))
        except (NotFound, OSError, ValueError, KeyError, TypeError):
            return None

    def _adopt(self, vol: Volume, ids: IdRange | None) -> None:
        """Store the (mounted) volume's ids for the range `ids`, shifting them if it was used
        under another (or none)."""
        old = self.ids_of(vol.key)
        if old == ids:
            return
        userns.shift_tree(vol.mountpoint, old, ids)
        meta_path = self._vdir(vol.key) / META
        meta = json.loads(meta_path.read_text())
        meta["Ids"] = [ids.base, ids.count] if ids is not None else None
        tmp = meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta))
        tmp.replace(meta_path)

    def list(self, tenant: str | None = None) -> list[Volume]:
        """`tenant`'s volumes, or (None) every tenant's: the operator's view."""
        out = []
        for ref in namespace.object_keys(self.dir, META, tenant):
            with contextlib.suppress(NotFound):  # removed meanwhile, or not its own
                out.append(self._load(ref))
        return out

    def remove(self, ref: str, *, force: bool = False) -> None:
        vol = self._load(ref)
        shown = vol.name  # as its owner knows it
        snaps = [s.name for s in self.snapshots.list(vol.tenant, vol.name)]
        if snaps:  # hyper.sh's rule: a snapshot's volume stays until its snapshots go
            raise Conflict(f"remove {shown}: volume has snapshots - [{', '.join(snaps)}]: "
                           "remove them first (steelcup snapshot rm)")
        users = self.in_use(ref)
        with self._lock:
            if not users:
                users = [h for h, keys in self._holders.items() if ref in keys]
            if users:
                raise Conflict(f"remove {shown}: volume is in use - "
                               f"[{', '.join(u for u in users)}]")
            del force  # docker's force only ignores "not found" for local volumes
            if vol.size_bytes:
                self._unmount(vol)  # never delete through a mount point
            vdir = self._vdir(ref)
            doomed = vdir.with_name(f".rm-{vol.name}")
            vdir.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def usage(self, vol: Volume) -> int:
        """Host bytes the volume takes: its image's allocated blocks (read without mounting
        it), or for an unbounded volume the size of its files."""
        if vol.size_bytes:
            try:
                return (self._vdir(vol.key) / DISK).stat().st_blocks * 512
            except FileNotFoundError:
                return 0
        return _du(vol.mountpoint)

    def prune(self, tenant: str | None = None, *, all_volumes: bool = False
              ) -> tuple[builtins.list[Volume], int]:
        """Remove `tenant`'s (None: every tenant's) unused volumes (anonymous only unless
        all_volumes, like docker 23+); the volumes removed and the bytes freed."""
        removed: builtins.list[Volume] = []
        reclaimed = 0
        for vol in self.list(tenant):
            if (vol.anonymous or all_volumes) and not self.in_use(vol.key):
                reclaimed += self.usage(vol)
                self.remove(vol.key)
                removed.append(vol)
        return removed, reclaimed

    # -- mounts ------------------------------------------------------------------------------

    def _mount(self, vol: Volume) -> None:
        """Mount a bounded volume's filesystem on `_data` unless it is (under the lock)."""
        if not sysmount.is_mountpoint(vol.mountpoint):
            boundedfs.mount(self._vdir(vol.key) / DISK, vol.mountpoint)

    def _unmount(self, vol: Volume) -> None:
        """Unmount a bounded volume and remove the empty `_data` (under the lock)."""
        boundedfs.unmount(vol.mountpoint)
        try:
            vol.mountpoint.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:  # files in the bare mount point: kept, never exported
            if exc.errno != errno.ENOTEMPTY:
                raise SteelcupError(f"removing {vol.mountpoint} failed: {exc}") from exc
            log.warning("volume %s: files below its unmounted mount point %s", vol.name,
                        vol.mountpoint)

    def _hold(self, holder: str, vol: Volume) -> None:
        with self._lock:
            self._mount(vol)
            self._holders.setdefault(holder, []).append(vol.key)

    def hold(self, holder: str, ref: str) -> Path:
        """An existing volume's data dir, mounted for `holder` until `release(holder)` (as for
        a run; `docker cp` into a stopped container's volume holds it this way)."""
        vol = self._load(ref)
        if vol.size_bytes:
            self._hold(holder, vol)
        return vol.mountpoint

    def _idmapped_bind(self, holder: str, index: int, host: Path, ids: IdRange) -> Path:
        """`host` as the VM's QEMU is to see it (`IdRange.bind_map`), mounted for `holder`
        until `release(holder)`."""
        point = self.binds_dir / holder / str(index)
        with self._lock:
            point.mkdir(parents=True, exist_ok=True)
            self._holders.setdefault(holder, [])
            try:
                userns.idmapped_bind(host, point, ids.bind_map())
            except OSError as exc:
                raise SteelcupError(f"cannot map {host} into the VM's user namespace: {exc}"
                                    ) from exc
        return point

    def _file_bind(self, holder: str, index: int, plan: MountPlan, ids: IdRange | None
                   ) -> PreparedMount:
        """The single file `plan.source` (a symlink resolved, as docker does) bound on the
        mount point `index` of `holder`'s files share, read-only for a read-only mount."""
        try:  # the file itself, held open: a path swapped from here on changes nothing
            fd = os.open(os.path.realpath(plan.source), os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise InvalidArgument(f"bind source {plan.source}: {exc.strerror}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise Unsupported(f"bind source {plan.source} is neither a directory nor a "
                                  "regular file: only those can be bind-mounted")
            source = Path(f"/proc/self/fd/{fd}")
            if ids is not None:
                _check_reachable(source, ids, file=True, shown=Path(plan.source))
            files = self.binds_dir / holder / FILES_DIR
            point = files / str(index)
            with self._lock:
                self._holders.setdefault(holder, [])
                try:
                    files.mkdir(parents=True, exist_ok=True)
                    with contextlib.suppress(OSError):  # a point a cut-short run left
                        sysmount.umount(point, sysmount.MNT_DETACH)
                    point.unlink(missing_ok=True)
                    os.close(os.open(point, os.O_CREAT | os.O_EXCL | os.O_WRONLY
                                     | os.O_CLOEXEC, 0o600))
                    if ids is not None:
                        userns.idmapped_bind(source, point, ids.bind_map(),
                                             readonly=plan.readonly)
                    else:
                        sysmount.bind(source, point, readonly=plan.readonly)
                except OSError as exc:
                    raise SteelcupError(f"cannot bind {plan.source} for the VM: {exc}") from exc
        finally:
            os.close(fd)
        share = Share(FILES_TAG, files, remap_devices=True)
        return PreparedMount(plan, share, GuestMount(
            target=plan.target, fstype="bind", source=FILES_TAG, subdir=str(index),
            readonly=plan.readonly))

    def release(self, holder: str) -> None:
        """`holder` (a container's run) is done with its volumes: unmount those nobody else
        holds, and its binds. Idempotent."""
        with self._lock:
            keys = self._holders.pop(holder, [])
            still = {k for held in self._holders.values() for k in held}
            for ref in sorted(set(keys) - still):
                with contextlib.suppress(NotFound):
                    self._unmount(self._load(ref))
            _remove_binds(self.binds_dir / holder)

    def held_by(self, holder: str) -> tuple[str, ...]:
        """The volumes (keys) mounted for `holder`."""
        with self._lock:
            return tuple(self._holders.get(holder, ()))

    def recover(self, keep: Mapping[str, Sequence[str]] | None = None) -> None:
        """At daemon start: unmount what a previous daemon left mounted, and finish the
        creations and removals it cut short. Also at daemon exit. `keep`: the holders (running
        containers that outlive the daemon: live restore) whose volumes (keys) and binds stay
        mounted; at a start they are this daemon's holders from then on."""
        keep = keep or {}
        self.snapshots.recover()
        with self._lock:
            self._holders = {h: list(keys) for h, keys in keep.items()}
            kept_keys = {k for keys in keep.values() for k in keys}
            if self.binds_dir.is_dir():
                for entry in sorted(self.binds_dir.iterdir()):
                    if entry.name not in keep:
                        _remove_binds(entry)
            for tenant, space in namespace.namespaces(self.dir):
                for entry in sorted(space.iterdir()):
                    if entry.is_dir() and not namespace.is_namespace_dir(entry):
                        if namespace.key(tenant, entry.name) in kept_keys:
                            continue
                        _recover_dir(entry)

    def check_plans(self, plans: Sequence[MountPlan], tenant: str = "") -> None:
        """What `materialize` refuses, refused without making anything: a tenant's bind of a
        host path (Forbidden), a volume name or option that cannot be, a snapshot `tenant`
        does not have. (A create checks its mounts with this before it makes any volume, and
        so does `cron create` for its job's container, long before its first run.)"""
        check_tenant_mounts(plans, tenant)
        for plan in plans:
            if plan.kind is MountKind.VOLUME:
                if plan.source:
                    check_volume_name(plan.source)
                self._size(dict(plan.volume_options), tenant)

    def materialize(self, plans: Sequence[MountPlan], tenant: str = ""
                    ) -> builtins.list[MountPlan]:
        """At container create: create every volume now, in the container's `tenant`'s
        namespace, and name the anonymous ones, so the record stores names and a restarted
        container gets the same volumes back. A tenant's bind of a host path is Forbidden."""
        self.check_plans(plans, tenant)
        out = []
        for plan in plans:
            if plan.kind is MountKind.VOLUME:
                vol = self.create(plan.source or None, tenant=tenant,
                                  anonymous=not plan.source,
                                  options=dict(plan.volume_options),
                                  labels=dict(plan.volume_labels))
                plan = replace(plan, source=vol.name)
            out.append(plan)
        return out

    def prepare(self, plans: Sequence[MountPlan], rootfs: Path | None = None, *,
                holder: str, ids: IdRange | None | _DaemonIds = DAEMON_IDS, tenant: str = ""
                ) -> builtins.list[PreparedMount]:
        """Create volumes as needed (copying the image's files into a new empty volume, like
        docker), mount them for `holder` (undo with `release(holder)`, done here if this
        fails) and check binds; returns shares and guest requests in mount order. `tenant`:
        the container's, whose namespace the volume names are in (and who may not bind host
        dirs); `ids`: the id range of the VM that mounts them (its tenant's; default the
        daemon's), which its volumes are stored with."""
        vm_ids = self.ids if isinstance(ids, _DaemonIds) else ids
        check_tenant_mounts(plans, tenant)
        try:
            return self._prepare(plans, rootfs, holder, vm_ids, tenant)
        except BaseException:
            self.release(holder)
            raise

    def _prepare(self, plans: Sequence[MountPlan], rootfs: Path | None, holder: str,
                 ids: IdRange | None, tenant: str) -> builtins.list[PreparedMount]:
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
                    if ids is not None:  # the container's root made it: it is theirs
                        os.chown(host, ids.base, ids.base)
                if not host.is_dir():
                    out.append(self._file_bind(holder, i, plan, ids))
                    continue
                if ids is not None:
                    _check_reachable(host, ids)
                    host = self._idmapped_bind(holder, i, host, ids)
                name = ""
            else:
                vol = self.create(plan.source or None, tenant=tenant,
                                  anonymous=not plan.source,
                                  options=dict(plan.volume_options),
                                  labels=dict(plan.volume_labels))
                host = vol.mountpoint
                name = vol.key
                if vol.size_bytes:
                    self._hold(holder, vol)
                try:
                    self._adopt(vol, ids)
                except OSError as exc:
                    raise SteelcupError(f"re-storing volume {name}'s files for the VM failed: "
                                        f"{exc}") from exc
                if not plan.nocopy and rootfs is not None and not any(host.iterdir()):
                    try:
                        _copy_up(rootfs, plan.target, host)
                    except OSError as exc:  # shutil.Error lists every file: keep it short
                        raise SteelcupError(f"copying the image's {plan.target} into volume "
                                            f"{name} failed: {str(exc)[:300]}") from exc
            share = Share(tag, host, plan.readonly)
            out.append(PreparedMount(plan, share, GuestMount(
                target=plan.target, fstype="9p", source=tag, readonly=plan.readonly), name))
        return out


def check_tenant_mounts(plans: Sequence[MountPlan], tenant: str) -> None:
    """Forbidden for a tenant's bind of a host path: the host's directories are the
    operator's, never a tenant's (the operator on the unix socket may bind them)."""
    if not tenant:
        return
    for plan in plans:
        if plan.kind is MountKind.BIND:
            raise Forbidden(f"bind mounts of host paths are not available to tenants "
                            f"({plan.source}:{plan.target}): use a volume instead, "
                            f"-v NAME:{plan.target} or --mount type=volume")


def _recover_dir(entry: Path) -> None:
    """Unmount what a dead daemon left mounted in one volume dir; finish a cut-short creation
    or removal (.tmp-*, .rm-*)."""
    try:
        boundedfs.unmount(entry / DATA)
        if entry.name.startswith("."):
            shutil.rmtree(entry)
        elif (entry / DISK).exists():
            with contextlib.suppress(FileNotFoundError):
                (entry / DATA).rmdir()
    except (SteelcupError, OSError) as exc:
        log.warning("cleaning up volume dir %s failed: %s", entry, exc)


def _check_reachable(host: Path, ids: IdRange, *, file: bool = False,
                     shown: Path | None = None) -> None:
    """InvalidArgument, saying what to do, if the container's root could not even open the
    bind-mounted dir (or read the file): its root is an unprivileged host uid, whose
    capabilities reach only files whose owner and group the bind map maps (host ids 1..65535,
    and its own)."""
    st = host.stat()

    def mapped(n: int) -> bool:
        return 0 < n < ids.count or n == ids.base

    if mapped(st.st_uid) and mapped(st.st_gid):
        return
    group, other = (stat.S_IRGRP, stat.S_IROTH) if file else (
        stat.S_IRGRP | stat.S_IXGRP, stat.S_IROTH | stat.S_IXOTH)
    bits = group if st.st_gid == ids.base else other
    if st.st_mode & bits == bits:
        return
    raise InvalidArgument(
        f"bind source {shown or host} is out of the container's reach: it belongs to host root "
        f"(mode {stat.S_IMODE(st.st_mode):o}) and the container's root is the unprivileged "
        f"host uid {ids.base}. Let others read it (chmod o+r{'' if file else 'x'}), give it to "
        "a user, or run the daemon with --no-userns (then a container's root is host root in "
        "its binds)")


def _remove_binds(holder_dir: Path) -> None:
    """Unmount a holder's idmapped binds and remove their (then empty) mount points. Never
    deletes recursively: a bind still mounted is the host's own directory."""
    if not holder_dir.is_dir():
        return
    for point in sorted(holder_dir.iterdir()):
        if point.name == FILES_DIR and not sysmount.is_mountpoint(point):
            _remove_binds(point)  # the single-file binds' share (its points are files)
            continue
        with contextlib.suppress(OSError):
            sysmount.umount(point, sysmount.MNT_DETACH)
        try:
            if point.is_dir():
                point.rmdir()
            else:
                point.unlink()
        except OSError as exc:
            log.warning("bind mount point %s not removed: %s", point, exc)
    with contextlib.suppress(OSError):
        holder_dir.rmdir()


def _copy_up(rootfs: Path, target: str, dest: Path) -> None:
    """Image content at the mount point seeds a new volume (no symlink is followed), owners
    and modes included (as the rootfs shows them: stored ids)."""
    src = rootfs / target.lstrip("/")
    cur = rootfs
    for part in target.strip("/").split("/"):
        cur = cur / part
        if cur.is_symlink():
            return
    if src.is_dir() and not any(dest.iterdir()):
        shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
        copy_owners(src, dest)



def _du(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total
