"""Daemon restart recovery: containers that were running are marked exited, and `--rm` ones
among them are removed (record and private dir) exactly once, as dockerd does."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from steelcup.errors import InvalidArgument, NotFound
from steelcup.runtime import logs
from steelcup.runtime.containers import EXIT_CODE_DAEMON_LOST, Runtime
from steelcup.runtime.model import ContainerConfig, Status
from steelcup.state.db import open_db
from tests.unit.runtime.support import make_runtime


def _create(runtime: Runtime, name: str, *, auto_remove: bool, running: bool) -> str:
    record = runtime.create(ContainerConfig(image="base:1", image_id="", cmd=("/bin/sh",),
                                            auto_remove=auto_remove), name)
    upper = runtime.container_dir(record.id) / "upper"
    upper.mkdir()
    (upper / "written-by-the-guest").write_text("data")
    if running:  # what the store holds when the daemon dies under a running container
        runtime.store.save(record.with_state(status=Status.RUNNING, pid=7))
    return record.id


def _restart(root: Path) -> Runtime:
    """A fresh daemon's runtime on the same state: recover, then the --rm sweep."""
    runtime = make_runtime(root, open_db(root))
    runtime.recover()
    asyncio.run(runtime.remove_ended_auto_remove())
    return runtime


def test_rm_containers_running_at_a_crash_are_removed_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = make_runtime(tmp_path, open_db(tmp_path))
    rm_running = _create(before, "rm-running", auto_remove=True, running=True)
    rm_created = _create(before, "rm-created", auto_remove=True, running=False)
    kept = _create(before, "kept", auto_remove=False, running=True)

    with caplog.at_level(logging.INFO, logger="steelcup.runtime.containers"):
        after = _restart(tmp_path)
        again = _restart(tmp_path)  # a second restart finds nothing more to remove

    for runtime in (after, again):
        with pytest.raises(NotFound):
            runtime.record(rm_running)
        assert rm_running not in {r.id for r in runtime.store.load_all()}
    assert not after.container_dir(rm_running).exists()
    removals = [r for r in caplog.records if "removing this --rm container" in r.getMessage()]
    assert [r.getMessage().split()[1] for r in removals] == [rm_running[:12]]

    # never started: docker keeps it until it runs and exits
    assert again.record(rm_created).state.status is Status.CREATED
    assert (again.container_dir(rm_created) / "upper" / "written-by-the-guest").exists()
    # not --rm: kept, marked exited by the restart recovery
    state = again.record(kept).state
    assert (state.status, state.exit_code) == (Status.EXITED, EXIT_CODE_DAEMON_LOST)
    assert (again.container_dir(kept) / "upper" / "written-by-the-guest").exists()


def test_rm_container_left_exited_by_a_crash_mid_removal_is_removed(tmp_path: Path) -> None:
    before = make_runtime(tmp_path, open_db(tmp_path))
    cid = _create(before, "half-removed", auto_remove=True, running=False)
    record = before.record(cid)
    before.store.save(record.with_state(status=Status.EXITED, exit_code=0))  # exited, not removed
    after = _restart(tmp_path)
    assert after.list() == [] and after.store.load_all() == []
    assert not after.container_dir(cid).exists()


def test_create_gives_the_writable_layer_the_default_size(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path, open_db(tmp_path))
    asked = runtime.create(ContainerConfig(image="base:1", image_id="", cmd=("/bin/sh",),
                                           storage_bytes=64 << 20), "asked")
    default = runtime.create(ContainerConfig(image="base:1", image_id="", cmd=("/bin/sh",)),
                             "default")
    assert asked.config.storage_bytes == 64 << 20
    assert default.config.storage_bytes == runtime.defaults.storage_bytes == 10 << 30


def test_create_caps_logs_at_the_daemons_rotation(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path, open_db(tmp_path))
    made = runtime.create(ContainerConfig(image="base:1", image_id="", cmd=("/bin/sh",),
                                          log_max_bytes=1 << 20), "small")
    assert (made.config.log_max_bytes, made.config.log_max_files) == (1 << 20, 5)
    assert runtime.log_rotation(made.config) == logs.Rotation(1 << 20, 5)
    for too_much in ({"log_max_bytes": 1 << 30}, {"log_max_files": 6}):
        with pytest.raises(InvalidArgument, match="exceeds this daemon's limit"):
            runtime.create(ContainerConfig(image="base:1", image_id="", cmd=("/bin/sh",),
                                           **too_much), None)


def test_a_kept_container_whose_vm_died_while_no_daemon_ran_is_exited_255(
    tmp_path: Path,
) -> None:
    """Live restore: the record stays running through `recover`; `restore` finds its QEMU gone
    (the pid's start time differs), exits it with 255 and consumes the record."""
    from steelcup.runtime import restore
    from steelcup.vm.machine import VmHandle

    before = make_runtime(tmp_path, open_db(tmp_path))
    cid = _create(before, "kept-vm", auto_remove=False, running=True)
    entry = restore.Kept(container_id=cid,
                         vm=VmHandle(pid=2**22 + 7, started=1, state_dir="/nonexistent/x",
                                     mem_mib=256, limit_mib=256),
                         process_id=3, pid=1, log_mark=restore.LogMark(1))
    restore.save(before.container_dir(cid), entry)
    after = make_runtime(tmp_path, open_db(tmp_path))
    left = restore.load_all(after.root / "containers")
    after.recover(kept=set(left))
    assert after.record(cid).state.status is Status.RUNNING

    def never_adopt(*_: object) -> object:
        raise AssertionError("a dead VM is not adopted")

    asyncio.run(after.restore(left, never_adopt))  # type: ignore[arg-type]
    state = after.record(cid).state
    assert state.status is Status.EXITED and state.exit_code == EXIT_CODE_DAEMON_LOST
    assert "VM ended while no daemon ran" in state.error
    assert restore.load_all(after.root / "containers") == {}
