"""The local image store: image records, tags and lookups in SQLite, unpacked layers on disk.

Layout under `root`: `blobs/sha256/<hex>` (see `blobs.py`), `layers/<diff-id hex>/` (one
unpacked layer, shared by every image that uses it), `tmp/` (everything in flight; emptied at
start, so a crash never leaves a partial blob or layer). Also: registry manifests and repo
digests (for push/pull), history and garbage collection; archives are in `archive.py`.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import gzip
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from steelcup import sysmount, userns
from steelcup.errors import Conflict, ImageError, InvalidArgument, NotFound
from steelcup.idmap import IdRange
from steelcup.image.archive import archive_images, spool_archive, write_archive
from steelcup.image.blobs import COPY_CHUNK, BlobStore, digest_hex, fsync_dir
from steelcup.image.config import ImageConfig
from steelcup.image.layers import LayerLimits, apply_layer
from steelcup.image.manifest import DOCKER_LAYER_GZIP, OCI_LAYER_ZSTD, host_arch
from steelcup.image.reference import (
    Reference,
    is_full_id,
    is_id_prefix,
    parse_reference,
    parse_tag_reference,
)
from steelcup.tenancy.quota import QuotaExceeded, Usage, exceeded_message
from steelcup.untrusted_json import decode_json

# the keys of an image's inner config that `ImageConfig` models
_CONFIG_KEYS = frozenset({
    "User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels",
    "StopSignal",
})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS image_records (
    id TEXT PRIMARY KEY,               -- sha256:<hex of config blob>
    raw_config BLOB NOT NULL,
    created TEXT NOT NULL,
    architecture TEXT NOT NULL,
    os TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    manifest_digests TEXT NOT NULL DEFAULT '[]',  -- JSON list, for name@digest lookups
    added_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS image_layer_refs (
    image_id TEXT NOT NULL,
    position INTEGER NOT NULL,         -- 0 = lowest layer
    diff_id TEXT NOT NULL,
    PRIMARY KEY (image_id, position)
);
CREATE INDEX IF NOT EXISTS image_layer_refs_diff ON image_layer_refs (diff_id);
CREATE TABLE IF NOT EXISTS image_layers (
    diff_id TEXT PRIMARY KEY,          -- sha256:<hex of uncompressed tar>
    blob_digest TEXT NOT NULL,         -- the blob it was unpacked from
    size_bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS image_manifests (
    digest TEXT PRIMARY KEY,           -- registry manifest digest (pulled or pushed)
    image_id TEXT NOT NULL,
    media_type TEXT NOT NULL,
    raw BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS image_manifests_image ON image_manifests (image_id);
CREATE TABLE IF NOT EXISTS build_cache (
    tenant TEXT NOT NULL,              -- whose builds may reuse it ("" = the operator's)
    key TEXT NOT NULL,                 -- build.plan.cache_key of the step
    image_id TEXT NOT NULL,            -- the step's image (held by this row alone, or owned)
    PRIMARY KEY (tenant, key)
);
CREATE INDEX IF NOT EXISTS build_cache_image ON build_cache (image_id);
"""

# What is per tenant ("" = the operator's): the names (tags, repo digests) and which images a
# tenant has. Records, layers and blobs are shared and content-addressed underneath.
_TENANT_TABLES = (
    """CREATE TABLE IF NOT EXISTS image_tags (
    tenant TEXT NOT NULL,
    ref TEXT NOT NULL,                 -- familiar form, e.g. busybox:latest
    image_id TEXT NOT NULL,
    PRIMARY KEY (tenant, ref)
)""",
    "CREATE INDEX IF NOT EXISTS image_tags_image ON image_tags (image_id)",
    """CREATE TABLE IF NOT EXISTS image_repo_digests (
    tenant TEXT NOT NULL,
    repo TEXT NOT NULL,                -- familiar repository name, e.g. 127.0.0.1:5000/ns/app
    digest TEXT NOT NULL,
    image_id TEXT NOT NULL,
    PRIMARY KEY (tenant, repo, digest)
)""",
    """CREATE TABLE IF NOT EXISTS image_owners (
    tenant TEXT NOT NULL,              -- pulled, loaded, imported, committed or tagged by it
    image_id TEXT NOT NULL,
    PRIMARY KEY (tenant, image_id)
)""",
    "CREATE INDEX IF NOT EXISTS image_owners_image ON image_owners (image_id)",
    """CREATE TABLE IF NOT EXISTS blob_sources (
    tenant TEXT NOT NULL,              -- whose pull or push saw it there
    digest TEXT NOT NULL,              -- a blob known to exist in registry/repo (cross-repo mount)
    registry TEXT NOT NULL,
    repo TEXT NOT NULL,
    PRIMARY KEY (tenant, digest, registry, repo)
)""",
)
# A store from before tenants: how each table's rows become the operator's.
_TO_OPERATOR = {
    "image_tags": "INSERT INTO image_tags (tenant, ref, image_id) "
                  "SELECT '', ref, image_id FROM image_tags_v1",
    "image_repo_digests": "INSERT INTO image_repo_digests (tenant, repo, digest, image_id) "
                          "SELECT '', repo, digest, image_id FROM image_repo_digests_v1",
    "blob_sources": "INSERT INTO blob_sources (tenant, digest, registry, repo) "
                    "SELECT '', digest, registry, repo FROM blob_sources_v1",
}


@dataclass(frozen=True)
class Image:
    """One image record. `id` is `sha256:<hex>` of `raw_config`."""

    id: str
    repo_tags: tuple[str, ...]
    config: ImageConfig
    created: str
    architecture: str
    os: str
    diff_ids: tuple[str, ...]
    size_bytes: int
    raw_config: bytes
    repo_digests: tuple[str, ...] = ()

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]


@dataclass(frozen=True)
class LoadedImage:
    """An image `load` stored, and the tags the archive itself gave it (the image may have
    others from before, which `docker load` does not report)."""

    image: Image
    tags: tuple[str, ...]


@dataclass(frozen=True)
class StoredManifest:
    """A registry manifest recorded for an image (kept verbatim so its digest is stable)."""

    digest: str
    media_type: str
    raw: bytes


@dataclass(frozen=True)
class LayerBlob:
    """A compressed layer blob ready to push: what goes into a manifest's `layers`."""

    diff_id: str
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class HistoryEntry:
    """One line of `docker history`, oldest first; `size_bytes` is 0 for empty layers."""

    created: str
    created_by: str
    comment: str
    size_bytes: int
    empty_layer: bool


