"""Detach keys: dockerd's names and the scanner over a client's stdin."""

from __future__ import annotations

import pytest

from steelcup.api.detach_keys import DEFAULT_DETACH_KEYS, DetachScanner, parse_detach_keys
from steelcup.errors import InvalidArgument


def test_parse_names_as_docker() -> None:
    assert parse_detach_keys("") == DEFAULT_DETACH_KEYS == b"\x10\x11"
    assert parse_detach_keys("ctrl-x,y") == b"\x18y"
    assert parse_detach_keys("ctrl-@,ctrl-_,a") == b"\x00\x1fa"
    for bad in ("ctrl-", "ctrl-pp", "xy", "ctrl-p,", "é"):
        with pytest.raises(InvalidArgument, match="Invalid detach keys"):
            parse_detach_keys(bad)


def test_scanner_passes_data_and_holds_a_partial_match() -> None:
    s = DetachScanner(b"\x10\x11")
    assert s.feed(b"ls\r") == (b"ls\r", False)
    assert s.feed(b"a\x10") == (b"a", False)  # held: may be the start of the sequence
    assert s.feed(b"b") == (b"\x10b", False)  # it was not
    assert s.feed(b"\x10\x10") == (b"\x10", False)
    assert s.feed(b"\x11rest") == (b"", True)  # split across reads, then detach
    assert DetachScanner(b"\x18y").feed(b"echo\r\x18y") == (b"echo\r", True)
    assert DetachScanner(b"").feed(b"\x10\x11") == (b"\x10\x11", False)
