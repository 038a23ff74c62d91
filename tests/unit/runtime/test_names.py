"""Container names: docker's rule, matched over the whole name."""

from __future__ import annotations

import pytest

from steelcup.errors import InvalidArgument
from steelcup.runtime.names import NAME_MAX, validate_name


@pytest.mark.parametrize("name", ["web", "/web", "a.b-c_d", "x" * NAME_MAX])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name.lstrip("/")


@pytest.mark.parametrize("name", [
    "web\n",  # Python's `$` matches before a trailing newline: this got through
    "a\x00b", "web\x1b[31m", "a\tb", "no spaces", "-dash", "a", "/", "x" * (NAME_MAX + 1),
])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidArgument, match="Invalid container name"):
        validate_name(name)
