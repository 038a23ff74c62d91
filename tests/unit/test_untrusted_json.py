"""decode_json: the nesting bound every JSON decode of outside input goes through."""

from __future__ import annotations

import pytest

from steelcup.errors import ImageError, InvalidArgument
from steelcup.untrusted_json import MAX_JSON_DEPTH, decode_json, nests_deeper_than


def nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


def test_deep_arrays_are_refused_not_a_recursion_error() -> None:
    # Without the bound json.loads raises RecursionError here (a 500 with a traceback).
    with pytest.raises(InvalidArgument, match="request body: nested deeper than 100 levels"):
        decode_json(b"[" * 100_000, "request body")
    with pytest.raises(InvalidArgument, match="nested deeper"):
        decode_json('{"a":' * 100_000 + "1" + "}" * 100_000, "filters")


def test_depth_limit_is_exact() -> None:
    assert decode_json(nested(MAX_JSON_DEPTH), "x") is not None
    with pytest.raises(InvalidArgument, match="nested deeper"):
        decode_json(nested(MAX_JSON_DEPTH + 1), "x")
    assert not nests_deeper_than('{"a":{"b":[]}}', 3)
    assert nests_deeper_than('{"k":[[[]]]}', 3)


def test_brackets_inside_strings_do_not_count() -> None:
    text = '["' + "[" * 500 + '\\"{{{", "x"]'
    assert decode_json(text, "x") == ["[" * 500 + '"{{{', "x"]
    # and siblings do not add up: depth is the running level, not the bracket count
    assert decode_json("[" + ",".join(["[]"] * 10_000) + "]", "x") == [[]] * 10_000


def test_other_encodings_are_scanned_too() -> None:
    assert decode_json(nested(5).encode("utf-16"), "x") == [[[[[]]]]]
    with pytest.raises(InvalidArgument, match="nested deeper"):
        decode_json(nested(200).encode("utf-32"), "x")


def test_malformed_json_and_caller_error_type() -> None:
    with pytest.raises(InvalidArgument, match="invalid JSON in request body: Expecting"):
        decode_json(b"{not json", "request body")
    with pytest.raises(ImageError, match="invalid JSON in manifest.json: nested deeper"):
        decode_json(b"[" * 5000, "manifest.json", error=ImageError)
