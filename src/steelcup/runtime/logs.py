"""Container logs in docker's json-file format: one JSON object per output line.

`{"log": "text\\n", "stream": "stdout", "time": "2026-11-25T23:00:00.123456789Z"}`; a chunk
that does not end in a newline is stored as a partial line, as docker does. Files rotate like
docker's `max-size`/`max-file`: `container.log`, then `container.log.1` (newest rotated) up to
`container.log.<max_files-1>`; readers go through them oldest first.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO


@dataclass(frozen=True)
class LogEntry:
    stream: str  # "stdout" | "stderr"
    data: bytes
    time_ns: int


def format_time_ns(time_ns: int) -> str:
    """RFC 3339 with nanoseconds, as docker prints timestamps."""
    secs, nanos = divmod(time_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(secs, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def parse_time_ns(text: str) -> int:
    """Inverse of `format_time_ns` (tolerates fewer fraction digits)."""
    main, _, frac = text.rstrip("Z").partition(".")
    secs = int(datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
    return secs * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])


def split_lines(data: bytes) -> list[bytes]:
    """Split a chunk into lines keeping the newline; a trailing partial line is its own piece."""
    pieces = data.split(b"\n")
    lines = [p + b"\n" for p in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


def encode_entry(entry: LogEntry) -> bytes:
    """One json-file line. Bytes that are not UTF-8 are stored as U+FFFD (as docker does);
    such a line also says how many bytes of output it stands for ("bytes"), so that the
    output's length can be counted from the log (live restore: `count_output`)."""
    text = entry.data.decode("utf-8", errors="replace")
    record: dict[str, object] = {"log": text, "stream": entry.stream,
                                 "time": format_time_ns(entry.time_ns)}
    if len(text.encode()) != len(entry.data):
        record["bytes"] = len(entry.data)
    return json.dumps(record, ensure_ascii=False).encode() + b"\n"


@dataclass(frozen=True)
class Rotation:
    """Docker's json-file `max-size` (bytes per file) and `max-file` (files kept, >= 1)."""

    max_bytes: int
    max_files: int


def rotated(path: Path, index: int) -> Path:
    """`path` itself for 0, else its `index`-th rotated file (1 = the newest)."""
    return path if index == 0 else path.with_name(f"{path.name}.{index}")


class LogWriter:
    """Appends entries to a container's log file; flushes after each chunk. With `rotation`,
    a file that reached `max_bytes` is rotated before the next entry (so a file exceeds the
    size by at most one entry: one line, at most a guest output frame of 64 KiB, encoded).

    Each chunk's time stamp is later than the one before and not before `not_before_ns`
    (the wall clock, nudged by a nanosecond where it has not moved or went back): live
    restore tells one run's output from another's, and what was logged before a point from
    what came after it, by time stamp (`count_output`)."""

    def __init__(self, path: Path, rotation: Rotation | None = None,
                 not_before_ns: int = 0) -> None:
        self.path = path
        self.rotation = rotation
        self._file: BinaryIO = open(path, "ab")  # noqa: SIM115 - owned, closed in close()
        self._size = self._file.tell()
        self.last_ns = not_before_ns - 1  # the time stamp of the last chunk written
        self.rotations = 0  # how often the file was rotated

    def write(self, stream: str, data: bytes) -> None:
        now = max(time.time_ns(), self.last_ns + 1)
        self.last_ns = now
        pending: list[bytes] = []
        for line in split_lines(data):
            if self.rotation is not None and self._size >= self.rotation.max_bytes:
                self._file.write(b"".join(pending))
                pending = []
                self._rotate(self.rotation.max_files)
                self.rotations += 1
            entry = encode_entry(LogEntry(stream, line, now))
            pending.append(entry)
            self._size += len(entry)
        self._file.write(b"".join(pending))
        self._file.flush()

    def _rotate(self, max_files: int) -> None:
        self._file.close()
        if max_files <= 1:
            self._file = open(self.path, "wb")  # noqa: SIM115 - one file: start it over
        else:
            with contextlib.suppress(FileNotFoundError):
                rotated(self.path, max_files - 1).unlink()
            for index in range(max_files - 2, -1, -1):
                with contextlib.suppress(FileNotFoundError):
                    rotated(self.path, index).rename(rotated(self.path, index + 1))
            self._file = open(self.path, "ab")  # noqa: SIM115
        self._size = 0

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class LogFilter:
    """Docker's logs filters: streams, since/until (ns, 0 = open), tail (last N lines)."""

    stdout: bool = True
    stderr: bool = True
    since_ns: int = 0
    until_ns: int = 0
    tail: int | None = None

    def accepts(self, entry: LogEntry) -> bool:
        """The stream and time filters (the tail is the reader's job)."""
        return (((entry.stream == "stdout" and self.stdout)
                 or (entry.stream == "stderr" and self.stderr))
                and entry.time_ns >= self.since_ns
                and (self.until_ns == 0 or entry.time_ns <= self.until_ns))


