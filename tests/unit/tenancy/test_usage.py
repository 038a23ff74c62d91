"""Usage metering: container-seconds per size from the runtime's start/die events, kept in the
state database across a daemon restart (and a crash)."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import time
from pathlib import Path

from steelcup.daemon import start_metering
from steelcup.runtime.model import ContainerConfig
from steelcup.state.db import open_db
from steelcup.tenancy.credentials import Authority
from steelcup.tenancy.manager import Tenants
from steelcup.tenancy.store import TenantStore
from steelcup.tenancy.usage import NS, Meter, Metered, UsageLedger, UsageLine
from tests.unit.image.tarutil import make_tar
from tests.unit.runtime.fakevm import FakeVms
from tests.unit.runtime.support import make_runtime
from tests.unit.tenancy.conftest import Cloud
from tests.unit.tenancy.test_quotas import create

T0 = 1_700_000_000 * NS
M1 = Metered("alice", 1, 1024)


def test_runs_are_billed_per_shape_inside_the_window_and_survive_a_reopen(
        tmp_path: Path) -> None:
    ledger = UsageLedger(open_db(tmp_path))
    ledger.started("c1", M1, T0)
    ledger.stopped("c1", T0 + 100 * NS)
    ledger.started("c1", M1, T0 + 200 * NS)  # the same container's second run
    ledger.stopped("c1", T0 + 250 * NS)
    ledger.started("c2", Metered("alice", 3, 700), T0 + 10 * NS)  # no class has this shape
    ledger.stopped("c2", T0 + 20 * NS + NS // 2)
    ledger.started("b1", Metered("bob", 1, 64), T0)
    ledger.stopped("b1", T0 + 5 * NS)

    reopened = UsageLedger(open_db(tmp_path))  # a daemon restart
    assert reopened.report("alice") == [UsageLine("m1", 1, 1024, 1, 150),
                                        UsageLine("", 3, 700, 1, 11)]  # 10.5 s: 11
    assert reopened.report("alice", T0 + 50 * NS, T0 + 220 * NS) == [
        UsageLine("m1", 1, 1024, 1, 70)]  # 50 of the first run, 20 of the second
    assert reopened.report("bob") == [UsageLine("s1", 1, 64, 1, 5)]
    assert reopened.report("carol") == []


def test_a_crash_is_billed_to_the_last_heartbeat_and_a_surviving_run_from_its_start(
        tmp_path: Path) -> None:
    ledger = UsageLedger(open_db(tmp_path))
    ledger.started("died", M1, T0)
    ledger.started("kept", M1, T0)
    ledger.heartbeat(T0 + 30 * NS)
    # the daemon is killed here; a new one finds "kept" still running (kept alive)
    reopened = UsageLedger(open_db(tmp_path))
    assert reopened.reconcile(lambda cid: cid == "kept") == 1
    assert reopened.open_runs() == ["kept"]
    now = T0 + 100 * NS
    assert reopened.report("alice", now_ns=now) == [UsageLine("m1", 1, 1024, 2, 30 + 100)]
    # a start without the die of the run before (lost with a crash) ends that run first
    reopened.started("kept", M1, now)
    assert reopened.open_runs() == ["kept"]
    assert reopened.report("alice", now_ns=now + 10 * NS) == [
        UsageLine("m1", 1, 1024, 2, 30 + 30 + 10)]


def test_the_runtimes_start_and_die_are_metered_and_only_the_operator_reads_them(
        cloud: Cloud) -> None:
    before = time.time_ns()
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        cid = create(alice, {"sh.steelcup.size": "m1"}).json()["Id"]
        other = create(alice, Memory=300 << 20).json()["Id"]
        never = create(alice, {"sh.steelcup.size": "l1"}).json()["Id"]  # created: not billed
        for _ in range(2):
            assert alice.post(f"/containers/{cid}/start").status_code == 204
            assert alice.post(f"/containers/{cid}/kill").status_code == 204
        assert alice.post(f"/containers/{other}/start").status_code == 204
        usage = cloud.tenants.usage_report("alice")
        assert [(u.size, u.cpus, u.mem_mib, u.containers) for u in usage] == [
            ("m1", 1, 1024, 1), ("", 1, 300, 1)]
        assert all(u.seconds >= 1 for u in usage)
        assert cloud.tenants.usage is not None
        assert cloud.tenants.usage.open_runs() == [other]  # still running
        assert alice.delete(f"/containers/{other}", params={"force": "1"}).status_code == 204
        assert cloud.tenants.usage.open_runs() == []
        assert cloud.tenants.usage_report("bob") == []
        assert cloud.tenants.usage_report("alice", until_ns=before) == []
        denied = alice.get("/steelcup/tenants/alice/usage")
        assert denied.status_code == 403
        assert bob.get("/steelcup/tenants/alice/usage").status_code == 403
        assert never


def test_the_meter_ignores_what_is_not_a_container_run(tmp_path: Path) -> None:
    ledger = UsageLedger(open_db(tmp_path))
    meter = Meter(ledger, lambda cid: M1 if cid == "c1" else None)
    meter.observe({"Type": "image", "Action": "start", "Actor": {"ID": "c1"}, "timeNano": T0})
    meter.observe({"Type": "container", "Action": "create", "Actor": {"ID": "c1"},
                   "timeNano": T0})
    meter.observe({"Type": "container", "Action": "start", "Actor": {"ID": "gone"},
                   "timeNano": T0})
    assert ledger.open_runs() == []
    meter.observe({"Type": "container", "Action": "start", "Actor": {"ID": "c1"},
                   "timeNano": T0})
    meter.observe({"Type": "container", "Action": "destroy", "Actor": {"ID": "c1"},
                   "timeNano": T0 + 3 * NS})
    assert ledger.report("alice") == [UsageLine("m1", 1, 1024, 1, 3)]


def test_a_daemon_restart_keeps_usage_and_ends_what_died_with_the_old_daemon(
        tmp_path: Path) -> None:
    """The daemon's own wiring (`start_metering`) over a real runtime, twice on one root."""
    def tenants_on(db: sqlite3.Connection) -> Tenants:
        return Tenants(TenantStore(db), Authority(tmp_path / "tls"), usage=UsageLedger(db))

    async def first_daemon() -> str:
        db = open_db(tmp_path)
        tenants = tenants_on(db)
        tenants.create("alice")
        runtime = make_runtime(tmp_path, db, vms=FakeVms().source())
        runtime.images.import_rootfs(io.BytesIO(make_tar([("dir", "bin")])), "base:1",
                                     tenant="alice")  # images are per tenant
        runtime.recover()
        meter = start_metering(runtime, tenants)
        record = runtime.create(ContainerConfig(image="base:1", image_id="", cmd=("serve",),
                                                tenant="alice", mem_mib=1024, cpus=1), "web")
        await runtime.start(record.id)
        meter.ledger.heartbeat(time.time_ns() + 5 * NS)  # it ran 5 s more, then a crash:
        return record.id  # no shutdown, no `die`

    cid = asyncio.run(first_daemon())

    async def second_daemon() -> list[UsageLine]:
        db = open_db(tmp_path)
        tenants = tenants_on(db)
        runtime = make_runtime(tmp_path, db, vms=FakeVms().source())
        runtime.recover()  # the VM died with the old daemon: exited
        start_metering(runtime, tenants)
        assert tenants.usage is not None and tenants.usage.open_runs() == []
        await runtime.start(cid)  # metered again from here
        assert tenants.usage.open_runs() == [cid]
        await runtime.shutdown()  # a clean stop ends the run
        assert tenants.usage.open_runs() == []
        # (the faked heartbeat is 5 s ahead of the clock: bill as of 10 s from now)
        return tenants.usage.report("alice", now_ns=time.time_ns() + 10 * NS)

    [line] = asyncio.run(second_daemon())
    assert (line.size, line.containers) == ("m1", 1)
    assert 5 <= line.seconds <= 8  # the first run up to its last heartbeat, then the second
