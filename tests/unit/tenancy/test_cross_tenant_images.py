"""Images across tenants (docs/tenancy.md), over the real TLS listener and router: tenant B
naming A's image by id, short id, name:tag or digest gets exactly the missing-image answer on
every route the router scopes as an image (enumerated from its table), in queries and in a
container's Image too; B's lists, df and prune never show or touch it; B may have a same-named
image of his own; A's image is unchanged after all of it."""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import httpx

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
        refs = [image_id, image_id[7:], image_id[7:19], "app:1", f"app@{image_id}"]

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


def archive_configs(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest: list[dict[str, Any]] = json.loads(member.read())
    return [str(entry["Config"]).removeprefix("blobs/sha256/") for entry in manifest]


def docker_archive(content: bytes, tag: str) -> bytes:
    from tests.unit.image.test_store import docker_archive as build

    return build([make_tar([("file", "data", content)])], [tag])
