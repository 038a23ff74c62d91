"""The live-restore record: round trip, what a starting daemon skips, liveness by start time."""

from __future__ import annotations

import json
import os
from pathlib import Path

from steelcup.net.nft import PublishedPort
from steelcup.runtime import restore
from steelcup.vm.machine import VmHandle
from steelcup.vm.process import start_time


def _kept(cid: str, pid: int, started: int) -> restore.Kept:
    return restore.Kept(
        container_id=cid,
        vm=VmHandle(pid=pid, started=started, state_dir="/run/x/abc", mem_mib=256,
                    limit_mib=512, cgroup="/sys/fs/cgroup/x/abc", rootfs_subdir="root"),
        process_id=9, pid=1, log_mark=restore.LogMark(1 << 62, 1 << 33), slot_dir="/run/x/s/s1",
        taps=("sct0123",), ports=(PublishedPort("", 8080, "10.0.0.2", 80, "tcp"),))


def test_round_trip_and_the_run_dir_paths(tmp_path: Path) -> None:
    kept = _kept("c1", 1234, 99)
    (tmp_path / "c1").mkdir()
    restore.save(tmp_path / "c1", kept)
    assert restore.load_all(tmp_path) == {"c1": kept}
    assert kept.run_dir_paths() == (Path("/run/x/abc"), Path("/run/x/s/s1"))
    restore.forget(tmp_path / "c1")
    restore.forget(tmp_path / "c1")  # twice is fine
    assert restore.load_all(tmp_path) == {}


def test_unreadable_or_misplaced_records_are_skipped(tmp_path: Path) -> None:
    for name in ("bad", "other", "old"):
        (tmp_path / name).mkdir()
    (tmp_path / "bad" / restore.RESTORE_FILE).write_text("{not json")
    restore.save(tmp_path / "other", _kept("c2", 1, 1))  # names another container
    data = _kept("old", 1, 1).to_json() | {"format": 0}
    (tmp_path / "old" / restore.RESTORE_FILE).write_text(json.dumps(data))
    assert restore.load_all(tmp_path) == {}
    assert restore.load_all(tmp_path / "missing") == {}


def test_alive_means_the_same_process() -> None:
    me = os.getpid()
    started = start_time(me)
    assert started is not None
    assert _kept("c", me, started).alive()
    assert not _kept("c", me, started + 1).alive()  # the pid is someone else's now


def test_the_mark_counts_the_log_from_its_point_on(tmp_path: Path) -> None:
    from steelcup.runtime import logs

    path = tmp_path / "container.log"
    w = logs.LogWriter(path)
    w.write("stdout", b"before the mark\n")
    mark = restore.LogMark(w.last_ns + 1, base_bytes=1000)
    w.write("stdout", b"12345\n")
    w.close()
    assert mark.logged_bytes(path) == (1006, w.last_ns + 1)
    assert restore.LogMark(w.last_ns + 1, 7).logged_bytes(path) == (7, w.last_ns + 1)