class Lease:
    """Digests (blobs, and diff ids of layers) that `prune` must not collect yet."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self.digests: set[str] = set()

    def add(self, digest: str) -> None:
        with self._lock:
            self.digests.add(digest)


@dataclass(frozen=True)
class PruneResult:
    deleted: builtins.list[str]  # "Untagged: X" / "Deleted: sha256:..." as `remove` returns
    reclaimed_bytes: int


class ImageStore:
    """Images on this host. Thread-safe; all mutations are serialised by one lock."""

    def __init__(
        self,
        root: Path,
        db: sqlite3.Connection,
        *,
        in_use: Callable[[str, str | None], bool] | None = None,
        limits: LayerLimits | None = None,
    ) -> None:
        self.root = root
        self._db = db
        # (image id, tenant) -> whether a container of `tenant` (None: of anyone) uses it
        self.in_use: Callable[[str, str | None], bool] = in_use or (lambda _id, _tenant: False)
        # Told of each image a tenant gets (pull, load, import, build, commit) and who ("":
        # the operator), from whichever thread registered it: e.g. the block root's erofs is
        # queued then (the daemon sets it).
        self.on_added: Callable[[Image, str], None] | None = None
        # Told of each image id deleted (its last tenant and container let go of it).
        self.on_deleted: Callable[[str], None] | None = None
        self.limits = limits or LayerLimits()
        # a tenant's `images` quota (None: unlimited, a single-user daemon)
        self.images_quota: Callable[[str], int] | None = None
        self._lock = threading.RLock()
        self._leases: dict[int, set[str]] = {}
        self._lease_seq = 0
        self._layers = root / "layers"
        # The layers as a VM's QEMU sees them: one idmapped bind of `layers/` per id range.
        self._views_dir = root / "idmapped"
        self._views: dict[IdRange, Path] = {}
        self._tmp = root / "tmp"
        self._blobs = BlobStore(root / "blobs" / "sha256", self._tmp)
        for d in (self._blobs.root, self._layers, self._tmp):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():  # from a crash mid-write
            _rmtree(leftover)
        with self._db:
            self._db.executescript(_SCHEMA)
        self._open_tenant_tables()

    def _open_tenant_tables(self) -> None:
        """Create the per-tenant tables. A store from before tenants: its tags and repo digests
        become the operator's (""), and so do all its images, in one transaction."""
        def columns(table: str) -> set[str]:
            return {str(r[1]) for r in self._db.execute(f"PRAGMA table_info({table})")}

        old = [t for t in _TO_OPERATOR if columns(t) and "tenant" not in columns(t)]
        with self._tx():
            for table in old:
                self._db.execute(f"ALTER TABLE {table} RENAME TO {table}_v1")
            for statement in _TENANT_TABLES:
                self._db.execute(statement)
            for table in old:
                self._db.execute(_TO_OPERATOR[table])
                self._db.execute(f"DROP TABLE {table}_v1")
            if "image_tags" in old:
                self._db.execute("INSERT OR IGNORE INTO image_owners (tenant, image_id) "
                                 "SELECT '', id FROM image_records")

    # --- public API ------------------------------------------------------------------------
    def import_rootfs(
        self,
        stream: BinaryIO,
        ref: str | None,
        changes: ImageConfig | None = None,
        *,
        tenant: str | None = None,
    ) -> Image:
        """Make a single-layer image from a rootfs tar (plain/gzip/zstd), like `docker import`.

        Here and below, `tenant` is whose names a call reads and writes: None is the operator,
        who writes as "" and reads every tenant's (see `_resolve`)."""
        parsed = parse_tag_reference(ref) if ref else None
        with self._lock:
            blob = self._blobs.write(stream)
            diff_id, _size = self._ensure_layer(blob.digest, None)
            now = _now()
            doc = {
                "architecture": host_arch(),
                "os": "linux",
                "created": now,
                "config": (changes or ImageConfig()).to_dict(),
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                "history": [{"created": now, "comment": "Imported from tarball"}],
            }
            raw = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
            config_blob = self._blobs.write(io.BytesIO(raw))
            tags = [parsed.familiar()] if parsed else []
            return self._register(config_blob.digest, raw, [blob.digest], tags, [], tenant=tenant)

    def commit(
        self,
        base_id: str,
        layer: BinaryIO,
        *,
        config: ImageConfig,
        ref: str | None = None,
        comment: str = "",
        author: str = "",
        created_by: str = "",
        tenant: str | None = None,
    ) -> Image:
        """A new image: the layers of image `base_id` plus the layer tar in `layer` on top;
        it (and its tag) are `tenant`'s. `base_id` is the full id of the container's image.

        `config` replaces the run-time keys it models (Cmd, Env, ...); other keys of the base
        config (Healthcheck, Shell, ...) are kept. Used by `docker commit`.
        """
        parsed = parse_tag_reference(ref) if ref else None
        with self._lock:
            base = self._image(self._resolve(base_id, None), None)
            base_blobs = []
            for diff_id in base.diff_ids:
                row = self._db.execute(
                    "SELECT blob_digest FROM image_layers WHERE diff_id = ?", (diff_id,)
                ).fetchone()
                if row is None:
                    raise ImageError(f"layer {diff_id[7:19]} of image {base.short_id} is missing")
                base_blobs.append(str(row[0]))
            blob = self._blobs.write(layer)
            created: set[str] = {blob.digest}
            try:
                diff_id, _size = self._ensure_layer(blob.digest, None)
                doc = json.loads(base.raw_config)
                now = _now()
                inner = doc.get("config") if isinstance(doc.get("config"), dict) else {}
                doc["config"] = {
                    **{k: v for k, v in inner.items() if k not in _CONFIG_KEYS},
                    **config.to_dict(),
                }
                history = doc.get("history")
                if not isinstance(history, list) or not history:
                    history = [{"created": base.created} for _ in base.diff_ids]
                entry: dict[str, Any] = {"created": now, "created_by": created_by}
                if author:
                    entry["author"] = author
                if comment:
                    entry["comment"] = comment
                doc["history"] = [*history, entry]
                doc["rootfs"] = {"type": "layers", "diff_ids": [*base.diff_ids, diff_id]}
                doc["created"] = now
                if author:
                    doc["author"] = author
                else:
                    doc.pop("author", None)
                raw = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
                config_blob = self._blobs.write(io.BytesIO(raw))
                created.add(config_blob.digest)
                tags = [parsed.familiar()] if parsed else []
                return self._register(
                    config_blob.digest, raw, [*base_blobs, blob.digest], tags, [], tenant=tenant
                )
            finally:
                self._gc_blobs(created)

    def derive(
        self,
        base_id: str | None,
        layer: BinaryIO | None,
        *,
        config: dict[str, Any],
        history: dict[str, Any] | None,
        cache: tuple[str | None, str],
    ) -> Image:
        """A build step's image: the layers of `base_id` (none: scratch) plus the tar `layer`
        if given, `config` as its whole inner config, `history` appended to the base's (None:
        the empty image of FROM scratch). The build cache entry `cache` (tenant, key) holds
        it, in the same transaction: until a build `adopt`s it, no tenant has it, and
        `prune_build_cache` collects it."""
        with self._lock:
            base_doc: dict[str, Any] = {}
            base_blobs: builtins.list[str] = []
            base_diff_ids: tuple[str, ...] = ()
            if base_id is not None:
                base = self._image(self._resolve(base_id, None), None)
                base_doc = json.loads(base.raw_config)
                base_diff_ids = base.diff_ids
                for diff_id in base.diff_ids:
                    found = self._layer_blob(diff_id)
                    if found is None:
                        raise ImageError(f"layer {diff_id[7:19]} of image {base.short_id} is "
                                         "missing")
                    base_blobs.append(found[0])
            created: set[str] = set()
            try:
                layer_blobs = list(base_blobs)
                diff_ids = list(base_diff_ids)
                if layer is not None:
                    blob = self._blobs.write(layer)
                    created.add(blob.digest)
                    diff_id, _size = self._ensure_layer(blob.digest, None)
                    layer_blobs.append(blob.digest)
                    diff_ids.append(diff_id)
                now = _now()
                old_history = base_doc.get("history")
                if not isinstance(old_history, list):
                    old_history = []
                entries = list(old_history)
                if history is not None:
                    entry = {"created": now, **history}
                    if layer is None:
                        entry["empty_layer"] = True
                    entries.append(entry)
                    if entry.get("author"):
                        base_doc["author"] = entry["author"]
                doc = {
                    "architecture": base_doc.get("architecture") or host_arch(),
                    "os": "linux",
                    "created": now,
                    "config": config,
                    "rootfs": {"type": "layers", "diff_ids": diff_ids},
                    "history": entries,
                }
                if base_doc.get("author"):
                    doc["author"] = base_doc["author"]
                raw = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
                config_blob = self._blobs.write(io.BytesIO(raw))
                created.add(config_blob.digest)
                with self._tx():
                    image = self._register(config_blob.digest, raw, layer_blobs, [], [],
                                           own=False)
                    old = self._db.execute(
                        "SELECT image_id FROM build_cache WHERE tenant = ? AND key = ?",
                        (cache[0] or "", cache[1])).fetchone()
                    self._db.execute(
                        "INSERT OR REPLACE INTO build_cache (tenant, key, image_id) "
                        "VALUES (?, ?, ?)", (cache[0] or "", cache[1], image.id))
                if old is not None and old[0] != image.id:
                    self._drop_unheld(str(old[0]))  # a --no-cache build replaced it
                return image
            finally:
                self._gc_blobs(created)

    def cached(self, tenant: str | None, key: str) -> Image | None:
        """The image of build step `key` in `tenant`'s build cache, if there is one."""
        with self._lock:
            row = self._db.execute(
                "SELECT image_id FROM build_cache WHERE tenant = ? AND key = ?",
                (tenant or "", key)).fetchone()
            if row is None:
                return None
            try:
                return self._image(str(row[0]), None)
            except NotFound:
                return None

    def adopt(self, image_id: str, tags: builtins.list[str], tenant: str | None) -> Image:
        """A build's result becomes `tenant`'s image with `tags` (its `images` quota applies)."""
        names = [parse_tag_reference(t).familiar() for t in tags]
        with self._lock, self._tx():
            self._add_names(image_id, names, tenant or "")
        return self._image(image_id, tenant)

    def prune_build_cache(self, tenant: str | None) -> PruneResult:
        """Forget `tenant`'s (None: everyone's) build cache; the intermediate images it alone
        held are deleted. Returns their ids and the bytes freed on disk."""
        with self._lock:
            where, args = _tenant_is(tenant)
            rows = self._db.execute(f"SELECT DISTINCT image_id FROM build_cache WHERE 1 {where}",
                                    args).fetchall()
            before = self._usage_bytes()
            with self._tx():
                self._db.execute(f"DELETE FROM build_cache WHERE 1 {where}", args)
            deleted = [f"Deleted: {image_id}" for (image_id,) in rows
                       if self._drop_unheld(image_id)]
            self._collect_garbage()
            return PruneResult(deleted, max(0, before - self._usage_bytes()))

    def _drop_unheld(self, image_id: str) -> bool:
        """Delete an image no tenant has, no build cache holds and no container uses."""
        held = self._db.execute(
            "SELECT 1 FROM image_owners WHERE image_id = ? "
            "UNION SELECT 1 FROM build_cache WHERE image_id = ? LIMIT 1",
            (image_id, image_id)).fetchone()
        if held is not None or self.in_use(image_id, None):
            return False
        self._delete(image_id)
        return True

    def load(self, stream: BinaryIO, *, tenant: str | None = None) -> builtins.list[LoadedImage]:
        """Load a docker-archive (manifest.json) or OCI image-layout (index.json) tarball."""
        with self._lock:
            created: set[str] = set()
            try:
                files = spool_archive(stream, self._blobs, created)
                images = [
                    LoadedImage(
                        self._register(
                            found.config_digest,
                            found.raw_config,
                            found.layer_blobs,
                            found.tags,
                            found.manifest_digests,
                            tenant=tenant,
                        ),
                        tuple(found.tags),
                    )
                    for found in archive_images(files, self._blobs)
                ]
            finally:
                self._gc_blobs(created)
            return images

    def get(self, ref_or_id: str, tenant: str | None = None) -> Image:
        """Find an image by name[:tag], name@digest, full id or unique short id prefix, among
        `tenant`'s (None: anyone's); another tenant's is exactly as missing as a missing one."""
        return self._image(self._resolve(ref_or_id, tenant), tenant)

    def scoped_ref(self, ref: str, tenant: str | None) -> str:
        """`ref` itself if it names one of `tenant`'s images (None: anyone's), or is a bare
        repository name in which `tenant` has a tag (a push of all its tags); else NotFound
        exactly as for a missing image. The API's one lookup for `/images/{name}` routes: a
        reference stays a reference (rmi, save and push treat a tag and an id differently)."""
        if tenant is None:
            return ref
        try:
            self._resolve(ref, tenant)
        except NotFound:
            with contextlib.suppress(InvalidArgument):
                parsed = parse_reference(ref, default_tag=False)
                if parsed.tag is None and parsed.digest is None and self._db.execute(
                    "SELECT 1 FROM image_tags WHERE tenant = ? AND substr(ref, 1, ?) = ?",
                    (tenant, len(parsed.familiar_name) + 1, parsed.familiar_name + ":"),
                ).fetchone():
                    return ref
            raise
        return ref

    def list(self, tenant: str | None = None, *,
             intermediates: bool = False) -> builtins.list[Image]:
        """Every image (the operator's view), or the ones `tenant` has; a build's intermediate
        images (held only by a build cache) only with `intermediates` (docker's `images -a`)."""
        where, args = _owned_by(tenant)
        if not intermediates:
            where += (" AND (id IN (SELECT image_id FROM image_owners) "
                      "OR id NOT IN (SELECT image_id FROM build_cache))")
        query = f"SELECT id FROM image_records WHERE 1 {where} ORDER BY added_at DESC, id"
        rows = self._db.execute(query, args).fetchall()
        return [self._image(r[0], tenant) for r in rows]

    def tag(self, src: str, ref: str, tenant: str | None = None) -> None:
        """Point `tenant`'s `ref` (name[:tag], default latest) at the image `src` resolves to."""
        target = parse_tag_reference(ref)
        with self._lock:
            image_id = self._resolve(src, tenant)
            with self._tx():
                self._add_names(image_id, [target.familiar()], tenant or "")

    def remove(
        self, ref_or_id: str, force: bool = False, tenant: str | None = None
    ) -> builtins.list[str]:
        """Untag and/or delete, like `docker rmi`. Returns "Untagged: X" / "Deleted: sha256:...".

        A tenant's rmi removes its names and its hold on the image; the image's record, layers
        and blobs go only when no tenant has it any more (and no container uses it). The answer
        is the same either way, so it tells nothing of other tenants."""
        with self._lock:
            image_id = self._resolve(ref_or_id, tenant)
            by_tag = self._tag_key(ref_or_id)
            if tenant is None and by_tag is not None:  # the operator removes a tag as its
                holders = {str(r[0]) for r in self._db.execute(  # holder: "" first
                    "SELECT tenant FROM image_tags WHERE ref = ? AND image_id = ?",
                    (by_tag, image_id))}
                if "" in holders or len(holders) == 1:
                    tenant = "" if "" in holders else holders.pop()
            tags = self._tags_of(image_id, tenant)
            short = image_id.removeprefix("sha256:")[:12]
            in_use = self.in_use(image_id, tenant)
            if by_tag is not None and by_tag in tags:
                if len(tags) > 1:
                    self._untag(image_id, [by_tag], tenant)
                    return [f"Untagged: {by_tag}"]
                if in_use:
                    if not force:
                        raise Conflict(
                            f"conflict: unable to remove repository reference {ref_or_id!r} "
                            f"(must force) - image {short} is used by a container"
                        )
                    self._untag(image_id, [by_tag], tenant)
                    return [f"Untagged: {by_tag}"]
            else:
                if in_use:
                    raise Conflict(
                        f"conflict: unable to delete {short} (cannot be forced) - "
                        "image is being used by a container"
                    )
                if len(tags) > 1 and not force:
                    raise Conflict(
                        f"conflict: unable to delete {short} (must be forced) - "
                        "image is referenced in multiple repositories"
                    )
            self._untag(image_id, tags, tenant)
            self._disown(image_id, tenant)
            return [f"Untagged: {t}" for t in tags] + [f"Deleted: {image_id}"]

    def layer_dirs(self, image: Image, ids: IdRange | None = None) -> builtins.list[Path]:
        """The unpacked layer directories of `image`, lowest first; with `ids`, as a QEMU
        in that user namespace is to see them (the file of uid k shows as `ids.to_host(k)`)."""
        dirs = [self._layers / d.removeprefix("sha256:") for d in image.diff_ids]
        for d in dirs:
            if not d.is_dir():
                raise ImageError(f"layer {d.name[:12]} of image {image.short_id} is missing")
        if ids is None:
            return dirs
        view = self._view(ids)
        return [view / d.name for d in dirs]

    def _view(self, ids: IdRange) -> Path:
        with self._lock:
            view = self._views.get(ids)
            if view is None:
                view = self._views_dir / str(ids.base)
                view.mkdir(parents=True, exist_ok=True)
                if sysmount.is_mountpoint(view):  # a previous daemon's, maybe another map
                    sysmount.umount(view, sysmount.MNT_DETACH)
                try:
                    userns.idmapped_bind(self._layers, view, ids.ns_map())
                except OSError as exc:
                    raise ImageError(f"cannot map image layers into the VMs' user namespace: "
                                     f"{exc}") from exc
                self._views[ids] = view
            return view

    def close(self) -> None:
        """Undo the layer views (overlays still using one keep it until they go)."""
        with self._lock:
            for view in self._views.values():
                with contextlib.suppress(OSError):
                    sysmount.umount(view, sysmount.MNT_DETACH)
            self._views.clear()

    def blob_path(self, digest: str) -> Path:
        return self._blobs.path(digest)

    # --- registry support (pull/push) --------------------------------------------------------
    @contextlib.contextmanager
    def lease(self) -> Iterator[Lease]:
        """Protect blobs and layers a pull is working with from `prune` until it registers them."""
        with self._lock:
            self._lease_seq += 1
            key = self._lease_seq
            lease = Lease(self._lock)
            self._leases[key] = lease.digests
        try:
            yield lease
        finally:
            with self._lock:
                del self._leases[key]

    def has_blob(self, digest: str) -> bool:
        return self._blobs.has(digest)

    def write_blob(self, src: IO[bytes], expected: str, expected_size: int | None = None) -> int:
        """Store a blob whose digest (and size) are known in advance; returns its size.

        Nothing appears under the digest unless the whole content matched.
        """
        return self._blobs.write(src, expected, expected_size).size

    def has_layer(self, diff_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM image_layers WHERE diff_id = ?", (diff_id,))
        return row.fetchone() is not None and (self._layers / digest_hex(diff_id)).is_dir()

    def ensure_layer(self, blob_digest: str, diff_id: str) -> int:
        """Unpack a stored layer blob (verifying it against `diff_id`); returns the tar size.

        Safe to call from several threads at once for different layers.
        """
        return self._ensure_layer(blob_digest, diff_id)[1]

    def register_pulled(
        self,
        *,
        raw_config: bytes,
        layer_blobs: builtins.list[str],
        tag: str | None,
        repo: str,
        manifest: StoredManifest,
        repo_digest: str,
        registry: str,
        remote_repo: str,
        tenant: str | None = None,
    ) -> Image:
        """Record an image whose config and layer blobs are stored and unpacked, as `tenant`'s.

        `tag` is the familiar `repo:tag` to point at it (None for a pull by digest); `repo` is
        the familiar repository name for RepoDigests.
        """
        config_digest = "sha256:" + hashlib.sha256(raw_config).hexdigest()
        with self._lock:
            image = self._register(
                config_digest,
                raw_config,
                layer_blobs,
                [tag] if tag else [],
                [],
                manifest=manifest,
                repo=repo,
                repo_digest=repo_digest,
                tenant=tenant,
            )
            self.record_blob_sources(registry, remote_repo, [config_digest, *layer_blobs],
                                     tenant)
            return self._image(image.id, tenant)

    def record_push(
        self,
        image_id: str,
        repo: str,
        manifest: StoredManifest,
        registry: str,
        remote_repo: str,
        blobs: builtins.list[str],
        tenant: str | None = None,
    ) -> None:
        """Remember a pushed manifest: `tenant`'s RepoDigests, and where its blobs now live
        (for mounts)."""
        with self._lock, self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO image_manifests (digest, image_id, media_type, raw) "
                "VALUES (?, ?, ?, ?)",
                (manifest.digest, image_id, manifest.media_type, manifest.raw),
            )
            self._db.execute(
                "INSERT OR REPLACE INTO image_repo_digests (tenant, repo, digest, image_id) "
                "VALUES (?, ?, ?, ?)",
                (tenant or "", repo, manifest.digest, image_id),
            )
            self._insert_sources(registry, remote_repo, blobs, tenant)

    def record_blob_sources(
        self, registry: str, remote_repo: str, blobs: builtins.list[str],
        tenant: str | None = None,
    ) -> None:
        with self._lock, self._tx():
            self._insert_sources(registry, remote_repo, blobs, tenant)

    def blob_sources(
        self, digest: str, registry: str, tenant: str | None = None
    ) -> builtins.list[str]:
        """Repositories on `registry` that `tenant`'s pulls and pushes (None: anyone's) saw
        holding blob `digest`: candidates for a mount. Never another tenant's, whose
        repository names a push would otherwise show to the registry and in its progress."""
        where, args = _tenant_is(tenant)
        rows = self._db.execute(
            f"SELECT DISTINCT repo FROM blob_sources WHERE digest = ? AND registry = ? {where} "
            "ORDER BY repo",
            (digest, registry, *args),
        )
        return [r[0] for r in rows]

    def manifests(self, image_id: str) -> builtins.list[StoredManifest]:
        rows = self._db.execute(
            "SELECT digest, media_type, raw FROM image_manifests WHERE image_id = ? "
            "ORDER BY digest",
            (image_id,),
        )
        return [StoredManifest(r[0], r[1], bytes(r[2])) for r in rows]

    def push_layers(self, image: Image) -> builtins.list[LayerBlob]:
        """The distributable (compressed) blob of every layer, gzipping uncompressed ones once.

        A layer loaded from an uncompressed docker-archive is replaced by its gzip form, so the
        same image pushes with the same digests every time.
        """
        out: builtins.list[LayerBlob] = []
        for diff_id in image.diff_ids:
            row = self._db.execute(
                "SELECT blob_digest FROM image_layers WHERE diff_id = ?", (diff_id,)
            ).fetchone()
            if row is None or not self.has_blob(row[0]):
                raise ImageError(
                    f"layer {diff_id[7:19]} of image {image.short_id} has no stored blob"
                )
            digest = str(row[0])
            with open(self.blob_path(digest), "rb") as f:
                head = f.read(4)
            if head.startswith(b"\x1f\x8b"):
                media = DOCKER_LAYER_GZIP
            elif head.startswith(b"\x28\xb5\x2f\xfd"):
                media = OCI_LAYER_ZSTD
            else:
                digest = self._gzip_layer(diff_id, digest)
                media = DOCKER_LAYER_GZIP
            size = self.blob_path(digest).stat().st_size
            out.append(LayerBlob(diff_id, digest, size, media))
        return out

    def _gzip_layer(self, diff_id: str, plain_digest: str) -> str:
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="gz-")
        try:
            with os.fdopen(fd, "wb") as raw_out, open(self.blob_path(plain_digest), "rb") as src:
                with gzip.GzipFile(fileobj=raw_out, mode="wb", compresslevel=6, mtime=0) as gz:
                    shutil.copyfileobj(src, gz, COPY_CHUNK)
            with open(tmp_name, "rb") as packed:
                blob = self._blobs.write(packed)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
        with self._lock:
            with self._tx():
                self._db.execute(
                    "UPDATE image_layers SET blob_digest = ? WHERE diff_id = ?",
                    (blob.digest, diff_id),
                )
            self._gc_blobs({plain_digest})
        return blob.digest

    # --- save / history / prune -------------------------------------------------------------
    def save(
        self, refs: builtins.list[str], out: BinaryIO, tenant: str | None = None
    ) -> None:
        """Write `refs` as one tar stream to `out` (need not be seekable); see `write_archive`."""
        if not refs:
            raise InvalidArgument("no image given to save")
        chosen: dict[str, builtins.list[str]] = {}
        for ref in refs:
            image_id = self._resolve(ref, tenant)
            tags = chosen.setdefault(image_id, [])
            key = self._tag_key(ref)
            if key is not None and key not in tags:
                tags.append(key)
        images = [(self._image(i, tenant), tags) for i, tags in chosen.items()]
        write_archive(out, images, self._blobs, self._layer_blob)

    def _layer_size(self, diff_id: str) -> int:
        row = self._db.execute(
            "SELECT size_bytes FROM image_layers WHERE diff_id = ?", (diff_id,)
        ).fetchone()
        if row is None:
            raise ImageError(f"layer {diff_id[7:19]} is not in the store")
        return int(row[0])

    def _layer_blob(self, diff_id: str) -> tuple[str, int] | None:
        """The stored (blob digest, uncompressed size) of layer `diff_id`, if known."""
        row = self._db.execute(
            "SELECT blob_digest, size_bytes FROM image_layers WHERE diff_id = ?", (diff_id,)
        ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    def history(self, ref_or_id: str, tenant: str | None = None) -> builtins.list[HistoryEntry]:
        """The image's build history, oldest first, with layer sizes matched to entries."""
        image = self.get(ref_or_id, tenant)
        doc = json.loads(image.raw_config)
        sizes = [self._layer_size(d) for d in image.diff_ids]
        raw_history = doc.get("history") if isinstance(doc, dict) else None
        entries: builtins.list[HistoryEntry] = []
        if isinstance(raw_history, list) and raw_history:
            layer = 0
            for item in raw_history:
                if not isinstance(item, dict):
                    continue
                empty = bool(item.get("empty_layer"))
                size = 0
                if not empty and layer < len(sizes):
                    size = sizes[layer]
                    layer += 1
                entries.append(
                    HistoryEntry(
                        created=str(item.get("created") or ""),
                        created_by=str(item.get("created_by") or ""),
                        comment=str(item.get("comment") or ""),
                        size_bytes=size,
                        empty_layer=empty,
                    )
                )
        else:
            entries = [HistoryEntry(image.created, "", "", s, False) for s in sizes]
        return entries

    def prune(self, *, dangling_only: bool = True, tenant: str | None = None) -> PruneResult:
        """Delete `tenant`'s (None: anyone's) unused images (only untagged ones unless
        `dangling_only` is False), then collect every blob and layer directory nothing
        references. Returns what was reclaimed: for a tenant, the size of the images it no
        longer has (what the disk gained depends on other tenants, so it is not told)."""
        with self._lock:
            deleted: builtins.list[str] = []
            before = self._usage_bytes()
            dropped_bytes = 0
            where, args = _owned_by(tenant)
            rows = self._db.execute(
                f"SELECT id, size_bytes FROM image_records WHERE 1 {where}", args
            ).fetchall()
            for image_id, size_bytes in rows:
                tags = self._tags_of(image_id, tenant)
                if (dangling_only and tags) or self.in_use(image_id, tenant):
                    continue
                dropped_bytes += int(size_bytes)
                self._untag(image_id, tags, tenant)
                self._disown(image_id, tenant)
                deleted += [f"Untagged: {t}" for t in tags] + [f"Deleted: {image_id}"]
            orphan_bytes = self._collect_garbage()
            if tenant is not None:
                return PruneResult(deleted, dropped_bytes)
            return PruneResult(deleted, max(0, before - self._usage_bytes()) + orphan_bytes)

    def _usage_bytes(self) -> int:
        blobs = self._blobs.usage_bytes()
        row = self._db.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM image_layers").fetchone()
        return blobs + int(row[0])

    def _collect_garbage(self) -> int:
        """Remove unreferenced layers and blobs (not leased); returns bytes of orphan dirs."""
        leased: set[str] = set().union(*self._leases.values()) if self._leases else set()
        with self._tx():
            self._db.execute(
                "DELETE FROM image_layers WHERE diff_id NOT IN "
                "(SELECT diff_id FROM image_layer_refs)"
            )
            self._db.execute(
                "DELETE FROM image_manifests WHERE image_id NOT IN (SELECT id FROM image_records)"
            )
            for table in ("image_repo_digests", "image_tags", "image_owners"):
                self._db.execute(
                    f"DELETE FROM {table} WHERE image_id NOT IN (SELECT id FROM image_records)"
                )
        known_layers = {
            digest_hex(r[0]) for r in self._db.execute("SELECT diff_id FROM image_layers")
        }
        orphan_bytes = 0
        for layer_dir in self._layers.iterdir():
            if layer_dir.name in known_layers or "sha256:" + layer_dir.name in leased:
                continue
            orphan_bytes += _tree_bytes(layer_dir)
            trash = Path(tempfile.mkdtemp(dir=self._tmp, prefix="trash-"))
            os.rename(layer_dir, trash / "layer")
            _rmtree(trash)
        keep = {r[0] for r in self._db.execute("SELECT blob_digest FROM image_layers")}
        keep |= {r[0] for r in self._db.execute("SELECT id FROM image_records")}
        keep |= leased
        self._blobs.sweep(keep)
        with self._tx():
            self._db.execute(
                "DELETE FROM blob_sources WHERE digest NOT IN "
                "(SELECT blob_digest FROM image_layers UNION SELECT id FROM image_records)"
            )
        return orphan_bytes

    # --- blobs ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """One atomic transaction (the daemon's connection is in autocommit mode)."""
        with self._lock:
            if self._db.in_transaction:
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.rollback()
                raise
            self._db.commit()

    def _insert_sources(
        self, registry: str, remote_repo: str, blobs: builtins.list[str], tenant: str | None
    ) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO blob_sources (tenant, digest, registry, repo) "
            "VALUES (?, ?, ?, ?)",
            [(tenant or "", b, registry, remote_repo) for b in blobs],
        )

    def _gc_blobs(self, candidates: set[str]) -> None:
        """Delete blobs this call created that no image or layer references."""
        for digest in candidates:
            used = self._db.execute(
                "SELECT 1 FROM image_layers WHERE blob_digest = ? "
                "UNION SELECT 1 FROM image_records WHERE id = ?",
                (digest, digest),
            ).fetchone()
            if used is None:
                self._blobs.discard(digest)

    # --- layers -----------------------------------------------------------------------------
    def _ensure_layer(self, blob_digest: str, expected_diff_id: str | None) -> tuple[str, int]:
        """Unpack the layer blob once into layers/<diff id hex>; returns (diff_id, size)."""
        if expected_diff_id is not None:
            row = self._db.execute(
                "SELECT size_bytes FROM image_layers WHERE diff_id = ?", (expected_diff_id,)
            ).fetchone()
            if row is not None and (self._layers / digest_hex(expected_diff_id)).is_dir():
                return expected_diff_id, int(row[0])
        tmp = Path(tempfile.mkdtemp(dir=self._tmp, prefix="layer-"))
        try:
            os.chmod(tmp, 0o755)
            with open(self.blob_path(blob_digest), "rb") as src:
                stats = apply_layer(src, tmp, self.limits)
            if expected_diff_id is not None and stats.diff_id != expected_diff_id:
                raise ImageError(
                    f"layer diff id mismatch: config says {expected_diff_id}, "
                    f"content is {stats.diff_id}"
                )
            final = self._layers / digest_hex(stats.diff_id)
            if final.is_dir():
                _rmtree(tmp)
            else:
                os.rename(tmp, final)
                fsync_dir(self._layers)
        except BaseException:
            _rmtree(tmp)
            raise
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO image_layers (diff_id, blob_digest, size_bytes) "
                "VALUES (?, ?, ?)",
                (stats.diff_id, blob_digest, stats.size_bytes),
            )
        return stats.diff_id, stats.size_bytes

    # --- records ----------------------------------------------------------------------------
    def _register(
        self,
        config_digest: str,
        raw: bytes,
        layer_blobs: builtins.list[str],
        tags: builtins.list[str],
        manifest_digests: builtins.list[str],
        *,
        manifest: StoredManifest | None = None,
        repo: str = "",
        repo_digest: str = "",
        tenant: str | None = None,
        own: bool = True,
    ) -> Image:
        """Record an image whose blobs are stored; `tenant` has it (unless not `own`: a build
        step's image, which its build cache row holds) and `tags` name it."""
        owner = tenant or ""
        doc = decode_json(raw, "image config", error=ImageError)
        ImageConfig.from_image_json(doc)  # validate early
        rootfs = doc.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or not all(
            isinstance(d, str) and d.startswith("sha256:") and is_full_id(d) for d in diff_ids
        ):
            raise ImageError("image config: rootfs.diff_ids must be a list of sha256 digests")
        if len(diff_ids) != len(layer_blobs):
            raise ImageError(
                f"image has {len(layer_blobs)} layers but its config lists {len(diff_ids)}"
            )
        size = 0
        for blob, diff_id in zip(layer_blobs, diff_ids, strict=True):
            _, layer_size = self._ensure_layer(blob, diff_id)
            size += layer_size
        image_id = config_digest
        with self._tx():
            if manifest is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO image_manifests (digest, image_id, media_type, raw) "
                    "VALUES (?, ?, ?, ?)",
                    (manifest.digest, image_id, manifest.media_type, manifest.raw),
                )
                if repo:
                    self._db.execute(
                        "INSERT OR REPLACE INTO image_repo_digests "
                        "(tenant, repo, digest, image_id) VALUES (?, ?, ?, ?)",
                        (owner, repo, repo_digest or manifest.digest, image_id),
                    )
            old = self._db.execute(
                "SELECT manifest_digests FROM image_records WHERE id = ?", (image_id,)
            ).fetchone()
            digests = sorted(set(manifest_digests) | set(json.loads(old[0]) if old else []))
            if old is None:
                self._db.execute(
                    "INSERT INTO image_records (id, raw_config, created, architecture, os, "
                    "size_bytes, manifest_digests, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        image_id,
                        raw,
                        str(doc.get("created") or ""),
                        str(doc.get("architecture") or ""),
                        str(doc.get("os") or ""),
                        size,
                        json.dumps(digests),
                        time.time(),
                    ),
                )
                self._db.executemany(
                    "INSERT INTO image_layer_refs (image_id, position, diff_id) VALUES (?, ?, ?)",
                    [(image_id, i, d) for i, d in enumerate(diff_ids)],
                )
            else:
                self._db.execute(
                    "UPDATE image_records SET manifest_digests = ? WHERE id = ?",
                    (json.dumps(digests), image_id),
                )
            if own:
                self._add_names(image_id, tags, owner)
        image = self._image(image_id, tenant if own else None)
        if own and self.on_added is not None:
            self.on_added(image, owner)
        return image

    def _add_names(self, image_id: str, tags: builtins.list[str], owner: str) -> None:
        """`owner` has the image, with `tags` pointing at it (moved from any other image).
        A tenant's new image counts against its `images` quota, checked inside the store's
        transaction, so concurrent pulls cannot overshoot it."""
        if owner and self.images_quota is not None and not self._db.execute(
                "SELECT 1 FROM image_owners WHERE tenant = ? AND image_id = ?",
                (owner, image_id)).fetchone():
            held = int(self._db.execute("SELECT COUNT(*) FROM image_owners WHERE tenant = ?",
                                        (owner,)).fetchone()[0])
            limit = self.images_quota(owner)
            if held >= limit:
                raise QuotaExceeded(exceeded_message(owner, Usage("images", limit, held), 1))
        self._db.execute(
            "INSERT OR IGNORE INTO image_owners (tenant, image_id) VALUES (?, ?)",
            (owner, image_id),
        )
        self._db.executemany(
            "INSERT OR REPLACE INTO image_tags (tenant, ref, image_id) VALUES (?, ?, ?)",
            [(owner, t, image_id) for t in tags],
        )

    def _image(self, image_id: str, tenant: str | None) -> Image:
        row = self._db.execute(
            "SELECT raw_config, created, architecture, os, size_bytes, manifest_digests "
            "FROM image_records WHERE id = ?",
            (image_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"No such image: {image_id}")
        raw = bytes(row[0])
        diff_ids = [
            r[0]
            for r in self._db.execute(
                "SELECT diff_id FROM image_layer_refs WHERE image_id = ? ORDER BY position",
                (image_id,),
            )
        ]
        tags = self._tags_of(image_id, tenant)
        names = sorted({t.rsplit(":", 1)[0] for t in tags})
        digests = json.loads(row[5])
        repo_digests = {f"{n}@{d}" for n in names for d in digests}
        where, args = _tenant_is(tenant)
        repo_digests |= {
            f"{r[0]}@{r[1]}"
            for r in self._db.execute(
                f"SELECT repo, digest FROM image_repo_digests WHERE image_id = ? {where}",
                (image_id, *args),
            )
        }
        return Image(
            id=image_id,
            repo_tags=tuple(tags),
            config=ImageConfig.from_image_json(json.loads(raw)),
            created=row[1],
            architecture=row[2],
            os=row[3],
            diff_ids=tuple(diff_ids),
            size_bytes=int(row[4]),
            raw_config=raw,
            repo_digests=tuple(sorted(repo_digests)),
        )

    def _tags_of(self, image_id: str, tenant: str | None) -> builtins.list[str]:
        """`tenant`'s tags on the image (None: every tenant's)."""
        where, args = _tenant_is(tenant)
        rows = self._db.execute(
            f"SELECT DISTINCT ref FROM image_tags WHERE image_id = ? {where} ORDER BY ref",
            (image_id, *args),
        )
        return [r[0] for r in rows]

    def _tagged(self, key: str, tenant: str | None) -> str | None:
        """The image `tenant`'s tag `key` points at. The operator (None) sees every tenant's
        tags: its own ("") first, else the one image all tenants using the tag agree on."""
        if tenant is not None:
            row = self._db.execute(
                "SELECT image_id FROM image_tags WHERE tenant = ? AND ref = ?", (tenant, key)
            ).fetchone()
            return None if row is None else str(row[0])
        rows = self._db.execute(
            "SELECT tenant, image_id FROM image_tags WHERE ref = ?", (key,)
        ).fetchall()
        own = [str(r[1]) for r in rows if r[0] == ""]
        targets = {str(r[1]) for r in rows}
        if own or len(targets) <= 1:
            return own[0] if own else next(iter(targets), None)
        raise InvalidArgument(f"tag {key!r} names different images of {len(rows)} tenants: "
                              "name the image by id")

    def _resolve(self, text: str, tenant: str | None) -> str:
        """The id of the image `text` names among `tenant`'s (None: anyone's)."""
        if not text:
            raise NotFound("No such image: ")
        where, args = _owned_by(tenant)
        if is_full_id(text):
            image_id = "sha256:" + text.removeprefix("sha256:")
            if self._exists(image_id, tenant):
                return image_id
            raise NotFound(f"No such image: {text}")
        ref: Reference | None
        try:
            ref = parse_reference(text)
        except InvalidArgument:
            ref = None
        if ref is not None and ref.digest is not None:
            if ref.tag is None:  # name@digest: match a manifest digest or the config digest
                tenant_where, tenant_args = _tenant_is(tenant)
                for row in self._db.execute(
                    "SELECT image_id FROM image_repo_digests WHERE repo = ? AND digest = ? "
                    f"{tenant_where}",
                    (ref.familiar_name, ref.digest, *tenant_args),
                ).fetchall():
                    if self._exists(row[0], tenant):
                        return str(row[0])
                for image_id, digests in self._db.execute(
                    f"SELECT id, manifest_digests FROM image_records WHERE 1 {where}", args
                ):
                    if ref.digest == image_id or ref.digest in json.loads(digests):
                        return str(image_id)
        elif ref is not None:
            tagged = self._tagged(ref.familiar(), tenant)
            if tagged is not None:
                return tagged
        if is_id_prefix(text):
            hexpart = text.removeprefix("sha256:")
            rows = self._db.execute(
                f"SELECT id FROM image_records WHERE substr(id, 8, ?) = ? {where}",
                (len(hexpart), hexpart, *args),
            ).fetchall()
            if len(rows) == 1:
                return str(rows[0][0])
            if len(rows) > 1:
                raise InvalidArgument(f"image id prefix {text!r} is ambiguous")
        raise NotFound(f"No such image: {text}")

    def _exists(self, image_id: str, tenant: str | None) -> bool:
        where, args = _owned_by(tenant)
        row = self._db.execute(
            f"SELECT 1 FROM image_records WHERE id = ? {where}", (image_id, *args)
        )
        return row.fetchone() is not None

    def _tag_key(self, text: str) -> str | None:
        if is_full_id(text):
            return None
        try:
            ref = parse_reference(text)
        except InvalidArgument:
            return None
        return ref.familiar() if ref.digest is None else None

    def _untag(self, image_id: str, tags: builtins.list[str], tenant: str | None) -> None:
        """Remove `tenant`'s (None: every tenant's) `tags` from the image."""
        where, args = _tenant_is(tenant)
        with self._tx():
            self._db.executemany(
                f"DELETE FROM image_tags WHERE image_id = ? AND ref = ? {where}",
                [(image_id, t, *args) for t in tags],
            )

    def _disown(self, image_id: str, tenant: str | None) -> None:
        """`tenant` (None: every tenant) no longer has the image; once no tenant has it and no
        container uses it, its record goes, and with it the layers no other image uses."""
        where, args = _tenant_is(tenant)
        with self._tx():
            for table in ("image_tags", "image_repo_digests", "image_owners", "build_cache"):
                self._db.execute(
                    f"DELETE FROM {table} WHERE image_id = ? {where}", (image_id, *args)
                )
        held = self._db.execute(
            "SELECT 1 FROM image_owners WHERE image_id = ? "
            "UNION SELECT 1 FROM build_cache WHERE image_id = ? LIMIT 1", (image_id, image_id)
        ).fetchone()
        if held is None and not self.in_use(image_id, None):
            self._delete(image_id)

    def _delete(self, image_id: str) -> None:
        diff_ids = [
            r[0]
            for r in self._db.execute(
                "SELECT diff_id FROM image_layer_refs WHERE image_id = ?", (image_id,)
            )
        ]
        with self._tx():
            self._db.execute("DELETE FROM image_layer_refs WHERE image_id = ?", (image_id,))
            self._db.execute("DELETE FROM image_records WHERE id = ?", (image_id,))
            self._db.execute("DELETE FROM image_tags WHERE image_id = ?", (image_id,))
            self._db.execute("DELETE FROM image_owners WHERE image_id = ?", (image_id,))
            self._db.execute("DELETE FROM build_cache WHERE image_id = ?", (image_id,))
            self._db.execute("DELETE FROM image_manifests WHERE image_id = ?", (image_id,))
            self._db.execute("DELETE FROM image_repo_digests WHERE image_id = ?", (image_id,))
        if self.on_deleted is not None:
            self.on_deleted(image_id)
        blobs = {image_id}
        for diff_id in set(diff_ids):
            used = self._db.execute(
                "SELECT 1 FROM image_layer_refs WHERE diff_id = ? LIMIT 1", (diff_id,)
            ).fetchone()
            if used is not None:
                continue
            row = self._db.execute(
                "SELECT blob_digest FROM image_layers WHERE diff_id = ?", (diff_id,)
            ).fetchone()
            with self._db:
                self._db.execute("DELETE FROM image_layers WHERE diff_id = ?", (diff_id,))
            if row is not None:
                blobs.add(row[0])
            layer_dir = self._layers / digest_hex(diff_id)
            if layer_dir.exists():
                trash = Path(tempfile.mkdtemp(dir=self._tmp, prefix="trash-"))
                os.rename(layer_dir, trash / "layer")
                _rmtree(trash)
        self._gc_blobs(blobs)


def _tenant_is(tenant: str | None) -> tuple[str, tuple[str, ...]]:
    """An SQL condition (and its argument) on a `tenant` column: none for the operator."""
    return ("", ()) if tenant is None else ("AND tenant = ?", (tenant,))


def _owned_by(tenant: str | None) -> tuple[str, tuple[str, ...]]:
    """An SQL condition on an image `id` column: one `tenant` has, or holds in its build cache
    (none for the operator)."""
    if tenant is None:
        return "", ()
    return ("AND (id IN (SELECT image_id FROM image_owners WHERE tenant = ?) "
            "OR id IN (SELECT image_id FROM build_cache WHERE tenant = ?))", (tenant, tenant))


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rmtree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
