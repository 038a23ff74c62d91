"""The datagrams a UDP wake listener holds while its container resumes (net/udphold.py):
arrival order, the count and byte limits, what is dropped and counted."""

from __future__ import annotations

import pytest

from steelcup.net.udphold import HeldDatagrams, HoldLimits

A = ("10.0.0.1", 5000)
B = ("10.0.0.2", 6000)


def test_datagrams_are_held_in_arrival_order_and_only_the_first_starts_the_wake() -> None:
    held = HeldDatagrams(HoldLimits(max_datagrams=4, max_bytes=100))
    assert held.push(A, b"one") is True
    assert held.push(B, b"two") is False
    assert held.push(A, b"three") is False
    assert len(held) == 3 and held.held_bytes == 11
    assert list(held.drain()) == [(A, b"one"), (B, b"two"), (A, b"three")]
    assert len(held) == 0 and held.held_bytes == 0 and held.dropped == 0
    assert held.push(A, b"later") is False  # one wake per listener, even once drained


def test_what_exceeds_the_count_or_the_bytes_is_dropped_and_counted() -> None:
    held = HeldDatagrams(HoldLimits(max_datagrams=2, max_bytes=10))
    held.push(A, b"12345")
    held.push(A, b"123456")  # 11 bytes: over
    held.push(B, b"1234")
    held.push(B, b"1")  # a third: over
    assert list(held.drain()) == [(A, b"12345"), (B, b"1234")]
    assert (held.dropped, held.dropped_bytes, held.seen) == (2, 7, 4)


def test_a_flood_stays_within_the_limits() -> None:
    held = HeldDatagrams(HoldLimits(max_datagrams=100, max_bytes=10_000))
    firsts = sum(held.push(("10.0.0.9", 1024 + i % 60000), b"x" * 512) for i in range(50_000))
    assert firsts == 1
    assert len(held) == 19 and held.held_bytes == 19 * 512  # the bytes bind first here
    assert held.dropped == 50_000 - 19


def test_a_failed_wake_discards_what_is_held() -> None:
    held = HeldDatagrams()
    held.push(A, b"a")
    held.push(B, b"bb")
    assert held.discard() == 2
    assert len(held) == 0 and held.held_bytes == 0
    assert (held.dropped, held.dropped_bytes) == (2, 3)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        HoldLimits(max_datagrams=0)
    with pytest.raises(ValueError, match="positive"):
        HoldLimits(max_bytes=-1)
