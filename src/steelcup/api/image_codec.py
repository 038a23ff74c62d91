"""Image records -> Docker Engine API JSON (GET /images/json, GET /images/{name}/json)."""

from __future__ import annotations

import json
from typing import Any

from steelcup.image.store import Image
from steelcup.runtime.logs import parse_time_ns


def _created_unix(image: Image) -> int:
    try:
        return parse_time_ns(image.created[:19] + "Z") // 1_000_000_000
    except ValueError:
        return 0


def _raw(image: Image) -> dict[str, Any]:
    try:
        doc = json.loads(image.raw_config)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def encode_summary(image: Image) -> dict[str, Any]:
    return {
        "Id": image.id,
        "ParentId": "",
        "RepoTags": list(image.repo_tags),
        "RepoDigests": list(image.repo_digests),
        "Created": _created_unix(image),
        "Size": image.size_bytes,
        "VirtualSize": image.size_bytes,
        "SharedSize": -1,
        "Labels": dict(image.config.labels),
        "Containers": -1,
    }


def encode_inspect(image: Image) -> dict[str, Any]:
    raw = _raw(image)
    config = raw.get("config") if isinstance(raw.get("config"), dict) else {}
    return {
        "Id": image.id,
        "RepoTags": list(image.repo_tags),
        "RepoDigests": list(image.repo_digests),
        "Parent": "",
        "Comment": raw.get("comment", ""),
        "Created": image.created,
        "DockerVersion": "",
        "Author": raw.get("author", ""),
        "Config": config,
        "Architecture": image.architecture,
        "Os": image.os,
        "Size": image.size_bytes,
        "VirtualSize": image.size_bytes,
        "GraphDriver": {"Name": "overlay", "Data": None},
        "RootFS": {"Type": "layers", "Layers": list(image.diff_ids)},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }
