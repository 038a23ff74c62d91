"""Capped logs: a guest's console flood keeps its head and tail, and nothing more."""

from __future__ import annotations

import asyncio
from pathlib import Path

from steelcup.vm.caplog import CappedLog, drain


def test_small_output_is_kept_whole(tmp_path: Path) -> None:
    log = CappedLog(tmp_path / "c.log", 100, 100)
    log.write(b"boot\n")
    log.write(b"ok\n")
    log.close()
    assert (tmp_path / "c.log").read_bytes() == b"boot\nok\n"


def test_flood_keeps_head_and_tail_with_a_marker(tmp_path: Path) -> None:
    """The attack: a guest prints to its console forever. Without a cap the file grows."""
    log = CappedLog(tmp_path / "c.log", 1000, 500)
    log.write(b"H" * 600)
    for i in range(10_000):
        log.write(f"line {i}\n".encode())
    log.close()
    text = (tmp_path / "c.log").read_bytes()
    assert text.startswith(b"H" * 600 + b"line 0\n")
    assert text.endswith(b"line 9999\n")
    assert len(text) < 1000 + 500 + 100
    dropped = 600 + sum(len(f"line {i}\n") for i in range(10_000)) - 1500
    assert f"--- steelcup: {dropped} bytes dropped here ---".encode() in text


def test_one_huge_write_fills_the_head_first(tmp_path: Path) -> None:
    log = CappedLog(tmp_path / "c.log", 10, 10)
    log.write(b"0123456789" + b"x" * 1000 + b"abcdefghij")
    log.close()
    text = (tmp_path / "c.log").read_bytes()
    assert text.startswith(b"0123456789\n--- steelcup: 1000 bytes dropped")
    assert text.endswith(b"abcdefghij")


def test_written_through_its_fd_after_a_rename(tmp_path: Path) -> None:
    log = CappedLog(tmp_path / "c.log", 10, 10)
    log.write(b"first")
    (tmp_path / "c.log").rename(tmp_path / "saved.log")
    log.write(b"x" * 100)
    log.close()
    assert (tmp_path / "saved.log").read_bytes().startswith(b"firstxxxxx\n---")


def test_drain_copies_until_eof(tmp_path: Path) -> None:
    async def run() -> None:
        stream = asyncio.StreamReader()
        stream.feed_data(b"a" * 200_000)
        stream.feed_eof()
        await drain(stream, CappedLog(tmp_path / "c.log", 1000, 1000))

    asyncio.run(run())
    assert 2000 < (tmp_path / "c.log").stat().st_size < 2100
