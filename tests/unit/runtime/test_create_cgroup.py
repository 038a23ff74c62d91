"""HostConfig.SteelcupCgroup (steelcup-runtime's linux.cgroupsPath): checked by the codec,
kept over a daemon restart and shown by inspect, the VM placed in it once acquired (fake VM
source), and refused to a tenant and to a pod member."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from steelcup.api import docker_codec as codec
from steelcup.errors import Forbidden, InvalidArgument
from steelcup.runtime.model import ContainerConfig
from steelcup.state.db import open_db
from tests.unit.runtime.fakevm import FakeVms
from tests.unit.runtime.support import make_runtime

pytestmark = pytest.mark.usefixtures("plain_dirs")  # conftest: roots are plain dirs

CGROUP = "/kubepods/besteffort/pod1/abc"


def _config(**kw: object) -> ContainerConfig:
    return replace(ContainerConfig(image="base:1", image_id="", cmd=("serve",),
                                   cgroup_path=CGROUP), **kw)


def test_the_cgroup_is_kept_and_shown(tmp_path: Path) -> None:
    db = open_db(tmp_path)
    record = make_runtime(tmp_path, db).create(_config(), "c1")
    assert record.config.cgroup_path == CGROUP
    restarted = make_runtime(tmp_path, db)
    restarted.recover()
    shown = codec.encode_inspect(restarted.record("c1"), "/x.log")["HostConfig"]
    assert shown["SteelcupCgroup"] == CGROUP
    plain = make_runtime(tmp_path, db).create(_config(cgroup_path=""), "c2")
    assert "SteelcupCgroup" not in codec.encode_inspect(plain, "/x.log")["HostConfig"]


def test_the_vm_is_placed_once_acquired(tmp_path: Path) -> None:
    fake = FakeVms()

    async def main() -> None:
        runtime = make_runtime(tmp_path, open_db(tmp_path), vms=fake.source())
        try:
            record = runtime.create(_config(), "c1")
            await runtime.start(record.id)
            (await fake.next_process()).exit(0)
            plain = runtime.create(_config(cgroup_path=""), "c2")
            await runtime.start(plain.id)
            (await fake.next_process()).exit(0)
        finally:
            await runtime.shutdown()

    asyncio.run(asyncio.wait_for(main(), 20))
    assert [m.cgroups for m in fake.machines] == [[CGROUP], []]
    # and asked of the VM source, which boots a fresh VM in it
    assert [m.request.cgroup_path for m in fake.machines] == [CGROUP, ""]


@pytest.mark.parametrize(("kw", "error", "text"), [
    ({"tenant": "acme"}, Forbidden, "operator only"),
    ({"pod_of": "sandbox"}, InvalidArgument, "give the cgroup to the sandbox"),
])
def test_refused_combinations(tmp_path: Path, kw: dict[str, object], error: type[Exception],
                              text: str) -> None:
    runtime = make_runtime(tmp_path, open_db(tmp_path))
    with pytest.raises(error, match=text):
        runtime.create(_config(**kw), "refused")
    assert runtime.list() == []


def test_the_codec_checks_the_path() -> None:
    config = codec.decode_create({"Image": "x", "HostConfig": {"SteelcupCgroup": CGROUP + "/"}})
    assert config.cgroup_path == CGROUP
    for bad, text in (("kubepods/x", "absolute"), ("/a/../../x", r"'\.\.' components")):
        with pytest.raises(InvalidArgument, match=text):
            codec.decode_create({"Image": "x", "HostConfig": {"SteelcupCgroup": bad}})
