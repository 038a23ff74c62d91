"""Checkpoints, suspend and resume against another tenant (docs/tenancy.md, docs/checkpoints.md):
tenant B names A's container (id, short id, name) on every checkpoint, suspend and resume route
and on `start --checkpoint`, while A's container has a real checkpoint and A's other container
is suspended, and gets exactly the answer of a missing container; B's own container cannot be
started from A's checkpoint by its name, by a path to it, or with a checkpoint directory; A's
checkpoint, its suspended container and its running one are as they were. Hostile names (a
path, NUL, a newline, too long) are a 400 at create and find nothing elsewhere.

The real router, TLS listener and runtime; a fake VM source (tests/vm/test_wake_attacks.py
performs the network attacks on real VMs)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.unit.tenancy.conftest import Cloud

CHECKPOINTABLE = {"Image": "base:1", "Cmd": ["serve"],
                  "HostConfig": {"SteelcupCheckpointable": True}}


def _run(client: httpx.Client, name: str) -> str:
    made = client.post("/containers/create", params={"name": name}, json=CHECKPOINTABLE)
    assert made.status_code == 201, made.text
    cid = str(made.json()["Id"])
    started = client.post(f"/containers/{cid}/start")
    assert started.status_code == 204, started.text
    return cid


def _missing(answer: httpx.Response, ref: str) -> None:
    assert answer.status_code == 404, (answer.request.url, answer.text)
    assert answer.json()["message"] == f"No such container: {ref}", answer.request.url


def _state(client: httpx.Client, cid: str) -> dict[str, Any]:
    state: dict[str, Any] = client.get(f"/containers/{cid}/json").json()["State"]
    return state


def test_another_tenants_checkpoints_and_suspends_are_missing(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        web = _run(alice, "web")
        made = alice.post(f"/containers/{web}/checkpoints", json={"CheckpointID": "cp1"})
        assert made.status_code == 201, made.text
        sleeper = _run(alice, "sleeper")
        assert alice.post(f"/containers/{sleeper}/suspend").status_code == 204
        vms_before = len(cloud.vms.machines)

        calls = 0
        for cid, name in ((web, "web"), (sleeper, "sleeper")):
            for ref in (cid, cid[:12], name):
                for method, path, body in (
                        ("GET", "/checkpoints", None),
                        ("POST", "/checkpoints", {"CheckpointID": "mine"}),
                        ("POST", "/checkpoints", {"CheckpointID": "cp1", "Exit": True}),
                        ("DELETE", "/checkpoints/cp1", None),
                        ("POST", "/start?checkpoint=cp1", None),
                        ("POST", "/start", None),
                        ("POST", "/suspend", None),
                        ("POST", "/resume", None)):
                    _missing(bob.request(method, f"/containers/{ref}{path}", json=body), ref)
                    calls += 1
        assert calls == 48

        # B's own container cannot run on from A's checkpoint: not by its name (checkpoints
        # are their container's), not by a path to it, not from a checkpoint directory.
        own = _run(bob, "own")
        assert bob.post(f"/containers/{own}/checkpoints",  # it exits: a start would run
                        json={"CheckpointID": "mine", "Exit": True}).status_code == 201
        vms_before += 1
        for name in ("cp1", f"../../{web}/checkpoints/cp1", f"{web}/checkpoints/cp1"):
            answer = bob.post(f"/containers/{own}/start", params={"checkpoint": name})
            assert answer.status_code == 404, (name, answer.text)
            # the answer of a name B's container has not: it tells nothing of A's
            assert answer.json()["message"] in (f"no checkpoint {name} for this container",
                                                f"no checkpoint {name!r} for this container")
        theirs = f"/var/lib/steelcup/containers/{web}/checkpoints"  # as B would guess it
        for query in ({"checkpoint-dir": theirs}, {"checkpoint": "cp1", "checkpoint-dir": theirs},
                      {"checkpoint": "cp1", "dir": theirs}):
            answer = bob.post(f"/containers/{own}/start", params=query)
            assert answer.status_code == 400 and "directory" in answer.json()["message"]
        made_with_dir = bob.post(f"/containers/{own}/checkpoints",
                                 json={"CheckpointID": "x2", "CheckpointDir": "/tmp"})
        assert made_with_dir.status_code == 400
        assert [c["Name"] for c in bob.get(f"/containers/{own}/checkpoints").json()] == ["mine"]

        # A's objects are as they were: its checkpoint, its sleeper still asleep, not woken.
        assert [c["Name"] for c in alice.get(f"/containers/{web}/checkpoints").json()] == [
            "cp1"]
        assert _state(alice, web)["Running"] is True
        assert _state(alice, sleeper)["SteelcupSuspended"] is True
        assert len(cloud.vms.machines) == vms_before  # no VM restored, resumed or started


def test_hostile_checkpoint_names_are_refused_and_find_nothing(cloud: Cloud) -> None:
    with cloud.client("alice") as alice:
        cid = _run(alice, "web")
        bad = ["../x", "../../etc", "/abs", "/tmp/x", "a/b", "..", ".hidden", "a\x00b",
               "cp1\n", "cp1\nx", " cp1", "x" * 129, "x" * 5000]
        for name in bad:
            answer = alice.post(f"/containers/{cid}/checkpoints", json={"CheckpointID": name})
            assert answer.status_code == 400, (name, answer.text)
            assert "invalid checkpoint name" in answer.json()["message"], answer.text
        assert alice.get(f"/containers/{cid}/checkpoints").json() == []
        assert _state(alice, cid)["Running"] is True  # a refused name saved nothing
        # Elsewhere a name no checkpoint can have is simply not found, and reaches no path.
        for name in ("..%2F..%2Fetc", "%2Fabs", "x" * 300, "cp1%0A"):
            removed = alice.delete(f"/containers/{cid}/checkpoints/{name}")
            assert removed.status_code == 404, (name, removed.text)
        for name in ["../x", "/abs", "a\x00b", "cp1\n", "x" * 5000]:
            started = alice.post(f"/containers/{cid}/start", params={"checkpoint": name})
            assert started.status_code == 404, (name, started.text)
