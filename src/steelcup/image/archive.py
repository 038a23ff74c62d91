"""Image archives: read docker-archive (manifest.json) and OCI image-layout (index.json)
tarballs into blobs, and write images out as one tar that is both (`docker save`/`load`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from steelcup.errors import ImageError, InvalidArgument
from steelcup.image.blobs import COPY_CHUNK, Blob, BlobStore, digest_hex
from steelcup.image.layers import decompressed
from steelcup.image.manifest import OCI_LAYER, OCI_MANIFEST, host_arch
from steelcup.image.reference import is_full_id, parse_reference, parse_tag_reference

if TYPE_CHECKING:
    from steelcup.image.store import Image

MAX_ARCHIVE_ENTRIES = 100_000
_INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


@dataclass(frozen=True)
class ArchiveImage:
    """One image found in an archive, its config and layers already stored as blobs."""

    config_digest: str
    raw_config: bytes
    layer_blobs: list[str]
    tags: list[str]
    manifest_digests: list[str]


class ArchiveFiles:
    """Regular files of an outer archive (stored as blobs) plus its sym/hard links."""

    def __init__(self) -> None:
        self.blobs: dict[str, Blob] = {}
        self.links: dict[str, str] = {}

    def get(self, name: str) -> Blob:
        key = _norm(name)
        for _ in range(16):
            if key in self.blobs:
                return self.blobs[key]
            if key not in self.links:
                break
            key = self.links[key]
        raise ImageError(f"image archive is missing {name!r}")


# --- load -----------------------------------------------------------------------------------
def spool_archive(stream: IO[bytes], blobs: BlobStore, created: set[str]) -> ArchiveFiles:
    """Stream the outer tar once, storing every regular file as a blob (added to `created`)."""
    files = ArchiveFiles()
    try:
        with decompressed(stream) as raw:
            tar = tarfile.open(fileobj=raw, mode="r|")
            count = 0
            while (member := tar.next()) is not None:
                tar.members.clear()  # type: ignore[attr-defined]
                count += 1
                if count > MAX_ARCHIVE_ENTRIES:
                    raise ImageError(f"image archive has over {MAX_ARCHIVE_ENTRIES} entries")
                name = _norm(member.name)
                if member.isreg():
                    src = tar.extractfile(member)
                    assert src is not None
                    blob = blobs.write(src)
                    created.add(blob.digest)
                    files.blobs[name] = blob
                elif member.issym():
                    base = name.rsplit("/", 1)[0] if "/" in name else ""
                    target = member.linkname
                    if not target.startswith("/"):
                        target = f"{base}/{target}" if base else target
                    files.links[name] = _norm(target)
                elif member.islnk():
                    files.links[name] = _norm(member.linkname)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"invalid image archive: {exc}") from exc
    return files


def archive_images(files: ArchiveFiles, blobs: BlobStore) -> Iterator[ArchiveImage]:
    """The images of a spooled archive, one at a time (each is checked as it is reached)."""
    if "manifest.json" in files.blobs:
        yield from _docker_images(files, blobs)
    elif "index.json" in files.blobs:
        yield from _oci_images(files, blobs)
    else:
        raise ImageError("not an image archive: neither manifest.json nor index.json found")


def _docker_images(files: ArchiveFiles, blobs: BlobStore) -> Iterator[ArchiveImage]:
    _, manifest = blobs.read_json(files.get("manifest.json").digest, "manifest.json")
    if not isinstance(manifest, list):
        raise ImageError("manifest.json must be a JSON list")
    for entry in manifest:
        if not isinstance(entry, dict):
            raise ImageError("manifest.json entries must be objects")
        config_path = entry.get("Config")
        layer_paths = entry.get("Layers") or []
        tags = entry.get("RepoTags") or []
        if not isinstance(config_path, str) or not isinstance(layer_paths, list):
            raise ImageError("manifest.json entry needs Config (string) and Layers (list)")
        if not all(isinstance(p, str) for p in layer_paths) or not isinstance(tags, list):
            raise ImageError("manifest.json: Layers and RepoTags must be lists of strings")
        config_blob = files.get(config_path)
        raw, _doc = blobs.read_json(config_blob.digest, f"image config {config_path}")
        layer_blobs = [files.get(p).digest for p in layer_paths]
        familiar = [_archive_tag(t) for t in tags]
        yield ArchiveImage(config_blob.digest, raw, layer_blobs, familiar, [])


def _oci_images(files: ArchiveFiles, blobs: BlobStore) -> Iterator[ArchiveImage]:
    _, index = blobs.read_json(files.get("index.json").digest, "index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise ImageError("index.json must be an object with a manifests list")
    for desc in index["manifests"]:
        annotations = _annotations(desc)
        name = annotations.get("io.containerd.image.name") or annotations.get(
            "org.opencontainers.image.ref.name", ""
        )
        tags: list[str] = []
        if name and (":" in name or "/" in name):
            with contextlib.suppress(InvalidArgument):
                tags.append(_archive_tag(name))
        manifest_digest, manifest = _oci_manifest(files, blobs, desc, depth=0)
        config_desc = manifest.get("config")
        layers = manifest.get("layers") or []
        if not isinstance(config_desc, dict) or not isinstance(layers, list):
            raise ImageError("OCI manifest needs a config descriptor and a layers list")
        config_blob = _oci_blob(files, config_desc)
        raw, _doc = blobs.read_json(config_blob.digest, "image config")
        layer_blobs = [_oci_blob(files, d).digest for d in layers]
        yield ArchiveImage(config_blob.digest, raw, layer_blobs, tags, [manifest_digest])


def _oci_manifest(
    files: ArchiveFiles, blobs: BlobStore, desc: Any, depth: int
) -> tuple[str, dict[str, Any]]:
    if depth > 2:
        raise ImageError("OCI index nests too deeply")
    blob = _oci_blob(files, desc)
    _, doc = blobs.read_json(blob.digest, "OCI manifest")
    if not isinstance(doc, dict):
        raise ImageError("OCI manifest must be a JSON object")
    media = desc.get("mediaType") or doc.get("mediaType", "")
    if media in _INDEX_TYPES or "manifests" in doc:
        choices = doc.get("manifests")
        if not isinstance(choices, list) or not choices:
            raise ImageError("OCI image index has no manifests")
        want = host_arch()
        for choice in choices:
            plat = choice.get("platform", {}) if isinstance(choice, dict) else {}
            if plat.get("os", "linux") == "linux" and plat.get("architecture") == want:
                return _oci_manifest(files, blobs, choice, depth + 1)
        raise ImageError(f"OCI image index has no linux/{want} manifest")
    return blob.digest, doc


def _oci_blob(files: ArchiveFiles, desc: Any) -> Blob:
    if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
        raise ImageError("OCI descriptor without a digest")
    digest = desc["digest"]
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or not is_full_id(digest):
        raise ImageError(f"unsupported or malformed digest {digest!r}")
    blob = files.get(f"blobs/sha256/{hexpart}")
    if blob.digest != digest:
        raise ImageError(f"blob {digest} in the archive has digest {blob.digest}")
    return blob


def _archive_tag(text: Any) -> str:
    if not isinstance(text, str):
        raise ImageError("image archive: tags must be strings")
    try:
        return parse_tag_reference(text).familiar()
    except InvalidArgument as exc:
        raise ImageError(f"image archive has an invalid tag {text!r}: {exc}") from exc


def _annotations(desc: Any) -> dict[str, str]:
    if not isinstance(desc, dict):
        raise ImageError("index.json: manifest descriptors must be objects")
    ann = desc.get("annotations") or {}
    if not isinstance(ann, dict):
        raise ImageError("index.json: annotations must be an object")
    return {str(k): str(v) for k, v in ann.items()}


def _norm(name: str) -> str:
    parts: list[str] = []
    for comp in name.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if parts:
                parts.pop()
            continue
        parts.append(comp)
    return "/".join(parts)


# --- save -----------------------------------------------------------------------------------
def write_archive(
    out: BinaryIO,
    images: list[tuple[Image, list[str]]],
    blobs: BlobStore,
    layer_blob: Callable[[str], tuple[str, int] | None],
) -> None:
    """Write `images` (each with the tags to record) as one tar stream to `out`.

    The archive is both a docker-archive (manifest.json, read by docker/podman load and
    skopeo docker-archive:) and an OCI image layout (index.json, oci-layout), like the one
    docker 25+ writes. Layers are stored uncompressed, named by their diff id;
    `layer_blob(diff_id)` gives the stored (blob digest, uncompressed size) of a layer.
    """
    docker_manifest: list[dict[str, Any]] = []
    index_entries: list[dict[str, Any]] = []
    written: set[str] = set()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _tar_dir(tar, "blobs")
        _tar_dir(tar, "blobs/sha256")
        for image, tags in images:
            layer_descs = []
            for diff_id in image.diff_ids:
                if diff_id not in written:
                    _save_layer(tar, diff_id, blobs, layer_blob)
                    written.add(diff_id)
                size = _layer_size(diff_id, layer_blob)
                layer_descs.append({"mediaType": OCI_LAYER, "size": size, "digest": diff_id})
            config_name = f"blobs/sha256/{digest_hex(image.id)}"
            if image.id not in written:
                _tar_bytes(tar, config_name, image.raw_config)
                written.add(image.id)
            manifest = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {
                        "mediaType": "application/vnd.oci.image.config.v1+json",
                        "size": len(image.raw_config),
                        "digest": image.id,
                    },
                    "layers": layer_descs,
                },
                separators=(",", ":"),
            ).encode()
            manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
            if manifest_digest not in written:
                _tar_bytes(tar, f"blobs/sha256/{digest_hex(manifest_digest)}", manifest)
                written.add(manifest_digest)
            docker_manifest.append(
                {
                    "Config": config_name,
                    "RepoTags": tags or None,
                    "Layers": [f"blobs/sha256/{digest_hex(d)}" for d in image.diff_ids],
                }
            )
            desc = {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest),
            }
            for tag in tags or [""]:
                entry = dict(desc)
                if tag:
                    parsed = parse_reference(tag)
                    entry["annotations"] = {
                        "io.containerd.image.name": parsed.canonical(),
                        "org.opencontainers.image.ref.name": parsed.tag or "latest",
                    }
                index_entries.append(entry)
        _tar_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": index_entries,
        }
        _tar_bytes(tar, "index.json", json.dumps(index, separators=(",", ":")).encode())
        _tar_bytes(tar, "manifest.json", json.dumps(docker_manifest).encode())


def _layer_size(diff_id: str, layer_blob: Callable[[str], tuple[str, int] | None]) -> int:
    row = layer_blob(diff_id)
    if row is None:
        raise ImageError(f"layer {diff_id[7:19]} is not in the store")
    return int(row[1])


def _save_layer(
    tar: tarfile.TarFile,
    diff_id: str,
    blobs: BlobStore,
    layer_blob: Callable[[str], tuple[str, int] | None],
) -> None:
    row = layer_blob(diff_id)
    if row is None or not blobs.has(row[0]):
        raise ImageError(f"layer {diff_id[7:19]} has no stored blob; pull the image again")
    info = tarfile.TarInfo(f"blobs/sha256/{digest_hex(diff_id)}")
    info.size = int(row[1])
    info.mode = 0o644
    with open(blobs.path(row[0]), "rb") as blob, decompressed(blob) as plain:
        checked = _HashingReader(plain)
        tar.addfile(info, checked)
    if checked.digest() != diff_id:
        raise ImageError(f"stored layer {diff_id[7:19]} does not match its diff id")


class _HashingReader(io.RawIOBase):
    """Passes reads through while hashing them (to check a layer as `save` streams it)."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self._hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size if size is not None and size >= 0 else COPY_CHUNK)
        self._hash.update(data)
        return data

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def _tar_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def _tar_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
