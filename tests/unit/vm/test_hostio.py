"""QEMU's storage I/O from /proc/PID/io (docker stats' BlockIO and the fs metrics)."""

from __future__ import annotations

from pathlib import Path

import pytest

from steelcup.vm.hostio import HostIo, parse_proc_io, read_host_io

PROC_IO = ("rchar: 123456789\nwchar: 98765\nsyscr: 100\nsyscw: 50\nread_bytes: 40960\n"
           "write_bytes: 9437184\ncancelled_write_bytes: 1048576\n")


def test_storage_bytes_not_the_syscall_bytes() -> None:
    # rchar/wchar count every read()/write(), the tap's and sockets' too: not storage.
    assert parse_proc_io(PROC_IO) == HostIo(read_bytes=40960, write_bytes=8 << 20)


def test_a_truncated_file_never_written_back_is_not_counted_below_zero() -> None:
    io = parse_proc_io("read_bytes: 0\nwrite_bytes: 4096\ncancelled_write_bytes: 8192\n")
    assert io.write_bytes == 0


@pytest.mark.parametrize("text", ["", "rchar: 1\n", "read_bytes: 1\n", "read_bytes: x\n"])
def test_a_file_without_the_fields_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_proc_io(text)


def test_a_gone_or_unreadable_process_is_none(tmp_path: Path) -> None:
    assert read_host_io(424242, proc=tmp_path) is None
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "io").write_text("garbage\n")
    assert read_host_io(7, proc=tmp_path) is None
    (tmp_path / "7" / "io").write_text(PROC_IO)
    assert read_host_io(7, proc=tmp_path) == HostIo(40960, 8 << 20)


def test_this_process_can_be_read() -> None:
    import os

    io = read_host_io(os.getpid())
    assert io is not None and io.read_bytes >= 0 and io.write_bytes >= 0
