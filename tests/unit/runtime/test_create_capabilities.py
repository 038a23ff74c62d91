"""Create resolves CapAdd/CapDrop/Privileged into the set every start and exec runs with,
refuses unknown names before anything is written, and a daemon restart keeps the set."""

from __future__ import annotations

from pathlib import Path

import pytest

from steelcup.errors import InvalidArgument, NotFound
from steelcup.runtime.capabilities import ALL_CAPS, DEFAULT_CAPS, mask_of
from steelcup.runtime.model import ContainerConfig, ContainerRecord
from steelcup.state.db import open_db
from tests.unit.runtime.support import make_runtime


def _config(**caps: object) -> ContainerConfig:
    return ContainerConfig(image="base:1", image_id="", cmd=("/bin/sh",), network_mode="none",
                           **caps)  # type: ignore[arg-type]


def test_the_set_is_resolved_at_create_and_survives_a_restart(tmp_path: Path) -> None:
    db = open_db(tmp_path)
    runtime = make_runtime(tmp_path, db)
    plain = runtime.create(_config(), "plain")
    tuned = runtime.create(_config(cap_add=("net_admin", "SYS_PTRACE"), cap_drop=("CHOWN",)),
                           "tuned")
    full = runtime.create(_config(privileged=True), "full")
    want = (DEFAULT_CAPS | mask_of(["CAP_NET_ADMIN", "CAP_SYS_PTRACE"])) & ~mask_of(["CAP_CHOWN"])
    assert plain.config.caps == DEFAULT_CAPS
    assert tuned.config.caps == want
    assert tuned.config.cap_add == ("net_admin", "SYS_PTRACE")  # as given, for inspect
    assert full.config.caps == ALL_CAPS and full.config.privileged
    restarted = make_runtime(tmp_path, db)
    restarted.recover()
    by_name = {r.name: r for r in restarted.list()}
    assert by_name["tuned"].config.caps == want
    assert by_name["tuned"].config.cap_drop == ("CHOWN",)
    assert by_name["full"].config.caps == ALL_CAPS


def test_unknown_capability_is_refused_before_the_image_or_anything_written(
        tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path, open_db(tmp_path))
    with pytest.raises(InvalidArgument, match='invalid CapAdd: unknown capability: "CAP_NOPE"'):
        runtime.create(_config(cap_add=("NOPE",)), "web")
    # a 400, not the 404 of an image that is not there yet (docker validates first)
    with pytest.raises(InvalidArgument, match="invalid CapDrop"):
        runtime.create(ContainerConfig(image="not-pulled:1", image_id="", cap_drop=("x",)), None)
    with pytest.raises(NotFound):
        runtime.create(ContainerConfig(image="not-pulled:1", image_id=""), None)
    assert runtime.list() == [] and runtime.store.load_all() == []


def test_a_record_from_before_capabilities_gets_the_default_set() -> None:
    record = ContainerRecord(id="a" * 64, name="old", created="2026-01-01T00:00:00Z",
                             config=_config(), path="/bin/sh", args=())
    data = record.to_json()
    for key in ("cap_add", "cap_drop", "privileged", "caps"):
        del data["config"][key]
    old = ContainerRecord.from_json(data)
    assert old.config.caps == DEFAULT_CAPS
    assert old.config.cap_add == () and not old.config.privileged
