"""Decoding JSON that comes from outside (API request bodies and query parameters, image
archives, registries) with its nesting depth bounded before the parser sees it.

Python's decoder recurses once per level: a body of 100000 `[` ends in a RecursionError deep
in the handler. The depth check here runs at C speed over the bracket bytes only and stops at
the first chunk that goes too deep, so a hostile body costs little.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from steelcup.errors import InvalidArgument, SteelcupError

MAX_JSON_DEPTH = 100  # docker's own documents nest less than 10 levels
_SCAN_CHUNK = 64 * 1024
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
# Opening brackets become +1 and closing ones -1 once the bytes are read as signed chars.
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def decode_json(
    data: bytes | str,
    what: str,
    *,
    error: type[SteelcupError] = InvalidArgument,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """`data` decoded as JSON; `error` ("invalid JSON in <what>: ...") if it is malformed or
    nests arrays/objects deeper than `max_depth`."""
    if nests_deeper_than(data, max_depth):
        raise error(f"invalid JSON in {what}: nested deeper than {max_depth} levels")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise error(f"invalid JSON in {what}: {exc}") from None
    except RecursionError:  # unreachable below the interpreter's limit; kept as a backstop
        raise error(f"invalid JSON in {what}: nested too deeply") from None


def nests_deeper_than(data: bytes | str, max_depth: int) -> bool:
    """Whether brackets outside JSON strings in `data` open more than `max_depth` levels."""
    raw = _utf8(data)
    brackets = _STRING.sub(b"", raw).translate(_STEP, _NOT_BRACKET)
    steps = memoryview(brackets).cast("b")
    depth = 0
    for start in range(0, len(steps), _SCAN_CHUNK):
        running = list(accumulate(steps[start : start + _SCAN_CHUNK], initial=depth))
        if max(running) > max_depth:
            return True
        depth = running[-1]
    return False


def _utf8(data: bytes | str) -> bytes:
    """The text as UTF-8, where bracket and quote bytes never occur inside another character
    (json.loads also accepts UTF-16/32 bytes, so those are re-encoded for the scan)."""
    if isinstance(data, str):
        return data.encode("utf-8", "surrogatepass")
    encoding = json.detect_encoding(data)
    if encoding in ("utf-8", "utf-8-sig"):
        return data
    try:
        return data.decode(encoding).encode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return data  # json.loads rejects it too
