"""The json-file log format: encoding, partial lines, filters, torn lines."""

from __future__ import annotations

import json
from pathlib import Path

from steelcup.runtime import logs


def test_time_round_trip() -> None:
    t = 1_764_111_111_123_456_789
    text = logs.format_time_ns(t)
    assert text.endswith(".123456789Z")
    assert logs.parse_time_ns(text) == t
    assert logs.parse_time_ns("2026-11-25T23:00:00.5Z") % 1_000_000_000 == 500_000_000


def test_split_lines_keeps_partial_tail() -> None:
    assert logs.split_lines(b"a\nb\nc") == [b"a\n", b"b\n", b"c"]
    assert logs.split_lines(b"\n") == [b"\n"]
    assert logs.split_lines(b"") == []


def test_writer_and_reader(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    w = logs.LogWriter(path)
    w.write("stdout", b"one\ntwo\n")
    w.write("stderr", b"err\n")
    w.write("stdout", b"\xff\xfebin")
    w.close()
    lines = path.read_bytes().splitlines()
    assert json.loads(lines[0])["log"] == "one\n" and json.loads(lines[2])["stream"] == "stderr"
    entries, offset = logs.read_entries(path)
    assert offset == path.stat().st_size
    assert [e.stream for e in entries] == ["stdout", "stdout", "stderr", "stdout"]
    only_out = list(logs.select(entries, stdout=True, stderr=False))
    assert [e.data for e in only_out][:2] == [b"one\n", b"two\n"]
    assert [e.data for e in logs.select(entries, stdout=True, stderr=True, tail=1)] == [
        entries[-1].data]
    assert list(logs.select(entries, stdout=True, stderr=True, tail=0)) == []
    late = list(logs.select(entries, stdout=True, stderr=True, since_ns=entries[-1].time_ns + 1))
    assert late == []


def test_reader_skips_torn_and_foreign_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    good = logs.encode_entry(logs.LogEntry("stdout", b"ok\n", 1_000_000_000))
    path.write_bytes(b"not json\n" + good + b'{"log": 1}\n' + good[:10])
    entries, offset = logs.read_entries(path)
    assert [e.data for e in entries] == [b"ok\n"]
    assert offset == len(b"not json\n" + good + b'{"log": 1}\n')
