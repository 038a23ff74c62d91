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
CREATE TABLE IF NOT EXISTS image_tags (
    ref TEXT PRIMARY KEY,              -- familiar form, e.g. busybox:latest
    image_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS image_manifests (
    digest TEXT PRIMARY KEY,           -- registry manifest digest (pulled or pushed)
    image_id TEXT NOT NULL,
    media_type TEXT NOT NULL,
    raw BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS image_manifests_image ON image_manifests (image_id);
CREATE TABLE IF NOT EXISTS image_repo_digests (
    repo TEXT NOT NULL,                -- familiar repository name, e.g. 127.0.0.1:5000/ns/app
    digest TEXT NOT NULL,
    image_id TEXT NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE TABLE IF NOT EXISTS blob_sources (
    digest TEXT NOT NULL,              -- a blob known to exist in registry/repo (cross-repo mount)
    registry TEXT NOT NULL,
    repo TEXT NOT NULL,
    PRIMARY KEY (digest, registry, repo)
);
"""


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
        in_use: Callable[[str], bool] | None = None,
        limits: LayerLimits | None = None,
    ) -> None:
        self.root = root
        self._db = db
        self.in_use: Callable[[str], bool] = in_use or (lambda _image_id: False)
        self.limits = limits or LayerLimits()
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

    # --- public API ------------------------------------------------------------------------
    def import_rootfs(
        self, stream: BinaryIO, ref: str | None, changes: ImageConfig | None = None
    ) -> Image:
        """Make a single-layer image from a rootfs tar (plain/gzip/zstd), like `docker import`."""
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
            return self._register(config_blob.digest, raw, [blob.digest], tags, [])

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
    ) -> Image:
        """A new image: the layers of image `base_id` plus the layer tar in `layer` on top.

        `config` replaces the run-time keys it models (Cmd, Env, ...); other keys of the base
        config (Healthcheck, Shell, ...) are kept. Used by `docker commit`.
        """
        parsed = parse_tag_reference(ref) if ref else None
        with self._lock:
            base = self._image(self._resolve(base_id))
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
                    config_blob.digest, raw, [*base_blobs, blob.digest], tags, []
                )
            finally:
                self._gc_blobs(created)

    def load(self, stream: BinaryIO) -> builtins.list[LoadedImage]:
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
                        ),
                        tuple(found.tags),
                    )
                    for found in archive_images(files, self._blobs)
                ]
            finally:
                self._gc_blobs(created)
            return images

    def get(self, ref_or_id: str) -> Image:
        """Find an image by name[:tag], name@digest, full id or unique short id prefix."""
        return self._image(self._resolve(ref_or_id))

    def list(self) -> builtins.list[Image]:
        query = "SELECT id FROM image_records ORDER BY added_at DESC, id"
        rows = self._db.execute(query).fetchall()
        return [self._image(r[0]) for r in rows]

    def tag(self, src: str, ref: str) -> None:
        """Point `ref` (name[:tag], default latest) at the image `src` resolves to."""
        target = parse_tag_reference(ref)
        with self._lock:
            image_id = self._resolve(src)
            with self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO image_tags (ref, image_id) VALUES (?, ?)",
                    (target.familiar(), image_id),
                )

    def remove(self, ref_or_id: str, force: bool = False) -> builtins.list[str]:
        """Untag and/or delete, like `docker rmi`. Returns "Untagged: X" / "Deleted: sha256:..."."""
        with self._lock:
            image_id = self._resolve(ref_or_id)
            tags = self._tags_of(image_id)
            short = image_id.removeprefix("sha256:")[:12]
            by_tag = self._tag_key(ref_or_id)
            if by_tag is not None and by_tag in tags:
                if len(tags) > 1:
                    self._untag([by_tag])
                    return [f"Untagged: {by_tag}"]
                if self.in_use(image_id):
                    if not force:
                        raise Conflict(
                            f"conflict: unable to remove repository reference {ref_or_id!r} "
                            f"(must force) - image {short} is used by a container"
                        )
                    self._untag([by_tag])
                    return [f"Untagged: {by_tag}"]
            else:
                if self.in_use(image_id):
                    raise Conflict(
                        f"conflict: unable to delete {short} (cannot be forced) - "
                        "image is being used by a container"
                    )
                if len(tags) > 1 and not force:
                    raise Conflict(
                        f"conflict: unable to delete {short} (must be forced) - "
                        "image is referenced in multiple repositories"
                    )
            self._untag(tags)
            self._delete(image_id)
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
    ) -> Image:
        """Record an image whose config and layer blobs are stored and unpacked.

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
            )
            self.record_blob_sources(registry, remote_repo, [config_digest, *layer_blobs])
            return self._image(image.id)

    def record_push(
        self,
        image_id: str,
        repo: str,
        manifest: StoredManifest,
        registry: str,
        remote_repo: str,
        blobs: builtins.list[str],
    ) -> None:
        """Remember a pushed manifest: RepoDigests, and where its blobs now live (for mounts)."""
        with self._lock, self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO image_manifests (digest, image_id, media_type, raw) "
                "VALUES (?, ?, ?, ?)",
                (manifest.digest, image_id, manifest.media_type, manifest.raw),
            )
            self._db.execute(
                "INSERT OR REPLACE INTO image_repo_digests (repo, digest, image_id) "
                "VALUES (?, ?, ?)",
                (repo, manifest.digest, image_id),
            )
            self._insert_sources(registry, remote_repo, blobs)

    def record_blob_sources(
        self, registry: str, remote_repo: str, blobs: builtins.list[str]
    ) -> None:
        with self._lock, self._tx():
            self._insert_sources(registry, remote_repo, blobs)

    def blob_sources(self, digest: str, registry: str) -> builtins.list[str]:
        """Repositories on `registry` known to hold blob `digest` (candidates for a mount)."""
        rows = self._db.execute(
            "SELECT repo FROM blob_sources WHERE digest = ? AND registry = ? ORDER BY repo",
            (digest, registry),
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
    def save(self, refs: builtins.list[str], out: BinaryIO) -> None:
        """Write `refs` as one tar stream to `out` (need not be seekable); see `write_archive`."""
        if not refs:
            raise InvalidArgument("no image given to save")
        chosen: dict[str, builtins.list[str]] = {}
        for ref in refs:
            image_id = self._resolve(ref)
            tags = chosen.setdefault(image_id, [])
            key = self._tag_key(ref)
            if key is not None and key not in tags:
                tags.append(key)
        images = [(self._image(i), tags) for i, tags in chosen.items()]
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

    def history(self, ref_or_id: str) -> builtins.list[HistoryEntry]:
        """The image's build history, oldest first, with layer sizes matched to entries."""
        image = self.get(ref_or_id)
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

    def prune(self, *, dangling_only: bool = True) -> PruneResult:
        """Delete unused images (only untagged ones unless `dangling_only` is False), then
        collect every blob and layer directory nothing references. Returns what was reclaimed.
        """
        with self._lock:
            deleted: builtins.list[str] = []
            before = self._usage_bytes()
            for image_id in [r[0] for r in self._db.execute("SELECT id FROM image_records")]:
                tags = self._tags_of(image_id)
                if (dangling_only and tags) or self.in_use(image_id):
                    continue
                self._untag(tags)
                self._delete(image_id)
                deleted += [f"Untagged: {t}" for t in tags] + [f"Deleted: {image_id}"]
            orphan_bytes = self._collect_garbage()
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
            self._db.execute(
                "DELETE FROM image_repo_digests WHERE image_id NOT IN "
                "(SELECT id FROM image_records)"
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

    def _insert_sources(self, registry: str, remote_repo: str, blobs: builtins.list[str]) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO blob_sources (digest, registry, repo) VALUES (?, ?, ?)",
            [(b, registry, remote_repo) for b in blobs],
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
    ) -> Image:
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
                        "INSERT OR REPLACE INTO image_repo_digests (repo, digest, image_id) "
                        "VALUES (?, ?, ?)",
                        (repo, repo_digest or manifest.digest, image_id),
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
            self._db.executemany(
                "INSERT OR REPLACE INTO image_tags (ref, image_id) VALUES (?, ?)",
                [(t, image_id) for t in tags],
            )
        return self._image(image_id)

    def _image(self, image_id: str) -> Image:
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
        tags = self._tags_of(image_id)
        names = sorted({t.rsplit(":", 1)[0] for t in tags})
        digests = json.loads(row[5])
        repo_digests = {f"{n}@{d}" for n in names for d in digests}
        repo_digests |= {
            f"{r[0]}@{r[1]}"
            for r in self._db.execute(
                "SELECT repo, digest FROM image_repo_digests WHERE image_id = ?", (image_id,)
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

    def _tags_of(self, image_id: str) -> builtins.list[str]:
        rows = self._db.execute(
            "SELECT ref FROM image_tags WHERE image_id = ? ORDER BY ref", (image_id,)
        )
        return [r[0] for r in rows]

    def _resolve(self, text: str) -> str:
        if not text:
            raise NotFound("No such image: ")
        if is_full_id(text):
            image_id = "sha256:" + text.removeprefix("sha256:")
            if self._exists(image_id):
                return image_id
            raise NotFound(f"No such image: {text}")
        ref: Reference | None
        try:
            ref = parse_reference(text)
        except InvalidArgument:
            ref = None
        if ref is not None and ref.digest is not None:
            if ref.tag is None:  # name@digest: match a manifest digest or the config digest
                row = self._db.execute(
                    "SELECT image_id FROM image_repo_digests WHERE repo = ? AND digest = ?",
                    (ref.familiar_name, ref.digest),
                ).fetchone()
                if row is not None and self._exists(row[0]):
                    return str(row[0])
                for image_id, digests in self._db.execute(
                    "SELECT id, manifest_digests FROM image_records"
                ):
                    if ref.digest == image_id or ref.digest in json.loads(digests):
                        return str(image_id)
        elif ref is not None:
            row = self._db.execute(
                "SELECT image_id FROM image_tags WHERE ref = ?", (ref.familiar(),)
            ).fetchone()
            if row is not None:
                return str(row[0])
        if is_id_prefix(text):
            hexpart = text.removeprefix("sha256:")
            rows = self._db.execute(
                "SELECT id FROM image_records WHERE substr(id, 8, ?) = ?", (len(hexpart), hexpart)
            ).fetchall()
            if len(rows) == 1:
                return str(rows[0][0])
            if len(rows) > 1:
                raise InvalidArgument(f"image id prefix {text!r} is ambiguous")
        raise NotFound(f"No such image: {text}")

    def _exists(self, image_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM image_records WHERE id = ?", (image_id,))
        return row.fetchone() is not None

    def _tag_key(self, text: str) -> str | None:
        if is_full_id(text):
            return None
        try:
            ref = parse_reference(text)
        except InvalidArgument:
            return None
        return ref.familiar() if ref.digest is None else None

    def _untag(self, tags: builtins.list[str]) -> None:
        with self._db:
            self._db.executemany("DELETE FROM image_tags WHERE ref = ?", [(t,) for t in tags])

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
            self._db.execute("DELETE FROM image_manifests WHERE image_id = ?", (image_id,))
            self._db.execute("DELETE FROM image_repo_digests WHERE image_id = ?", (image_id,))
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
