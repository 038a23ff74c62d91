"""Docker's stdcopy framing: encode, and decode incrementally from arbitrary splits."""

from __future__ import annotations

import pytest

from steelcup.errors import InvalidArgument
from steelcup.stdcopy import STDERR, STDOUT, Demuxer, frame


def test_frame_header_layout() -> None:
    assert frame(STDOUT, b"hi") == b"\x01\x00\x00\x00\x00\x00\x00\x02hi"
    assert frame(STDERR, b"") == b"\x02\x00\x00\x00\x00\x00\x00\x00"
    assert frame(STDOUT, b"x" * 300)[:8] == b"\x01\x00\x00\x00\x00\x00\x01\x2c"
    with pytest.raises(InvalidArgument):
        frame(7, b"x")


@pytest.mark.parametrize("step", [1, 3, 8, 9, 1000])
def test_demux_any_split(step: int) -> None:
    wire = frame(STDOUT, b"hello ") + frame(STDERR, b"") + frame(STDERR, b"oops") + frame(
        STDOUT, b"world" * 50
    )
    demux = Demuxer()
    pieces: list[tuple[int, bytes]] = []
    for i in range(0, len(wire), step):
        pieces += demux.feed(wire[i : i + step])
        if i + step < len(wire) and step == 1 and i == 3:
            assert not demux.at_boundary
    assert demux.at_boundary
    out = b"".join(p for s, p in pieces if s == STDOUT)
    err = b"".join(p for s, p in pieces if s == STDERR)
    assert (out, err) == (b"hello " + b"world" * 50, b"oops")


def test_demux_rejects_garbage() -> None:
    with pytest.raises(InvalidArgument, match="not a stdcopy stream"):
        Demuxer().feed(b"hello world!")
