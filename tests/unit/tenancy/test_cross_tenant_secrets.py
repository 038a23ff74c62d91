"""Swarm secrets and configs are tenant objects (docs/services.md): tenant B naming A's by id,
short id or name on every `/secrets/{id}` and `/configs/{id}` route gets the answer of a
missing one, cannot list, use in a service or remove them; names are per tenant; the
`secrets` quota counts both kinds. A service's replicas get them: secrets in a read-only share
mounted on /run/secrets (never in the root filesystem), configs written at their target.

The real router, TLS listener, tenant tokens, runtime and orchestrator; a fake VM source."""

from __future__ import annotations

import base64
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steelcup.runtime.swarmfiles import SECRETS_TAG
from tests.unit.tenancy.conftest import Cloud
from tests.unit.tenancy.test_cross_tenant_services import running_tasks

MISSING = {"secret": "secret {ref} not found", "config": "config {ref} not found"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def service(name: str, secrets: Sequence[dict[str, Any]] = (),
            configs: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"Name": name, "TaskTemplate": {"ContainerSpec": {
        "Image": "base:1", "Args": ["serve"], "Secrets": list(secrets),
        "Configs": list(configs)}}, "Mode": {"Replicated": {"Replicas": 1}}}


def secret_ref(sid: str, name: str, **file: Any) -> dict[str, Any]:
    return {"SecretID": sid, "SecretName": name,
            "File": {"Name": name, "UID": "0", "GID": "0", "Mode": 0o444, **file}}


def test_another_tenants_secrets_and_configs_are_missing(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        made = {kind: alice.post(f"/{kind}s/create", json={
            "Name": "db-pass", "Labels": {"a": "1"}, "Data": b64(b"hunter2\n")})
            for kind in ("secret", "config")}
        assert all(m.status_code == 201 for m in made.values()), made
        ids = {kind: m.json()["ID"] for kind, m in made.items()}
        refs = {kind: [oid, oid[:12], "db-pass"] for kind, oid in ids.items()}
        tried = 0
        for method, pattern, kind in cloud.table:
            for ref in refs.get(kind, []):
                path = pattern.replace("{id}", ref)
                answer = bob.request(method, path, params={"version": 1},
                                     json={"Name": "db-pass", "Labels": {}}
                                     if method == "POST" else None)
                assert answer.status_code == 404, (method, path, answer.text)
                assert answer.json()["message"] == MISSING[kind].format(ref=ref), path
                tried += 1
        assert tried == 2 * 3 * 3  # inspect, update, remove of each kind
        assert bob.get("/secrets").json() == [] and bob.get("/configs").json() == []
        # bob cannot mount alice's secret into a service of his, by id or by name
        for ref in (ids["secret"], "db-pass"):
            used = bob.post("/services/create", json=service(
                "thief", [secret_ref(ref, "db-pass")]))
            assert used.status_code == 404 and "not found" in used.text, used.text
        assert bob.get("/services").json() == []
        # alice's are unchanged; names are per tenant
        assert alice.get(f"/secrets/{ids['secret']}").json()["Version"]["Index"] == 1
        own = bob.post("/secrets/create", json={"Name": "db-pass", "Data": b64(b"b\n")})
        assert own.status_code == 201, own.text
        assert [s["ID"] for s in bob.get("/secrets").json()] == [own.json()["ID"]]
        assert alice.get("/secrets/db-pass").json()["ID"] == ids["secret"]


def test_inspect_update_remove_as_dockerd(cloud: Cloud) -> None:
    with cloud.client("alice") as alice:
        sid = alice.post("/secrets/create", json={"Name": "s1", "Data": b64(b"x")}).json()["ID"]
        cid = alice.post("/configs/create", json={"Name": "c1", "Data": b64(b"conf")}
                         ).json()["ID"]
        shown = alice.get(f"/secrets/{sid}").json()
        assert "Data" not in shown["Spec"] and shown["Spec"]["Name"] == "s1"
        assert "Data" not in alice.get("/secrets").json()[0]["Spec"]
        assert alice.get(f"/configs/{cid}").json()["Spec"]["Data"] == b64(b"conf")
        again = alice.post("/secrets/create", json={"Name": "s1", "Data": b64(b"y")})
        assert again.status_code == 409, again.text
        bad = alice.post("/secrets/create", json={"Name": "../etc", "Data": b64(b"y")})
        assert bad.status_code == 400 and "invalid name" in bad.text
        empty = alice.post("/secrets/create", json={"Name": "e", "Data": ""})
        assert empty.status_code == 400 and "larger than 0" in empty.text
        # labels change; data does not (swarmkit's rule); a stale version conflicts
        changed = alice.post(f"/secrets/{sid}/update", params={"version": 1},
                             json={"Name": "s1", "Labels": {"k": "v"}})
        assert changed.status_code == 200, changed.text
        assert alice.get(f"/secrets/{sid}").json()["Spec"]["Labels"] == {"k": "v"}
        stale = alice.post(f"/secrets/{sid}/update", params={"version": 1},
                           json={"Name": "s1", "Labels": {}})
        assert stale.status_code == 409
        data = alice.post(f"/secrets/{sid}/update", params={"version": 2},
                          json={"Name": "s1", "Data": b64(b"other")})
        assert data.status_code == 400 and "only updates to Labels" in data.text
        filtered = alice.get("/secrets", params={"filters": '{"label": ["k=v"]}'}).json()
        assert [s["ID"] for s in filtered] == [sid]
        # in use: refused with dockerd's 400 message, removable once the service is gone
        svc = alice.post("/services/create", json=service("web", [secret_ref(sid, "s1")]))
        assert svc.status_code == 201, svc.text
        refused = alice.delete(f"/secrets/{sid}")
        assert refused.status_code == 400
        assert refused.json()["message"] == (
            "secret 's1' is in use by the following service: web")
        assert alice.delete(f"/services/{svc.json()['ID']}").status_code == 200
        assert alice.delete(f"/secrets/{sid}").status_code == 204
        assert alice.delete(f"/configs/{cid}").status_code == 204
        assert alice.get("/secrets").json() == [] and alice.get("/configs").json() == []


def test_secrets_quota_counts_both_kinds(cloud: Cloud) -> None:
    cloud.tenants.update("alice", ["secrets=2"])
    with cloud.client("alice") as alice:
        assert alice.post("/secrets/create", json={"Name": "a", "Data": b64(b"1")}
                          ).status_code == 201
        assert alice.post("/configs/create", json={"Name": "b", "Data": b64(b"1")}
                          ).status_code == 201
        over = alice.post("/secrets/create", json={"Name": "c", "Data": b64(b"1")})
        assert over.status_code == 403
        assert over.json()["message"] == (
            "quota exceeded: secrets 2 of 2 in use (tenant alice)")


def test_replicas_get_secrets_read_only_and_configs_at_their_target(
        cloud: Cloud, tmp_path: Path) -> None:
    with cloud.client("alice") as alice:
        sid = alice.post("/secrets/create", json={"Name": "db-pass",
                                                  "Data": b64(b"hunter2\n")}).json()["ID"]
        cid = alice.post("/configs/create", json={"Name": "app-conf",
                                                  "Data": b64(b"port=80\n")}).json()["ID"]
        spec = service("web", [secret_ref(sid, "db-pass", UID="1000", GID="100",
                                          Mode=0o400)],
                       [{"ConfigID": cid, "ConfigName": "app-conf",
                         "File": {"Name": "/etc/app/app.conf", "UID": "0", "GID": "0",
                                  "Mode": 0o640}}])
        made = alice.post("/services/create", json=spec)
        assert made.status_code == 201, made.text
        [task] = running_tasks(alice, "web")
        container = task["Status"]["ContainerStatus"]["ContainerID"]
        machine = next(m for m in cloud.vms.machines if m.request.name == container[:12])
        [share] = [s for s in machine.request.shares if s.tag == SECRETS_TAG]
        assert share.readonly
        secret = share.host_path / "db-pass"
        assert secret.read_bytes() == b"hunter2\n"
        info = secret.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o400, 1000, 100)
        mounted = [m for m in machine.mounts if SECRETS_TAG in str(m)]
        assert mounted and "/run/secrets" in str(mounted[0])
        rootfs = Path(machine.request.shares[0].host_path)
        conf = rootfs / "etc" / "app" / "app.conf"
        assert conf.read_bytes() == b"port=80\n"
        assert stat.S_IMODE(conf.stat().st_mode) == 0o640
        assert not (rootfs / "run" / "secrets" / "db-pass").exists()  # never in the root
        # the store keeps the data 0600 under the daemon's root
        stored = [p for p in (tmp_path / "objects").iterdir() if p.name == sid]
        assert stored and stat.S_IMODE(stored[0].stat().st_mode) == 0o600
        assert stat.S_IMODE(os.stat(tmp_path / "objects").st_mode) == 0o700
        # the run's copy goes with the run
        assert alice.delete(f"/services/{made.json()['ID']}").status_code == 200
        deadline = time.monotonic() + 10
        while share.host_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not share.host_path.exists()


def test_operator_sees_but_tenants_secret_is_not_an_operator_service_secret(
        cloud: Cloud) -> None:
    with cloud.client("alice") as alice:
        sid = alice.post("/secrets/create", json={"Name": "t", "Data": b64(b"1")}).json()["ID"]
    with cloud.operator() as op:
        assert op.post("/swarm/init", json={}).status_code == 200
        assert [s["ID"] for s in op.get("/secrets").json()] == [sid]
        used = op.post("/services/create", json=service("opweb", [secret_ref(sid, "t")]))
        assert used.status_code == 404, used.text


def test_tenant_rm_needs_force_with_secrets_and_force_removes_them(cloud: Cloud) -> None:
    with cloud.client("bob") as bob, cloud.operator() as operator:
        sid = bob.post("/secrets/create", json={"Name": "pw", "Data": b64(b"1")}).json()["ID"]
        assert bob.post("/services/create", json=service(
            "web", [secret_ref(sid, "pw")])).status_code == 201
        refused = operator.delete("/steelcup/tenants/bob")
        assert refused.status_code == 409 and "secret pw" in refused.json()["message"]
        gone = operator.delete("/steelcup/tenants/bob", params={"force": "1"})
        assert gone.status_code == 204, gone.text  # its service first, then its secret
        operator.post("/swarm/init", json={})
        assert operator.get("/secrets").json() == []
