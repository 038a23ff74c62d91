"""Image records -> Docker Engine API JSON (GET /images/json, GET /images/{name}/json)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from steelcup.api.filters import parse_filters
from steelcup.errors import InvalidArgument
from steelcup.image.reference import parse_reference
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


def encode_summary(image: Image, tags: Sequence[str] | None = None) -> dict[str, Any]:
    """One entry of GET /images/json; `tags` narrows RepoTags (a `reference` filter's)."""
    return {
        "Id": image.id,
        "ParentId": "",
        "RepoTags": list(image.repo_tags if tags is None else tags),
        "RepoDigests": list(image.repo_digests),
        "Created": _created_unix(image),
        "Size": image.size_bytes,
        "VirtualSize": image.size_bytes,
        "SharedSize": -1,
        "Labels": dict(image.config.labels),
        "Containers": -1,
    }


# dockerd shows an image's Config as a whole container config: every key, unset ones null
_CONFIG_KEYS: dict[str, Any] = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
    "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": None,
    "Cmd": None, "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None,
    "OnBuild": None, "Labels": None,
}


def encode_inspect(image: Image) -> dict[str, Any]:
    raw = _raw(image)
    given = raw.get("config")
    config = {**_CONFIG_KEYS, **(given if isinstance(given, dict) else {})}
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


# -- GET /images/json filters -----------------------------------------------------------------

IMAGE_FILTERS = frozenset({"before", "dangling", "label", "reference", "since", "until"})


def decode_image_filters(text: str) -> dict[str, list[str]]:
    """The `filters` of GET /images/json, checked as dockerd checks them."""
    filters = parse_filters(text, IMAGE_FILTERS)
    for value in filters.get("dangling", []):
        if value.lower() not in ("true", "false", "1", "0"):
            raise InvalidArgument(f"Invalid filter 'dangling={value}'")
    return filters


def select_images(
    images: Sequence[Image],
    filters: dict[str, list[str]],
    resolve: Callable[[str], Image],
    now_s: float | None = None,
) -> list[tuple[Image, list[str]]]:
    """GET /images/json with `filters`: the images to list, each with the tags to show.

    Like dockerd: several `before`/`since` values narrow to the strictest, labels must all
    match, `reference` globs (path.Match) match the familiar or canonical name with or without
    the tag and narrow RepoTags to the matching ones, and untagged images drop out under
    `reference` or `dangling=false`.
    """
    dangling = [v.lower() in ("true", "1") for v in filters.get("dangling", [])]
    dangling_only = any(dangling)
    before_ns = min((_created_ns(resolve(v)) for v in filters.get("before", [])), default=None)
    for value in filters.get("until", []):
        until = _until_ns(value, time.time() if now_s is None else now_s)
        before_ns = until if before_ns is None else min(before_ns, until)
    since_ns = max((_created_ns(resolve(v)) for v in filters.get("since", [])), default=None)
    patterns = filters.get("reference")
    chosen: list[tuple[Image, list[str]]] = []
    for image in images:
        created = _created_ns(image)
        if before_ns is not None and not created < before_ns:
            continue
        if since_ns is not None and not created > since_ns:
            continue
        if "label" in filters and not all(_label_match(image.config.labels, v)
                                          for v in filters["label"]):
            continue
        tags = list(image.repo_tags)
        if patterns is not None:
            tags = [t for t in tags if any(_reference_match(p, t) for p in patterns)]
            if not tags:
                continue
        if not image.repo_tags and "dangling" in filters and not dangling_only:
            continue
        if dangling_only and image.repo_tags:
            continue
        chosen.append((image, tags))
    return chosen


def _created_ns(image: Image) -> int:
    try:
        return parse_time_ns(image.created[:29].rstrip("Z") + "Z")
    except ValueError:
        return 0


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _until_ns(value: str, now_s: float) -> int:
    """dockerd's timestamp forms: unix seconds[.frac], a Go duration before now, RFC 3339."""
    try:
        return int(float(value) * 1e9)
    except ValueError:
        pass
    if _DURATION.sub("", value) == "" and value:
        seconds = sum(float(n) * _UNIT_S[u] for n, u in _DURATION.findall(value))
        return int((now_s - seconds) * 1e9)
    try:
        return parse_time_ns(value[:29].rstrip("Z") + "Z")
    except ValueError:
        raise InvalidArgument(f"invalid value for 'until' filter: {value!r}") from None


def _label_match(labels: Mapping[str, str], want: str) -> bool:
    key, sep, value = want.partition("=")
    return key in labels and (not sep or labels[key] == value)


def _reference_match(pattern: str, tag: str) -> bool:
    ref = parse_reference(tag)
    targets = (ref.familiar(), ref.familiar_name, ref.canonical(), ref.name)
    regex = _glob_regex(pattern)
    return any(regex.fullmatch(t) for t in targets)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Go's path.Match as a regex: `*` and `?` never cross a `/`; `[...]` classes; `\\` escapes."""
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                raise InvalidArgument(f"invalid reference filter {pattern!r}: syntax error in "
                                      "pattern")
            body = pattern[i + 1:end]
            negate = body.startswith("^")
            body = body[1:] if negate else body
            out += "[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]"
            i = end
        else:
            out += re.escape(c)
        i += 1
    try:
        return re.compile(out)
    except re.error as exc:
        raise InvalidArgument(f"invalid reference filter {pattern!r}: {exc}") from None
