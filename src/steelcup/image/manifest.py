"""Registry manifests, the pure parts: media types, parsing, platform selection, building.

Docker schema 2 and OCI manifests/indexes are understood; schema 1 is refused clearly.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from typing import Any

from steelcup.errors import ImageError, Unsupported
from steelcup.image.reference import is_full_id
from steelcup.untrusted_json import decode_json

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
SCHEMA1_TYPES = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEX_TYPES = (DOCKER_LIST, OCI_INDEX)
ACCEPT = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
LAYER_TYPES = (
    DOCKER_LAYER_GZIP,
    DOCKER_FOREIGN_LAYER,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
)
MAX_MANIFEST_BYTES = 4 << 20


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: tuple[str, str, str] | None = None  # (os, architecture, variant)
    urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    """An image manifest: one config blob and the layer blobs, lowest first."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    """A manifest list / OCI index: one manifest per platform."""

    media_type: str
    manifests: tuple[Descriptor, ...]


def parse_manifest(raw: bytes, content_type: str = "") -> Manifest | Index:
    """Parse manifest bytes; the media type comes from the body or else the Content-Type."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ImageError(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    doc = decode_json(raw, "manifest", error=ImageError)
    if not isinstance(doc, dict):
        raise ImageError("manifest must be a JSON object")
    ctype = content_type.split(";", 1)[0].strip()
    media = doc.get("mediaType") if isinstance(doc.get("mediaType"), str) else ""
    media = media or ctype
    if doc.get("schemaVersion") == 1 or media in SCHEMA1_TYPES:
        raise Unsupported(
            "image manifest schema 1 is unsupported (deprecated by docker); "
            "push the image again with a current client to convert it to schema 2"
        )
    if media in INDEX_TYPES or (not media and "manifests" in doc):
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise ImageError("manifest list has no manifests array")
        return Index(media or OCI_INDEX, tuple(_descriptor(d) for d in entries))
    if media in MANIFEST_TYPES or (not media and "layers" in doc):
        config = _descriptor(doc.get("config"))
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise ImageError("manifest has no layers array")
        descs = tuple(_descriptor(d) for d in layers)
        for d in descs:
            if d.media_type not in LAYER_TYPES:
                raise Unsupported(f"unsupported layer media type {d.media_type!r}")
        return Manifest(media or OCI_MANIFEST, config, descs)
    raise Unsupported(f"unsupported manifest media type {media!r}")


def _descriptor(obj: Any) -> Descriptor:
    if not isinstance(obj, dict):
        raise ImageError("manifest descriptor must be an object")
    digest, size, media = obj.get("digest"), obj.get("size"), obj.get("mediaType", "")
    if not isinstance(digest, str) or not digest.startswith("sha256:") or not is_full_id(digest):
        raise ImageError(f"unsupported or malformed digest {digest!r} in manifest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ImageError(f"manifest descriptor {digest} has no valid size")
    if not isinstance(media, str):
        raise ImageError("manifest descriptor mediaType must be a string")
    plat = obj.get("platform")
    platform = None
    if isinstance(plat, dict):
        platform = (
            str(plat.get("os", "")),
            str(plat.get("architecture", "")),
            str(plat.get("variant", "")),
        )
    urls = obj.get("urls")
    url_list = tuple(str(u) for u in urls) if isinstance(urls, list) else ()
    return Descriptor(media, digest, size, platform, url_list)


def parse_platform(text: str) -> tuple[str, str, str]:
    """`linux/arm64/v8` -> ("linux", "arm64", "v8"); empty means linux/amd64."""
    parts = (text or "linux/amd64").split("/")
    if len(parts) == 1:
        parts = ["linux", parts[0]]
    if len(parts) > 3 or not all(parts):
        raise ImageError(f"invalid platform {text!r}: want os/arch[/variant]")
    os_name, arch = parts[0], parts[1]
    variant = parts[2] if len(parts) == 3 else ""
    return os_name, arch, variant


def host_arch() -> str:
    """This host's architecture in OCI terms (`amd64`, `arm64`, ...)."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def select_platform(index: Index, want: tuple[str, str, str]) -> Descriptor:
    """The index entry for `want` (os, arch, variant); variant only matters when given."""
    os_name, arch, variant = want
    candidates = [
        d
        for d in index.manifests
        if d.platform is not None
        and d.platform[0] == os_name
        and d.platform[1] == arch
        and d.media_type in (*MANIFEST_TYPES, "")
    ]
    if variant:
        exact = [d for d in candidates if d.platform is not None and d.platform[2] == variant]
        candidates = exact
    if not candidates:
        available = sorted(
            "/".join(p for p in d.platform if p) for d in index.manifests if d.platform
        )
        raise ImageError(
            f"no matching manifest for {'/'.join(p for p in want if p)} in the manifest list "
            f"entries (available: {', '.join(available) or 'none'})"
        )
    return candidates[0]


def build_manifest(config_digest: str, config_size: int, layers: list[Descriptor]) -> bytes:
    """A new manifest for pushing: Docker schema 2 when all layers are gzip, else OCI."""
    if all(d.media_type == DOCKER_LAYER_GZIP for d in layers):
        media, config_type = DOCKER_MANIFEST, DOCKER_CONFIG
    else:
        media, config_type = OCI_MANIFEST, OCI_CONFIG
    doc = {
        "schemaVersion": 2,
        "mediaType": media,
        "config": {"mediaType": config_type, "size": config_size, "digest": config_digest},
        "layers": [{"mediaType": d.media_type, "size": d.size, "digest": d.digest} for d in layers],
    }
    return json.dumps(doc, indent=3).encode()


def manifest_media_type(raw: bytes) -> str:
    parsed = parse_manifest(raw)
    return parsed.media_type
