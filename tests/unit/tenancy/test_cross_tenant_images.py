"""Images across tenants (docs/tenancy.md), over the real TLS listener and router: tenant B
naming A's image by id, short id, name:tag or digest gets exactly the missing-image answer on
every route the router scopes as an image (enumerated from its table), in queries and in a
container's Image too; B's lists, df and prune never show or touch it; B may have a same-named
image of his own; A's image is unchanged after all of it."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.compat.test_registry import BUSYBOX, REGISTRY_BIN, start_registry, stop
from tests.unit.image.tarutil import make_tar
from tests.unit.tenancy.conftest import Cloud


def import_image(client: httpx.Client, name: str, tag: str, content: bytes) -> str:
    made = client.post("/images/create", params={"fromSrc": "-", "repo": name, "tag": tag},
                       content=make_tar([("file", "data", content)]))
    assert made.status_code == 200, made.text
    return str(made.json()["status"])


def assert_missing(answer: httpx.Response, ref: str, what: str) -> None:
    assert answer.status_code == 404, (what, answer.text)
    assert answer.json()["message"] == f"No such image: {ref}", what


def test_another_tenants_image_is_missing_everywhere(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        image_id = import_image(alice, "app", "1", b"alice's")
        before = alice.get("/images/app:1/json").json()
        # ids, name:tag, digest, and the bare repository (docker push NAME?tag=1)
        refs = [image_id, image_id[7:], image_id[7:19], "app:1", f"app@{image_id}", "app"]

        routes = [(m, p) for m, p, kind in cloud.table if kind == "image"]
        assert len(routes) >= 7, routes  # json, tag, rm, get, history, push, distribution
        tried = 0
        for method, pattern in routes:
            for ref in [*refs, "nothere:1"]:  # a missing image, for comparison
                path = pattern.replace("{name:path}", ref)
                answer = bob.request(method, path, params={"repo": "x", "tag": "1"},
                                     json={} if method == "POST" else None)
                assert_missing(answer, ref, f"{method} {path}")
                tried += 1
        assert tried == len(routes) * (len(refs) + 1)

        for ref in refs:  # references in queries and bodies
            assert_missing(bob.get("/images/get", params={"names": ref}), ref, "save")
            made = bob.post("/containers/create", json={"Image": ref, "Cmd": ["x"]})
            assert_missing(made, ref, "container create")
            listed = bob.get("/images/json", params={"filters": json.dumps({"since": [ref]})})
            assert_missing(listed, ref, "list since")

        # bob's list, df, info and prune never show or touch alice's image
        bob_ids = [i["Id"] for i in bob.get("/images/json", params={"all": 1}).json()]
        assert image_id not in bob_ids and len(bob_ids) == 1  # his own base:1
        df = bob.get("/system/df").json()
        assert [i["Id"] for i in df["Images"]] == bob_ids
        assert bob.get("/info").json()["Images"] == 1
        pruned = bob.post("/images/prune", params={"filters": json.dumps({"dangling": ["0"]})})
        assert pruned.status_code == 200, pruned.text
        assert pruned.json()["ImagesDeleted"] == [{"Untagged": "base:1"},
                                                  {"Deleted": bob_ids[0]}]
        assert bob.get("/images/json").json() == []

        # bob makes an app:1 of his own, tags and removes it; alice's stays hers
        own = import_image(bob, "app", "0", b"bob's")
        assert bob.post(f"/images/{own}/tag", params={"repo": "app", "tag": "1"}).status_code \
            == 201
        assert bob.get("/images/app:1/json").json()["Id"] == own
        saved = bob.get("/images/get", params={"names": "app:1"})
        assert saved.status_code == 200
        assert archive_configs(saved.content) == [own[7:]]
        assert bob.delete("/images/app:1").json() == [{"Untagged": "app:1"}]
        assert bob.get("/images/json").json()[0]["RepoTags"] == ["app:0"]

        after = alice.get("/images/app:1/json").json()
        assert after == before
        assert [i["Id"] for i in alice.get("/images/json").json()
                if i["RepoTags"] == ["app:1"]] == [image_id]
        history = alice.get(f"/images/{image_id[7:19]}/history")
        assert history.status_code == 200 and history.json()[0]["Id"] == image_id


def test_a_shared_image_survives_the_other_tenants_rmi(cloud: Cloud) -> None:
    archive = docker_archive(b"same bytes", "shared:1")
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        for client in (alice, bob):
            assert "Loaded image: shared:1" in client.post("/images/load", content=archive).text
        image_id = alice.get("/images/shared:1/json").json()["Id"]
        assert bob.get("/images/shared:1/json").json()["Id"] == image_id  # same content
        removed = bob.delete(f"/images/{image_id}")
        assert removed.json() == [{"Untagged": "shared:1"}, {"Deleted": image_id}]
        assert_missing(bob.get(f"/images/{image_id}/json"), image_id, "after rmi")
        # alice's is whole: it saves (every blob is there) and runs
        saved = alice.get("/images/get", params={"names": "shared:1"})
        assert saved.status_code == 200 and archive_configs(saved.content)
        made = alice.post("/containers/create", json={"Image": "shared:1", "Cmd": ["x"]})
        assert made.status_code == 201, made.text


@pytest.mark.skipif(not Path(REGISTRY_BIN).exists() or shutil.which("htpasswd") is None,
                    reason="docker-registry and htpasswd (apache2-utils) not installed")
@pytest.mark.skipif(not BUSYBOX.exists(), reason="run `make images` first")
@pytest.mark.skipif(os.geteuid() != 0, reason="layer extraction needs root (whiteouts)")
def test_a_pull_goes_to_the_registry_with_the_callers_credentials(
        cloud: Cloud, tmp_path: Path) -> None:
    """A real registry with TLS and a password: bob knows the digest of alice's private image,
    and every blob is on the host, yet his pull is refused and he gets nothing; alice's saved
    login is hers alone."""
    htpasswd = tmp_path / "htpasswd"
    subprocess.run(["htpasswd", "-Bbc", str(htpasswd), "alice", "s3cret"], check=True,
                   capture_output=True)
    reg = start_registry(tmp_path, tls=True, htpasswd=htpasswd)
    try:
        ref = f"{reg.host}/private/app"
        with cloud.client("alice") as alice, cloud.client("bob") as bob:
            loaded = alice.post("/images/load", content=BUSYBOX.read_bytes())
            image_id = loaded_id(alice, loaded.text)
            assert alice.post(f"/images/{image_id}/tag",
                              params={"repo": ref, "tag": "1"}).status_code == 201
            pushed = alice.post(f"/images/{ref}:1/push", headers=auth_header("alice", "s3cret"))
            digest = next(m["aux"]["Digest"] for m in lines(pushed.text) if "aux" in m)

            for who in ({}, auth_header("alice", "guess")):
                pulled = bob.post("/images/create", params={"fromImage": ref, "tag": digest},
                                  headers=who)
                errors = [m["error"] for m in lines(pulled.text) if "error" in m]
                assert len(errors) == 1 and "unauthorized" in errors[0], errors
            assert bob.get("/images/json").json()[0]["RepoTags"] == ["base:1"]  # only his
            assert_missing(bob.get(f"/images/{ref}@{digest}/json"), f"{ref}@{digest}", "pull")

            # alice's saved login serves her pulls, never bob's
            login = alice.post("/auth", json={"username": "alice", "password": "s3cret",
                                              "serveraddress": reg.host})
            assert login.status_code == 200, login.text
            mine = alice.post("/images/create", params={"fromImage": ref, "tag": digest})
            assert not [m for m in lines(mine.text) if "error" in m], mine.text
            refused = bob.post("/images/create", params={"fromImage": ref, "tag": digest})
            assert "unauthorized" in refused.text, refused.text
            assert image_id not in [i["Id"] for i in bob.get("/images/json").json()]
            # with the password, bob may: the registry let him read it
            allowed = bob.post("/images/create", params={"fromImage": ref, "tag": digest},
                               headers=auth_header("alice", "s3cret"))
            assert not [m for m in lines(allowed.text) if "error" in m], allowed.text
            assert bob.get(f"/images/{ref}@{digest}/json").json()["Id"] == image_id
    finally:
        stop(reg)


def auth_header(user: str, password: str) -> dict[str, str]:
    doc = json.dumps({"username": user, "password": password}).encode()
    return {"X-Registry-Auth": base64.urlsafe_b64encode(doc).decode()}


def lines(stream: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.splitlines() if line.strip()]


def loaded_id(client: httpx.Client, stream: str) -> str:
    name = next(m["stream"] for m in lines(stream) if "stream" in m).split(": ", 1)[1].strip()
    return str(client.get(f"/images/{name}/json").json()["Id"])


def archive_configs(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest: list[dict[str, Any]] = json.loads(member.read())
    return [str(entry["Config"]).removeprefix("blobs/sha256/") for entry in manifest]


def docker_archive(content: bytes, tag: str) -> bytes:
    from tests.unit.image.test_store import docker_archive as build

    return build([make_tar([("file", "data", content)])], [tag])
