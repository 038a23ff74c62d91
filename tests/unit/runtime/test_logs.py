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


def _texts(entries: list[logs.LogEntry]) -> list[str]:
    return [e.data.decode().rstrip("\n") for e in entries]


def test_rotation_caps_the_disk_a_chatty_guest_uses(tmp_path: Path) -> None:
    """The attack: a guest prints forever. Without rotation the file grows without end."""
    path = tmp_path / "container.log"
    w = logs.LogWriter(path, logs.Rotation(max_bytes=4096, max_files=3))
    for i in range(2000):
        w.write("stdout", f"line {i:05d} ".encode() + b"x" * 50 + b"\n")
    w.close()
    files = sorted(tmp_path.iterdir())
    assert [p.name for p in files] == ["container.log", "container.log.1", "container.log.2"]
    chunk = len(logs.encode_entry(logs.LogEntry("stdout", b"x" * 62, 0)))
    assert all(p.stat().st_size < 4096 + chunk for p in files)
    # `logs` reads across the rotated files, oldest first, ending with the last line
    got = _texts(logs.LogCursor(path).read_all())
    numbers = [int(t.split()[1]) for t in got]
    assert numbers == list(range(numbers[0], 2000)) and numbers[0] > 1000


def test_one_file_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "container.log"
    w = logs.LogWriter(path, logs.Rotation(max_bytes=200, max_files=1))
    for i in range(50):
        w.write("stdout", f"{i}\n".encode())
    w.close()
    assert [p.name for p in tmp_path.iterdir()] == ["container.log"]
    assert path.stat().st_size < 300 and _texts(logs.LogCursor(path).read_all())[-1] == "49"


def test_follow_goes_through_rotations(tmp_path: Path) -> None:
    path = tmp_path / "container.log"
    w = logs.LogWriter(path, logs.Rotation(max_bytes=300, max_files=6))
    cursor = logs.LogCursor(path)
    assert cursor.read_all() == []
    seen: list[str] = []
    n = 0
    for burst in (1, 3, 7, 14):  # several rotations between two reads, too
        for _ in range(burst):
            w.write("stdout", f"{n}\n".encode())
            n += 1
        seen += _texts(cursor.read_new())
    w.close()
    assert seen == [str(i) for i in range(n)]


def test_reopened_writer_continues_the_size(tmp_path: Path) -> None:
    path = tmp_path / "container.log"
    path.write_bytes(b"x" * 500 + b"\n")
    w = logs.LogWriter(path, logs.Rotation(max_bytes=400, max_files=2))
    w.write("stdout", b"new\n")
    w.close()
    assert (tmp_path / "container.log.1").read_bytes().startswith(b"x")
    assert _texts(logs.read_entries(path)[0]) == ["new"]
