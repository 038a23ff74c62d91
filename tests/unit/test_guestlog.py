"""Guest-triggered daemon log lines: clipped, and rate-limited per VM by a token bucket."""

from __future__ import annotations

import logging

import pytest

from steelcup.guestlog import MAX_MESSAGE_CHARS, GuestLog, clip


def test_clip_keeps_one_printable_line() -> None:
    assert clip("short") == "short"
    assert clip("two\nlines\x1b[2J") == "two\\nlines\\x1b[2J"
    long = clip("y" * 100_000)
    assert long.startswith("y" * MAX_MESSAGE_CHARS) and long.endswith("(99600 more characters)")
    assert len(long) < MAX_MESSAGE_CHARS + 40


def test_burst_then_one_line_per_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    glog = GuestLog(logging.getLogger("t"), "vm1", burst=3, interval_s=10.0,
                    clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "t"):
        for i in range(100):
            glog.log(logging.WARNING, "bad frame %d", i)
        assert [r.getMessage() for r in caplog.records] == [
            "vm vm1: bad frame 0", "vm vm1: bad frame 1", "vm vm1: bad frame 2"]
        now[0] = 10.0
        glog.log(logging.WARNING, "bad frame %d", 100)
        now[0] = 15.0
        glog.log(logging.WARNING, "bad frame %d", 101)  # half a token: suppressed
        glog.close()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[3] == "vm vm1: bad frame 100 (97 similar messages from this VM suppressed)"
    assert messages[4] == "vm vm1: 1 guest-triggered messages suppressed"
    assert len(messages) == 5


def test_disabled_level_costs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    glog = GuestLog(logging.getLogger("t2"), "vm", burst=1)
    with caplog.at_level(logging.WARNING, "t2"):
        glog.log(logging.DEBUG, "noise")
        glog.log(logging.WARNING, "real")
    assert [r.getMessage() for r in caplog.records] == ["vm vm: real"]
