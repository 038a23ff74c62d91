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
    text = entry.data.decode("utf-8", errors="surrogateescape")
    record = {
        "log": text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace"),
        "stream": entry.stream,
        "time": format_time_ns(entry.time_ns),
    }
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
    size by at most one entry: one line, at most a guest output frame of 64 KiB, encoded)."""

    def __init__(self, path: Path, rotation: Rotation | None = None) -> None:
        self.path = path
        self.rotation = rotation
        self._file: BinaryIO = open(path, "ab")  # noqa: SIM115 - owned, closed in close()
        self._size = self._file.tell()

    def write(self, stream: str, data: bytes) -> None:
        now = time.time_ns()
        pending: list[bytes] = []
        for line in split_lines(data):
            if self.rotation is not None and self._size >= self.rotation.max_bytes:
                self._file.write(b"".join(pending))
                pending = []
                self._rotate(self.rotation.max_files)
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


class LogCursor:
    """Reads a container's log across its rotated files, oldest first, then follows the live
    file through later rotations (the file it was reading is found again by inode)."""

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
        entries: list[LogEntry] = []
        for old in reversed(self._rotated_files()):
            entries += read_entries(old)[0]
        entries += self._read_live()
        return entries

    def read_new(self) -> list[LogEntry]:
        """Entries written since the last read (through any rotations meanwhile)."""
        entries: list[LogEntry] = []
        try:
            inode: int | None = os.stat(self.path).st_ino
        except FileNotFoundError:
            inode = None
        if self._inode is not None and inode != self._inode:
            # Rotated: finish the file we were reading, then the ones rotated after it.
            older = self._rotated_files()
            at = next((i for i, p in enumerate(older) if _inode(p) == self._inode), None)
            if at is not None:
                entries += read_entries(older[at], self._offset)[0]
                for newer in reversed(older[:at]):
                    entries += read_entries(newer)[0]
            self._inode, self._offset = None, 0
        return entries + self._read_live()

    def _read_live(self) -> list[LogEntry]:
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            return []
        if inode != self._inode:
            self._inode, self._offset = inode, 0
        entries, self._offset = read_entries(self.path, self._offset)
        return entries


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def read_entries(path: Path, offset: int = 0) -> tuple[list[LogEntry], int]:
    """Entries from byte `offset` to the last complete line; returns them and the new offset."""
    if not path.exists():
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        blob = f.read()
    end = blob.rfind(b"\n") + 1
    entries = [_decode_line(line) for line in blob[:end].splitlines() if line]
    return [e for e in entries if e is not None], offset + end


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
    chosen = [
        e
        for e in entries
        if ((e.stream == "stdout" and stdout) or (e.stream == "stderr" and stderr))
        and e.time_ns >= since_ns
        and (until_ns == 0 or e.time_ns <= until_ns)
    ]
    if tail is not None:
        chosen = chosen[-tail:] if tail > 0 else []
    return iter(chosen)
