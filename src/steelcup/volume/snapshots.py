"""Volume snapshots (hyper.sh's `snapshot create -v VOL`): a point-in-time copy of a volume that
new volumes are made from; a volume with snapshots cannot be removed.

Snapshots are per tenant like volumes (steelcup.volume.namespace): a snapshot is of one of its
tenant's volumes, new volumes are made from it only in that tenant's namespace, and it is named
daemon-wide by its key (`NAME` or `TENANT/NAME`).

A snapshot lives in ROOT/snapshots/NAME (a tenant's: ROOT/snapshots/@TENANT/NAME): `meta.json`
and the copy, `disk.img` (of a bounded
volume: its filesystem image, copied by reflink where the host filesystem can, else sparsely) or
`data/` (of an unbounded one, copied with owners and modes). A volume in use by a running
container is copied with its host-side filesystem frozen (FIFREEZE: the 9p writes of the guest,
which are synchronous, wait for the thaw), so the copy is a consistent state; an unbounded one
cannot be frozen alone and is refused while in use unless `force`.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from steelcup import boundedfs
from steelcup.errors import Conflict, InvalidArgument, NotFound
from steelcup.volume import namespace
from steelcup.volume.spec import check_volume_name
from steelcup.volume.treecopy import copy_owners

META = "meta.json"
DISK = "disk.img"
DATA = "data"
_FICLONE = 0x40049409
_FIFREEZE = 0xC0045877
_FITHAW = 0xC0045878


@dataclass(frozen=True)
class Snapshot:
    name: str
    volume: str  # the name of the volume (of the same tenant) it is a copy of
    created: str
    size_bytes: int  # the volume's filesystem size; 0: an unbounded volume's files
    ids: tuple[int, int] | None  # the id range its files are stored with (volume meta `Ids`)
    tenant: str = ""  # its owner's ("": the operator's)

    @property
    def key(self) -> str:
        return namespace.key(self.tenant, self.name)

    def to_json(self, keys: bool = False) -> dict[str, object]:
        """As its tenant sees it; with `keys`, as the operator does (names with the tenant)."""
        return {"Name": self.key if keys else self.name,
                "Volume": namespace.key(self.tenant, self.volume) if keys else self.volume,
                "CreatedAt": self.created, "SizeBytes": self.size_bytes,
                "Ids": list(self.ids) if self.ids else None}


def clone_file(src: Path, dst: Path) -> None:
    """`dst` shares `src`'s blocks (reflink) where the filesystem can, else a sparse copy."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        try:
            fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
            return
        except OSError:
            pass
    boundedfs.sparse_copy(src, dst)


@contextlib.contextmanager
def frozen(mountpoint: Path) -> Iterator[None]:
    """The filesystem mounted at `mountpoint` frozen (writes wait) for the duration."""
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _FIFREEZE, 0)
        try:
            yield
        finally:
            fcntl.ioctl(fd, _FITHAW, 0)
    finally:
        os.close(fd)