# Bytes read at a time when scanning a file backwards for its last lines.
TAIL_BLOCK_BYTES = 64 * 1024


class LogCursor:
    """Reads a container's log across its rotated files, oldest first, then follows the live
    file through later rotations (the file it was reading is found again by inode). Reads
    stream line by line, so memory stays bounded whatever the size of the files."""

    # Rotated files a reader looks for; a daemon default or a container's max-file beyond
    # this would be unreadable past it.
    MAX_FILES = 1000

    def __init__(self, path: Path) -> None:
        self.path = path
        self._inode: int | None = None
        self._offset = 0

    def _rotated_files(self) -> list[Path]:
        files = []
        for index in range(1, self.MAX_FILES):
            candidate = rotated(self.path, index)
            if not candidate.exists():
                break
            files.append(candidate)
        return files

    def read_all(self) -> list[LogEntry]:
        """Every entry there is now: rotated files oldest first, then the live file."""
        return list(self.iter_all())

    def iter_all(self) -> Iterator[LogEntry]:
        """`read_all` one entry at a time; afterwards `read_new` continues from there."""
        for old in reversed(self._rotated_files()):
            for entry, _ in iter_entries(old):
                if entry is not None:
                    yield entry
        yield from self._iter_live()

    def iter_selected(self, want: LogFilter) -> Iterator[LogEntry]:
        """The entries `want` selects, oldest first. With a tail, only the end of the log is
        read: the files are scanned backwards, newest first, until enough lines matched."""
        if want.tail is None:
            return (entry for entry in self.iter_all() if want.accepts(entry))
        return iter(self._tail(want, want.tail))

    def _tail(self, want: LogFilter, count: int) -> list[LogEntry]:
        found: list[LogEntry] = []
        try:
            live = open(self.path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            self._inode, self._offset = None, 0
        else:
            with live:
                self._inode = os.fstat(live.fileno()).st_ino
                self._offset = _complete_end(live)
                _collect_backwards(live, self._offset, want, count, found)
        for old in self._rotated_files():  # newest rotated first
            if len(found) >= count:
                break
            try:
                with open(old, "rb") as f:
                    _collect_backwards(f, _complete_end(f), want, count, found)
            except FileNotFoundError:
                continue
        found.reverse()
        return found

    def read_new(self) -> list[LogEntry]:
        """Entries written since the last read (through any rotations meanwhile)."""
        return list(self.iter_new())

    def iter_new(self) -> Iterator[LogEntry]:
        """`read_new` one entry at a time."""
        inode = _inode(self.path)
        if self._inode is not None and inode != self._inode:
            # Rotated: finish the file we were reading, then the ones rotated after it.
            older = self._rotated_files()
            at = next((i for i, p in enumerate(older) if _inode(p) == self._inode), None)
            offset = self._offset
            self._inode, self._offset = None, 0
            if at is not None:
                for entry, _ in iter_entries(older[at], offset):
                    if entry is not None:
                        yield entry
                for newer in reversed(older[:at]):
                    for entry, _ in iter_entries(newer):
                        if entry is not None:
                            yield entry
        yield from self._iter_live()

    def _iter_live(self) -> Iterator[LogEntry]:
        try:
            live = open(self.path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return
        with live:
            inode = os.fstat(live.fileno()).st_ino
            if inode != self._inode:
                self._inode, self._offset = inode, 0
            for entry, offset in _iter_open(live, self._offset):
                self._offset = offset
                if entry is not None:
                    yield entry


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def _complete_end(f: BinaryIO) -> int:
    """The offset just past the file's last newline (a torn last line is not read yet)."""
    end = f.seek(0, os.SEEK_END)
    while end > 0:
        start = max(0, end - TAIL_BLOCK_BYTES)
        f.seek(start)
        block = f.read(end - start)
        at = block.rfind(b"\n")
        if at >= 0:
            return start + at + 1
        end = start
    return 0


def _lines_backwards(f: BinaryIO, end: int) -> Iterator[bytes]:
    """The non-empty lines of `f[:end]`, last first, read in blocks from the end."""
    rest = b""
    pos = end
    while pos > 0:
        start = max(0, pos - TAIL_BLOCK_BYTES)
        f.seek(start)
        pieces = (f.read(pos - start) + rest).split(b"\n")
        pos = start
        rest = pieces[0]
        for line in reversed(pieces[1:]):
            if line:
                yield line
    if rest:
        yield rest


def _collect_backwards(
    f: BinaryIO, end: int, want: LogFilter, count: int, found: list[LogEntry]
) -> None:
    """Append to `found` (newest first) the entries of `f[:end]` `want` accepts, up to
    `count` in all."""
    if len(found) >= count:
        return
    for line in _lines_backwards(f, end):
        entry = _decode_line(line)
        if entry is not None and want.accepts(entry):
            found.append(entry)
            if len(found) >= count:
                return


def _iter_open(f: BinaryIO, offset: int) -> Iterator[tuple[LogEntry | None, int]]:
    """Each complete line from byte `offset`, decoded (None if torn or foreign), with the
    offset just past it."""
    f.seek(offset)
    for line in f:
        if not line.endswith(b"\n"):
            return  # still being written
        offset += len(line)
        yield (_decode_line(line) if line.strip() else None), offset


def iter_entries(path: Path, offset: int = 0) -> Iterator[tuple[LogEntry | None, int]]:
    """`_iter_open` over the file at `path` (nothing if it is gone)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with f:
        yield from _iter_open(f, offset)


def read_entries(path: Path, offset: int = 0) -> tuple[list[LogEntry], int]:
    """Entries from byte `offset` to the last complete line; returns them and the new offset."""
    entries: list[LogEntry] = []
    end = offset
    for entry, end in iter_entries(path, offset):  # noqa: B007 - the last one is returned
        if entry is not None:
            entries.append(entry)
    return entries, end


def count_output(path: Path, since_ns: int) -> tuple[int, int]:
    """Bytes of output in the entries of the log at `path` (its rotated files, oldest first,
    then the live file) stamped `since_ns` or later, counted as the output had them ("bytes"
    where the line stored U+FFFD), and the time stamp of the last of them (`since_ns` - 1 if
    none). A torn last line (a writer killed mid-write) is not counted: `trim_torn_end`
    removes it before a writer appends again."""
    total = 0
    last_ns = since_ns - 1
    files = [*reversed(LogCursor(path)._rotated_files()), path]
    for name in files:
        for counted in _iter_counts(name):
            if counted is not None and counted[0] >= since_ns:
                total += counted[1]
                last_ns = max(last_ns, counted[0])
    return total, last_ns


def _iter_counts(path: Path) -> Iterator[tuple[int, int] | None]:
    """Each complete line's (time stamp, output bytes), None for a foreign one."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with f:
        for line in f:
            if not line.endswith(b"\n"):
                return
            yield _line_count(line)


def _line_count(line: bytes) -> tuple[int, int] | None:
    try:
        record = json.loads(line)
        nbytes = record.get("bytes")
        if nbytes is None:
            nbytes = len(record["log"].encode())
        return parse_time_ns(record["time"]), int(nbytes)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def trim_torn_end(path: Path) -> None:
    """Cut a torn last line (no newline: its writer was killed mid-write) off the live log."""
    try:
        f = open(path, "r+b")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with f:
        end = _complete_end(f)
        if end != f.seek(0, os.SEEK_END):
            f.truncate(end)


def _decode_line(line: bytes) -> LogEntry | None:
    try:
        record = json.loads(line)
        return LogEntry(record["stream"], record["log"].encode(), parse_time_ns(record["time"]))
    except (ValueError, KeyError, TypeError):
        return None  # a torn or foreign line is skipped, never fatal


def select(
    entries: list[LogEntry],
    *,
    stdout: bool,
    stderr: bool,
    since_ns: int = 0,
    until_ns: int = 0,
    tail: int | None = None,
) -> Iterator[LogEntry]:
    """Docker's logs filters: streams, since/until (ns, 0 = open), tail (last N lines)."""
    want = LogFilter(stdout, stderr, since_ns, until_ns, tail)
    chosen = [e for e in entries if want.accepts(e)]
    if tail is not None:
        chosen = chosen[-tail:] if tail > 0 else []
    return iter(chosen)
