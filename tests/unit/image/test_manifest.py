"""Manifest parsing, platform selection and building (pure)."""

from __future__ import annotations

import json

import pytest

from steelcup.errors import ImageError, Unsupported
from steelcup.image.manifest import (
    DOCKER_LAYER_GZIP,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    build_manifest,
    parse_manifest,
    parse_platform,
    select_platform,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def test_schema1_is_refused_clearly() -> None:
    raw = json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}).encode()
    with pytest.raises(Unsupported, match="schema 1"):
        parse_manifest(raw)
    with pytest.raises(Unsupported, match="schema 1"):
        parse_manifest(b"{}", "application/vnd.docker.distribution.manifest.v1+prettyjws")


def test_build_and_parse_docker_and_oci() -> None:
    raw = build_manifest(D1, 10, [Descriptor(DOCKER_LAYER_GZIP, D2, 20)])
    parsed = parse_manifest(raw)
    assert isinstance(parsed, Manifest) and parsed.media_type == DOCKER_MANIFEST
    assert parsed.config.digest == D1 and parsed.layers[0].size == 20
    raw = build_manifest(D1, 10, [Descriptor(OCI_LAYER_ZSTD, D2, 20)])
    assert parse_manifest(raw).media_type == OCI_MANIFEST


def test_media_type_from_content_type_when_body_has_none() -> None:
    doc = {"schemaVersion": 2, "manifests": []}
    parsed = parse_manifest(json.dumps(doc).encode(), DOCKER_LIST + "; charset=utf-8")
    assert isinstance(parsed, Index) and parsed.media_type == DOCKER_LIST


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"digest": "md5:x", "size": 1},
            "layers": [],
        },
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"digest": D1, "size": -1},
            "layers": [],
        },
    ],
)
def test_malformed(doc: object) -> None:
    with pytest.raises(ImageError):
        parse_manifest(json.dumps(doc).encode())


def test_unknown_layer_type_unsupported() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"digest": D1, "size": 1, "mediaType": "x"},
        "layers": [{"digest": D2, "size": 1, "mediaType": "application/x-weird"}],
    }
    with pytest.raises(Unsupported):
        parse_manifest(json.dumps(doc).encode())


def _index() -> Index:
    def entry(digest: str, arch: str, variant: str = "") -> dict[str, object]:
        plat = {"os": "linux", "architecture": arch}
        if variant:
            plat["variant"] = variant
        return {"mediaType": DOCKER_MANIFEST, "digest": digest, "size": 1, "platform": plat}

    doc = {
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [entry(D1, "arm", "v7"), entry(D2, "amd64"), entry(D3, "arm64", "v8")],
    }
    parsed = parse_manifest(json.dumps(doc).encode())
    assert isinstance(parsed, Index)
    return parsed


def test_platform_selection() -> None:
    index = _index()
    assert select_platform(index, parse_platform("")).digest == D2
    assert select_platform(index, parse_platform("linux/arm64")).digest == D3
    assert select_platform(index, parse_platform("linux/arm/v7")).digest == D1
    with pytest.raises(ImageError, match="no matching manifest for linux/s390x"):
        select_platform(index, parse_platform("linux/s390x"))
    with pytest.raises(ImageError):
        parse_platform("a/b/c/d")