class SnapshotStore:
    """Snapshots under `root`/snapshots. `volume_state(name)` tells, for an existing volume:
    its data dir, its disk image (None: unbounded), whether it is mounted now, whether a
    running container uses it, its size and its stored id range (VolumeManager provides it,
    by the volume's key)."""

    def __init__(self, root: Path, volume_state: Callable[[str], VolumeState]) -> None:
        self.dir = root / "snapshots"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.volume_state = volume_state
        self._lock = threading.Lock()

    def _path(self, ref: str) -> Path:
        tenant, name = namespace.split(ref)
        return namespace.tenant_dir(self.dir, tenant) / name

    def _load(self, ref: str) -> Snapshot:
        tenant, name = namespace.split(ref)
        try:
            meta = json.loads((self._path(ref) / META).read_text())
        except (OSError, ValueError):
            raise NotFound(f"no such snapshot: {ref}") from None
        if (meta.get("Tenant") or "") != tenant:  # moved by hand: never another's by mistake
            raise NotFound(f"no such snapshot: {ref}")
        ids = meta.get("Ids")
        return Snapshot(name, meta["Volume"], meta["CreatedAt"], int(meta["SizeBytes"]),
                        (int(ids[0]), int(ids[1])) if ids else None, tenant)

    def get(self, ref: str) -> Snapshot:
        """The snapshot with key `ref` (NotFound; InvalidArgument for a bad name)."""
        return self._load(ref)

    def resolve(self, ref: str, tenant: str | None) -> str:
        """The key of the snapshot `ref` names for `tenant` (None: the operator, who names a
        tenant's by its key); another tenant's is exactly as missing as a missing one."""
        with contextlib.suppress(InvalidArgument, NotFound):
            if tenant is None:
                return self._load(ref).key
            if "/" not in ref:
                return self._load(namespace.key(tenant, ref)).key
        raise NotFound(f"no such snapshot: {ref}")

    def list(self, tenant: str | None = None, volume: str | None = None
             ) -> builtins.list[Snapshot]:
        """`tenant`'s snapshots (None: every tenant's); with `volume`, only those of the
        volume of that name (in `tenant`'s namespace)."""
        out = []
        for ref in namespace.object_keys(self.dir, META, tenant):
            with contextlib.suppress(NotFound):  # removed meanwhile
                snap = self._load(ref)
                if volume is None or snap.volume == volume:
                    out.append(snap)
        return out

    def create(self, volume: str, name: str | None = None, *, force: bool = False) -> Snapshot:
        """A snapshot of the volume with key `volume`, named `name` in its tenant's
        namespace."""
        tenant, volume_name = namespace.split(volume)
        if name is None:
            name = f"{volume_name[:24]}-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"
        check_volume_name(name)
        state = self.volume_state(volume)
        space = namespace.tenant_dir(self.dir, tenant)
        with self._lock:
            if (space / name / META).exists():
                raise Conflict(f"snapshot {name} already exists")
            space.mkdir(exist_ok=True)
            tmp = space / f".tmp-{name}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                if state.disk is not None:
                    freeze = frozen(state.data) if state.mounted else contextlib.nullcontext()
                    with freeze:
                        clone_file(state.disk, tmp / DISK)
                else:
                    if state.in_use and not force:
                        raise Conflict(f"volume {volume_name} is in use by a running "
                                       "container and has no filesystem of its own to "
                                       "freeze; stop it, or snapshot anyway with --force "
                                       "(not point-in-time)")
                    copy_tree(state.data, tmp / DATA)
                meta = {"Volume": volume_name, "SizeBytes": state.size_bytes,
                        "CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "Ids": list(state.ids) if state.ids else None, "Tenant": tenant}
                (tmp / META).write_text(json.dumps(meta))
                tmp.rename(space / name)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return self._load(namespace.key(tenant, name))

    def remove(self, ref: str) -> None:
        snap = self.get(ref)
        path = self._path(ref)
        with self._lock:
            doomed = path.with_name(f".rm-{snap.name}")
            path.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def source(self, ref: str) -> tuple[Snapshot, Path]:
        """A snapshot and its copy (`disk.img` or `data/`), to make a volume from."""
        snap = self.get(ref)
        base = self._path(ref)
        return snap, (base / DISK if snap.size_bytes else base / DATA)

    def recover(self) -> None:
        """Finish creations and removals a previous daemon cut short."""
        for _tenant, space in namespace.namespaces(self.dir):
            for entry in space.iterdir():
                if entry.name.startswith("."):
                    shutil.rmtree(entry, ignore_errors=True)


@dataclass(frozen=True)
class VolumeState:
    data: Path
    disk: Path | None
    mounted: bool
    in_use: bool
    size_bytes: int
    ids: tuple[int, int] | None


def copy_tree(src: Path, dst: Path) -> None:
    """`src` copied to `dst` with owners and modes (set-id bits, which chown drops, too)."""
    if not src.is_dir():
        raise InvalidArgument(f"{src} is not a directory")
    shutil.copytree(src, dst, symlinks=True)
    copy_owners(src, dst)
