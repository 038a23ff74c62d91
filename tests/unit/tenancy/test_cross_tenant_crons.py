"""Crons across tenants (docs/tenancy.md, docs/cron.md), over the real TLS listener: every
`/crons/{name}` route of the router's own table, called by bob with alice's cron name (plain
and as alice/NAME), answers exactly as for a missing cron; lists are bob's; both may have a
cron of the same name; the crons quota; a cron's job containers are its tenant's and count
toward its containers quota; `tenant rm` names a tenant's crons."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from tests.unit.tenancy.conftest import Cloud

PARAM = "{name}"
JOB = {"Image": "base:1", "Cmd": ["x"]}


def _ok(answer: httpx.Response, status: int = 200) -> Any:
    assert answer.status_code == status, answer.text
    return answer.json() if answer.content else None


def _cron(name: str, schedule: str = "@every 1h", **extra: Any) -> dict[str, Any]:
    return {"Name": name, "Schedule": schedule, "Container": JOB, **extra}


def test_another_tenants_cron_is_missing_on_every_route(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        made = _ok(alice.post("/crons", json=_cron("nightly", Suspended=True)), 201)
        assert made["Name"] == "nightly" and made["Suspended"] and made["NextRun"] == ""
        before = _ok(alice.get("/crons/nightly"))

        tried = 0
        for method, pattern, kind in cloud.table:
            if kind != "cron":
                continue
            for ref in ("nightly", "alice/nightly"):
                assert pattern.count(PARAM) == 1, pattern
                path = pattern.replace(PARAM, quote(ref, safe=""))  # as the CLI sends it
                answer = bob.request(method, path, params={"force": "1"})
                assert answer.status_code == 404, (method, path, answer.text)
                assert answer.json()["message"] == f"no such cron: {ref}", path
                tried += 1
        assert tried == 12  # inspect, rm, run, suspend, resume, history: 6 routes x 2 refs

        assert _ok(bob.get("/crons")) == []
        assert _ok(alice.get("/crons/nightly")) == before
        assert _ok(alice.get("/crons/nightly/history")) == []
        assert [c["Id"] for c in _ok(alice.get("/containers/json", params={"all": "1"}))] == []
        # bob's own cron of the same name is his, and alice's stays hers
        mine = _ok(bob.post("/crons", json=_cron("nightly", "@every 2h")), 201)
        assert mine["Schedule"] == "@every 2h"
        assert _ok(alice.get("/crons/nightly"))["Schedule"] == "@every 1h"
        assert [c["Schedule"] for c in _ok(bob.get("/crons"))] == ["@every 2h"]
        assert [(e["Type"], e["Action"]) for e in cloud.crons.events.history("bob")
                if e["Type"] == "cron"] == [("cron", "create")]


def test_the_operator_sees_every_tenants_crons_by_key(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.client("bob") as bob, \
            cloud.operator() as operator:
        _ok(alice.post("/crons", json=_cron("backup")), 201)
        _ok(bob.post("/crons", json=_cron("backup")), 201)
        assert sorted(c["Tenant"] for c in _ok(operator.get("/crons"))) == ["alice", "bob"]
        ambiguous = operator.get("/crons/backup")
        assert ambiguous.status_code == 400 and "alice, bob" in ambiguous.json()["message"]
        assert _ok(operator.delete("/crons/bob%2Fbackup"), 204) is None
        assert _ok(operator.get("/crons/backup"))["Tenant"] == "alice"
        assert _ok(bob.get("/crons")) == []


def test_crons_quota_and_job_containers_are_the_tenants(cloud: Cloud) -> None:
    cloud.tenants.update("alice", ["crons=1", "containers=1"])
    with cloud.client("alice") as alice, cloud.client("bob") as bob, \
            cloud.operator() as operator:
        _ok(alice.post("/crons", json=_cron("one")), 201)
        refused = alice.post("/crons", json=_cron("two"))
        assert refused.status_code == 403
        assert refused.json()["message"] == "quota exceeded: crons 1 of 1 in use (tenant alice)"
        run = _ok(alice.post("/crons/one/run"), 201)
        assert run["Status"] == "running" and run["Manual"]
        [job] = _ok(alice.get("/containers/json", params={"all": "1"}))
        assert job["Id"] == run["ContainerId"]
        assert job["Labels"]["sh.steelcup.cron"] == "alice/one"
        assert _ok(bob.get("/containers/json", params={"all": "1"})) == []
        # the job container holds alice's only container: the next run is refused by quota
        over = alice.post("/crons/one/run")
        assert over.status_code == 403, over.text
        assert "quota exceeded: containers 1 of 1" in over.json()["message"]
        history = _ok(alice.get("/crons/one/history"))
        assert [h["Status"] for h in history] == ["running", "failed"]
        assert "quota exceeded" in history[1]["Error"]
        assert [h["Status"] for h in _ok(alice.get("/crons/one/history",
                                                   params={"tail": "1"}))] == ["failed"]
        refused_rm = operator.delete("/steelcup/tenants/alice")
        assert refused_rm.status_code == 409
        assert "cron one" in refused_rm.json()["message"]
        _ok(alice.delete("/crons/one", params={"force": "1"}), 204)
        assert _ok(alice.get("/crons")) == []


def test_bad_crons_are_refused_with_what_is_wrong(cloud: Cloud) -> None:
    with cloud.client("alice") as alice:
        for body, words in [
            (_cron("x", "every day"), "invalid schedule"),
            (_cron("x", "@every 0s"), "at least"),
            (_cron("x", Timezone="Nowhere/Land"), "unknown time zone"),
            (_cron("x", Concurrency="sometimes"), "allow, forbid, replace"),
            (_cron("-x"), "invalid cron name"),
            ({"Name": "x", "Schedule": "@hourly"}, "Container"),
            ({"Name": "x", "Schedule": "@hourly", "Container": {"Cmd": ["x"]}},
             "Config cannot be empty"),
            (_cron("x", StartingDeadlineSeconds=-1), "must not be negative"),
            (_cron("x", StartingDeadlineSeconds="soon"), "must be a number"),
            (_cron("x", HistoryLimit={"Succeeded": "many"}), "Succeeded must be an integer"),
        ]:
            answer = alice.post("/crons", json=body)
            assert answer.status_code == 400, (body, answer.text)
            assert words in answer.json()["message"], (body, answer.text)
        assert _ok(alice.get("/crons")) == []


def _snapshot_mount(snapshot: str) -> dict[str, Any]:
    return {"Type": "volume", "Target": "/data", "VolumeOptions": {
        "DriverConfig": {"Name": "local", "Options": {"snapshot": snapshot}}}}


def test_a_cron_whose_job_mounts_what_its_tenant_may_not_is_refused_at_create(
        cloud: Cloud) -> None:
    """The create answers what `run` of the same container answers (the runtime's own check
    of a create's mounts), and no cron is made: not a failure at its first run."""
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        _ok(alice.post("/volumes/create", json={"Name": "private"}), 201)
        _ok(alice.post("/steelcup/snapshots", json={"Volume": "private", "Name": "snap"}), 201)
        forbidden = [
            {**JOB, "HostConfig": {"Binds": ["/etc:/host-etc"]}},  # a host path
            {**JOB, "HostConfig": {"Mounts": [{"Type": "bind", "Source": "/root",
                                               "Target": "/r"}]}},
            {**JOB, "HostConfig": {"Mounts": [_snapshot_mount("snap")]}},  # alice's snapshot
            {**JOB, "HostConfig": {"Mounts": [_snapshot_mount("alice/snap")]}},
            {**JOB, "HostConfig": {"Binds": ["data:/d:rw"], "Mounts": [{
                "Type": "volume", "Target": "/e", "VolumeOptions": {"DriverConfig": {
                    "Options": {"device": "/dev/sda"}}}}]}},  # a device: the host's
        ]
        for i, job in enumerate(forbidden):
            run = bob.post("/containers/create", params={"name": f"probe{i}"}, json=job)
            cron = bob.post("/crons", json={"Name": f"c{i}", "Schedule": "@every 1h",
                                            "Container": job})
            assert run.status_code >= 400, (job, run.text)
            assert (cron.status_code, cron.json()["message"]) == (
                run.status_code, run.json()["message"]), job
        assert _ok(bob.get("/crons")) == []
        # alice's own snapshot is hers to use, in a cron as in a run
        _ok(alice.post("/crons", json={"Name": "restore", "Schedule": "@every 1h",
                                       "Container": {**JOB, "HostConfig": {
                                           "Mounts": [_snapshot_mount("snap")]}}}), 201)
