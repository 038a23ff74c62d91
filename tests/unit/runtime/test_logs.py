"""The json-file log format: encoding, partial lines, filters, torn lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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


def _chatty_log(path: Path, lines: int) -> None:
    w = logs.LogWriter(path, logs.Rotation(max_bytes=2000, max_files=4))
    for i in range(lines):
        w.write("stderr" if i % 3 == 0 else "stdout", f"{i}\n".encode())
    w.close()


def test_streamed_selection_matches_the_filters(tmp_path: Path) -> None:
    path = tmp_path / "container.log"
    _chatty_log(path, 400)
    with open(path, "ab") as f:
        f.write(b'{"log": "torn')  # a line still being written is not read yet
    everything = logs.LogCursor(path).read_all()
    middle = everything[len(everything) // 2].time_ns
    for want in (
        logs.LogFilter(),
        logs.LogFilter(stderr=False),
        logs.LogFilter(stdout=False, tail=7),
        logs.LogFilter(tail=3),
        logs.LogFilter(tail=0),
        logs.LogFilter(tail=10_000),  # more than there is: all of it, across rotated files
        logs.LogFilter(since_ns=middle, tail=5),
        logs.LogFilter(until_ns=middle, tail=5),
        logs.LogFilter(since_ns=middle + 1),
    ):
        expected = list(logs.select(everything, stdout=want.stdout, stderr=want.stderr,
                                    since_ns=want.since_ns, until_ns=want.until_ns,
                                    tail=want.tail))
        assert list(logs.LogCursor(path).iter_selected(want)) == expected, want


def test_follow_after_a_tail_starts_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "container.log"
    w = logs.LogWriter(path, logs.Rotation(max_bytes=300, max_files=30))
    for i in range(40):
        w.write("stdout", f"{i}\n".encode())
    cursor = logs.LogCursor(path)
    assert _texts(list(cursor.iter_selected(logs.LogFilter(tail=2)))) == ["38", "39"]
    for i in range(40, 80):  # rotates on the way
        w.write("stdout", f"{i}\n".encode())
    w.close()
    assert _texts(cursor.read_new()) == [str(i) for i in range(40, 80)]


class _CountingReads:
    """Counts the bytes read through every file the log module opens."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def open(self, path: object, mode: str = "r") -> object:
        f = open(path, mode)  # type: ignore[call-overload]  # noqa: SIM115
        counter = self

        class Wrapped:
            def __enter__(self) -> Wrapped:
                return self

            def __exit__(self, *exc: object) -> None:
                f.close()

            def fileno(self) -> int:
                return int(f.fileno())

            def seek(self, *args: int) -> int:
                return int(f.seek(*args))

            def read(self, size: int = -1) -> bytes:
                data: bytes = f.read(size)
                counter.read_bytes += len(data)
                return data

        return Wrapped()


def test_tail_of_a_large_log_reads_only_its_end(tmp_path: Path, monkeypatch: object) -> None:
    """The defect: `docker logs --tail 5` read the whole file (up to ~100 MiB) into memory."""
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    path = tmp_path / "container.log"
    line = logs.encode_entry(logs.LogEntry("stdout", b"y" * 400 + b"\n", 1_000_000_000))
    block = line * 1000
    with open(path, "wb") as f:
        while f.tell() < 50 * 1024 * 1024:
            f.write(block)
        f.write(logs.encode_entry(logs.LogEntry("stdout", b"last\n", 2_000_000_000)))
    counting = _CountingReads()
    monkeypatch.setattr(logs, "open", counting.open, raising=False)
    got = list(logs.LogCursor(path).iter_selected(logs.LogFilter(tail=5)))
    assert [e.data for e in got] == [b"y" * 400 + b"\n"] * 4 + [b"last\n"]
    assert counting.read_bytes < 4 * logs.TAIL_BLOCK_BYTES


def test_output_is_counted_from_the_log_as_it_was_written(tmp_path: Path) -> None:
    """Live restore's RECEIVED: the bytes of one run's output, from the log alone, across
    rotations, with bytes stored as U+FFFD counted as the output had them."""
    path = tmp_path / "container.log"
    w = logs.LogWriter(path, logs.Rotation(max_bytes=300, max_files=3))
    w.write("stdout", b"an earlier run\n")
    since = w.last_ns + 1
    written = 0
    for chunk in (b"\xff\xfe\xe2\x82", b"partial", b" line\nand more\n", b"caf\xc3\xa9\n"):
        w.write("stderr", chunk)
        written += len(chunk)
    assert logs.count_output(path, since) == (written, w.last_ns)
    assert logs.count_output(path, w.last_ns + 1) == (0, w.last_ns)
    # A rotation that deletes the start: a mark taken after it counts from there.
    for i in range(40):
        w.write("stdout", f"line {i}\n".encode())
    assert w.rotations >= 3
    mark_ns = w.last_ns + 1
    w.write("stdout", b"after the mark\n")
    w.close()
    assert logs.count_output(path, mark_ns) == (len(b"after the mark\n"), w.last_ns)


def test_stamps_only_go_forward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs.time, "time_ns", lambda: 5)  # a clock that stands (or went back)
    w = logs.LogWriter(tmp_path / "c.log", not_before_ns=100)
    w.write("stdout", b"a\n")
    w.write("stdout", b"b\n")
    w.close()
    assert [e.time_ns for e in logs.LogCursor(tmp_path / "c.log").read_all()] == [100, 101]


def test_a_torn_last_line_is_not_counted_and_is_cut_off(tmp_path: Path) -> None:
    """A daemon killed mid-write leaves half a line: not counted (the guest sends it again),
    removed before the next writer appends."""
    path = tmp_path / "container.log"
    w = logs.LogWriter(path)
    w.write("stdout", b"whole\n")
    w.close()
    whole = path.read_bytes()
    torn = logs.encode_entry(logs.LogEntry("stdout", b"torn\n", 1 << 62))[:-5]
    path.write_bytes(whole + torn)
    assert logs.count_output(path, 0)[0] == len(b"whole\n")
    logs.trim_torn_end(path)
    assert path.read_bytes() == whole
    logs.trim_torn_end(path)  # a whole file is left alone
    assert path.read_bytes() == whole
    logs.trim_torn_end(tmp_path / "missing.log")
