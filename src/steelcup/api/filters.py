"""Docker's `filters` query parameter, parsed once for every list and prune endpoint, the
label maps of create bodies that its `label` filter matches, and its `since`/`until` times."""

from __future__ import annotations

from typing import Any

from steelcup.errors import InvalidArgument
from steelcup.runtime.logs import parse_time_ns
from steelcup.untrusted_json import decode_json


def parse_filters(text: str, valid: frozenset[str] | None = None) -> dict[str, list[str]]:
    """`{"key": ["v", ...]}` or the older `{"key": {"v": true}}` -> key -> values.

    Keys outside `valid` (when given) and values that are not strings are rejected, as docker
    rejects them when it decodes the same JSON.
    """
    if not text:
        return {}
    raw = decode_json(text, "filters")
    if not isinstance(raw, dict):
        raise InvalidArgument("invalid filters: expected a JSON object")
    result: dict[str, list[str]] = {}
    for key, value in raw.items():
        if valid is not None and key not in valid:
            raise InvalidArgument(f"invalid filter '{key}'")
        if isinstance(value, dict):
            result[key] = [str(k) for k, v in value.items() if v]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            result[key] = list(value)
        else:
            raise InvalidArgument(f"invalid filter '{key}'")
    return result


def labels_match(labels: dict[str, str], wanted: list[str]) -> bool:
    """Docker's `label` filter: every `KEY` is present and every `KEY=VALUE` equal."""
    for item in wanted:
        key, eq, value = item.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


def str_map(value: Any, what: str) -> dict[str, str]:
    """A create body's Labels or Options object as strings ({} for null)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be an object")
    return {str(k): str(v) for k, v in value.items()}


def time_param(text: str) -> int:
    """Docker's since/until: unix seconds with optional fraction; 0/empty = unset."""
    if not text:
        return 0
    try:
        secs, _, frac = text.partition(".")
        return int(secs) * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])
    except ValueError:
        try:
            return parse_time_ns(text)
        except ValueError:
            raise InvalidArgument(f"invalid time value: {text!r}") from None
