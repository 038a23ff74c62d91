"""The OCI state document and the per-container records of steelcup-runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from steelcup.errors import InvalidArgument, NotFound
from steelcup.oci.state import Record, StateDir, check_id, oci_state, oci_status

RECORD = Record(id="c1", container="f" * 64, bundle="/b", created="2026-12-04T09:00:00Z",
                annotations={"a": "b"}, keeper_pid=4242)


@pytest.mark.parametrize(("docker", "oci"), [
    ("created", "created"), ("running", "running"), ("paused", "paused"),
    ("restarting", "running"), ("exited", "stopped"), ("dead", "stopped"),
    ("removing", "stopped"), (None, "stopped"),
])
def test_docker_statuses_map_to_the_runtime_specs(docker: str | None, oci: str) -> None:
    assert oci_status(docker) == oci


def test_the_state_document_has_the_keepers_pid_while_it_lives() -> None:
    state = oci_state(RECORD, "running", keeper_alive=True)
    assert state == {"ociVersion": "1.1.0", "id": "c1", "pid": 4242, "status": "running",
                     "bundle": "/b", "rootfs": "", "created": "2026-12-04T09:00:00Z",
                     "annotations": {"a": "b"}, "owner": ""}
    assert oci_state(RECORD, "exited", keeper_alive=True)["pid"] == 0
    # created, but the keeper is gone: nothing can ever run it
    gone = oci_state(RECORD, "created", keeper_alive=False)
    assert gone["status"] == "stopped" and gone["pid"] == 0


def test_records_round_trip_and_a_missing_one_is_runcs_error(tmp_path: Path) -> None:
    states = StateDir(tmp_path / "root")
    states.create(RECORD)
    assert states.load("c1") == RECORD
    with pytest.raises(InvalidArgument, match="exists"):
        states.create(RECORD)
    updated = states.with_keeper(RECORD, 99)
    assert states.load("c1").keeper_pid == 99 == updated.keeper_pid
    assert states.ids() == ["c1"]
    states.remove("c1")
    with pytest.raises(NotFound, match="^container does not exist$"):
        states.load("c1")
    assert states.ids() == []


@pytest.mark.parametrize("bad", ["", "..", "a/b", "a b", "x\n"])
def test_ids_follow_runcs_rule(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid container id"):
        check_id(bad)
    assert check_id("abc_DEF-1.2+3") == "abc_DEF-1.2+3"
