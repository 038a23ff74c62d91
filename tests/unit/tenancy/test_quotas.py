"""Quotas and size classes through the real HTTP stack: tenants on the TLS listener with bearer
tokens, the real router, runtime and quota gate, a fake VM source (docs/tenancy.md)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any, cast

import httpx
import pytest

from steelcup.cli.commands.containers import _options
from steelcup.cli.createspec import create_body
from steelcup.cli.main import build_parser
from steelcup.errors import InvalidArgument
from steelcup.guest.protocol import RootfsCache
from steelcup.image.erofs import ErofsImages
from steelcup.tenancy.quota import QuotaExceeded, QuotaGate, need
from steelcup.tenancy.sizing import SIZE_LABEL, HostCapacity, resolve
from tests.unit.tenancy.conftest import Cloud

GIB = 1 << 30


def create(client: httpx.Client, labels: dict[str, str] | None = None,
           **host: Any) -> httpx.Response:
    return client.post("/containers/create", json={
        "Image": "base:1", "Cmd": ["serve"], "Labels": labels or {}, "HostConfig": host})


def names(client: httpx.Client) -> list[str]:
    return [c["Id"] for c in client.get("/containers/json", params={"all": "1"}).json()]


def test_twenty_concurrent_creates_against_a_quota_of_five_leave_exactly_five(
        cloud: Cloud) -> None:
    cloud.tenants.update("alice", ["containers=5"])
    clients = [cloud.client("alice") for _ in range(20)]
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(create, clients))
    for c in clients:
        c.close()
    assert sorted(a.status_code for a in answers) == [201] * 5 + [403] * 15
    refusals = {a.json()["message"] for a in answers if a.status_code == 403}
    assert refusals == {"quota exceeded: containers 5 of 5 in use (tenant alice)"}
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        assert len(names(alice)) == 5
        assert create(bob).status_code == 201  # another tenant's quota is its own


def test_removal_frees_what_it_held_and_nothing_drifts(cloud: Cloud) -> None:
    cloud.tenants.update("alice", ["containers=2"])
    with cloud.client("alice") as alice:
        first, second = (create(alice).json()["Id"] for _ in range(2))
        assert create(alice).status_code == 403
        failed = create(alice, {SIZE_LABEL: "x9"})  # refused before it counts anything
        assert failed.status_code == 400
        assert alice.delete(f"/containers/{first}").status_code == 204
        third = create(alice)
        assert third.status_code == 201
        assert create(alice).status_code == 403
        assert alice.delete(f"/containers/{second}").status_code == 204
        assert alice.delete(f"/containers/{third.json()['Id']}").status_code == 204
        assert [create(alice).status_code for _ in range(3)] == [201, 201, 403]


def test_vcpus_and_memory_of_existing_containers_count_running_or_not(cloud: Cloud) -> None:
    cloud.tenants.update("alice", ["memory=3G", "cpus=3"])
    with cloud.client("alice") as alice:
        big = create(alice, {SIZE_LABEL: "m2"}).json()["Id"]  # 2 vCPUs, 2 GiB, never started
        small = create(alice, {SIZE_LABEL: "m1"})  # 1 vCPU, 1 GiB: exactly at both quotas
        assert small.status_code == 201
        refused = create(alice, {SIZE_LABEL: "s1"})
        assert refused.status_code == 403
        assert refused.json()["message"] == (
            "quota exceeded: cpus 3 vCPUs of 3 vCPUs in use, 1 vCPU more asked (tenant alice)")
        cloud.tenants.update("alice", ["cpus=10"])  # a quota change applies at once
        refused = create(alice, Memory=GIB)
        assert refused.json()["message"] == ("quota exceeded: memory 3072 MiB of 3072 MiB in "
                                             "use, 1024 MiB more asked (tenant alice)")
        # `docker update` cannot grow past the quota either; shrinking frees room
        grow = alice.post(f"/containers/{big}/update", json={"Memory": 3 * GIB})
        assert grow.status_code == 403 and "memory 3072 MiB of 3072 MiB" in grow.json()["message"]
        assert alice.post(f"/containers/{big}/update",
                          json={"Memory": GIB}).status_code == 200
        assert create(alice, {SIZE_LABEL: "m1"}).status_code == 201


def test_size_classes_set_the_vm_and_the_tenants_default_applies(cloud: Cloud) -> None:
    cloud.tenants.update("bob", size_default="s2")
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        def host_of(client: httpx.Client, answer: httpx.Response) -> tuple[int, int, str]:
            info = client.get(f"/containers/{answer.json()['Id']}/json").json()
            return (info["HostConfig"]["Memory"] >> 20, info["HostConfig"]["NanoCpus"],
                    info["Config"]["Labels"].get(SIZE_LABEL, ""))

        assert host_of(alice, create(alice, {SIZE_LABEL: "m2"})) == (2048, 2 * 10**9, "m2")
        assert host_of(alice, create(alice)) == (512, 10**9, "s4")  # alice's default: s4
        assert host_of(bob, create(bob)) == (128, 10**9, "s2")
        # explicit -m / --cpus work; what is not given comes from the default class
        assert host_of(alice, create(alice, Memory=300 << 20)) == (300, 10**9, "")
        assert host_of(alice, create(alice, NanoCpus=2 * 10**9)) == (512, 2 * 10**9, "")
        started = create(alice, {SIZE_LABEL: "l2"}).json()["Id"]
        assert alice.post(f"/containers/{started}/start").status_code == 204
        request = cloud.vms.machines[-1].request
        assert (request.cpus, request.mem_mib) == (4, 8192)

        refused = create(alice, {SIZE_LABEL: "l3"})  # 8 vCPUs, 16 GiB on a 4-CPU host
        assert refused.status_code == 400
        assert refused.json()["message"] == \
            "size class l3 (8 vCPUs/16384 MiB) needs 8 vCPUs; this host has 4"
        assert "this host has 8192 MiB" in create(alice, Memory=9 * GIB).json()["message"]
        unknown = create(alice, {SIZE_LABEL: "xl"})
        assert unknown.status_code == 400 and "s1, s2" in unknown.json()["message"]
        both = create(alice, {SIZE_LABEL: "m1"}, Memory=GIB)
        assert both.status_code == 400 and "one or the other" in both.json()["message"]


def test_the_operators_own_containers_keep_the_daemon_defaults_and_no_quota() -> None:
    host = HostCapacity(cpus=2, mem_mib=4096)
    assert resolve("", 0, 0.0, None, host).mem_mib == 0  # daemon default, as before
    assert resolve("", 99_999, 64.0, None, host).cpus == 64.0  # not limited here (as before)
    assert resolve("m1", 0, 0.0, None, host).mem_mib == 1024  # a class is a class for all
    with pytest.raises(InvalidArgument, match="this host has 2"):
        resolve("l1", 0, 0.0, None, host)
    gate = QuotaGate(lambda name: pytest.fail("the operator has no quotas"))
    with gate.admit("", need(containers=1000)), gate.admit(None, need(cpus=1000)):
        pass


def test_a_kind_with_no_registered_count_is_a_wiring_error_not_unlimited() -> None:
    from steelcup.tenancy.model import Quotas, Tenant

    gate = QuotaGate(lambda name: Tenant(name, "x", "", Quotas(volumes=1)))
    with pytest.raises(Exception, match="no count registered for quota volumes"):
        with gate.admit("alice", need(volumes=1)):
            pass
    held = [0]
    gate.register("volumes", lambda tenant: held[0])
    with gate.admit("alice", need(volumes=1)):  # in flight: counted before it exists
        with pytest.raises(QuotaExceeded, match="volumes 1 of 1 in use"):
            with gate.admit("alice", need(volumes=1)):
                pass
        held[0] = 1
    with pytest.raises(QuotaExceeded, match="volumes 1 of 1 in use"):
        with gate.admit("alice", need(volumes=1)):
            pass
    held[0] = 0  # removed: freed
    with gate.admit("alice", need(volumes=1)):
        pass


def test_steelcup_run_size_sends_the_size_label() -> None:
    args = build_parser("run").parse_args(["run", "--size", "m1", "-l", "a=b", "base:1"])
    body = create_body(_options(args, run=True), for_run=True)
    assert body["Labels"] == {"a": "b", SIZE_LABEL: "m1"}
    assert "Memory" not in body["HostConfig"]


def test_a_create_its_quota_refuses_does_not_wait_for_a_root_disk(cloud: Cloud) -> None:
    """With block roots, a create waits (bounded) for its image's erofs; one the tenant's
    quota refuses is refused first, and asks for no erofs at all."""
    asked: list[str] = []

    class NeverMade:
        def ready(self, image_id: str) -> None:
            return None

        def ensure(self, image_id: str, *_: Any, **__: Any) -> Future[None]:
            asked.append(image_id)
            return Future()  # never done: a create that waits, waits its whole bound

    cloud.runtime.defaults = replace(cloud.runtime.defaults, rootfs_cache=RootfsCache.BLOCK,
                                     storage_bytes=GIB)
    cloud.runtime.erofs = cast(ErofsImages, NeverMade())
    cloud.tenants.update("alice", ["containers=0"])
    with cloud.client("alice") as alice:
        refused = create(alice)
        assert refused.status_code == 403, refused.text
        assert create(alice, {SIZE_LABEL: "x9"}).status_code == 400
    assert asked == []
