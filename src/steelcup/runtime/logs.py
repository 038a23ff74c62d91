"""Container logs in docker's json-file format: one JSON object per output line.

`{"log": "text\\n", "stream": "stdout", "time": "2026-11-25T23:00:00.123456789Z"}`; a chunk
that does not end in a newline is stored as a partial line, as docker does.
"""

from __future__ import annotations

import json
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


class LogWriter:
    """Appends entries to a container's log file; flushes after each chunk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO = open(path, "ab")  # noqa: SIM115 - owned, closed in close()

    def write(self, stream: str, data: bytes) -> None:
        now = time.time_ns()
        self._file.write(b"".join(encode_entry(LogEntry(stream, line, now)) for line in
                                  split_lines(data)))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


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
