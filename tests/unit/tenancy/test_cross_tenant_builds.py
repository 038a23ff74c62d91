"""Builds across tenants (docs/tenancy.md, docs/build.md), over the real TLS listener and
router: bob's Dockerfile naming alice's built image or one of her build's intermediate images,
as a FROM base or a COPY --from source, gets exactly what a missing image gets; bob building
alice's very Dockerfile hits none of her cache; his builder prune leaves hers; and his ADD
of a URL may not reach the host's loopback."""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import httpx

from tests.unit.image.tarutil import make_tar
from tests.unit.tenancy.conftest import Cloud

# metadata steps only: each makes an intermediate image with no VM (the RUN side of the
# same rule is tests/compat/test_build.py, with real VMs); from scratch, so both tenants'
# steps have the same parents and keys: only the tenant keeps them apart
DOCKERFILE = "FROM scratch\nENV STEP=one\nLABEL made.by=owner\nCMD [\"go\"]\n"
NEVER = "sha256:" + "ab" * 32  # an id no one has, for comparison


def context(dockerfile: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile.encode())
        tar.addfile(info, io.BytesIO(dockerfile.encode()))
    return buf.getvalue()


def build(client: httpx.Client, dockerfile: str, **params: str) -> tuple[list[dict[str, Any]],
                                                                          str]:
    """POST /build: the stream's messages and the error it ended with ("" if none)."""
    answer = client.post("/build", params=params, content=context(dockerfile),
                         headers={"Content-Type": "application/x-tar"}, timeout=60)
    if answer.status_code != 200:
        return [], str(answer.json()["message"])
    messages = [json.loads(line) for line in answer.text.splitlines() if line.strip()]
    errors = [m["error"] for m in messages if "error" in m]
    return messages, errors[0] if errors else ""


def stream(messages: list[dict[str, Any]]) -> str:
    return "".join(str(m.get("stream", "")) for m in messages)


def load_base(client: httpx.Client) -> None:
    made = client.post("/images/create", params={"fromSrc": "-", "repo": "base", "tag": "1"},
                       content=make_tar([("file", "data", b"base")]))
    assert made.status_code == 200, made.text


def test_a_tenants_build_sees_only_its_own_images_and_cache(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.client("bob") as bob:
        load_base(alice)
        load_base(bob)
        messages, error = build(alice, DOCKERFILE, t="secret-app:1")
        assert error == "", stream(messages)
        final = next(m["aux"]["ID"] for m in messages if "aux" in m)
        listed = alice.get("/images/json", params={"all": "1"}).json()
        steps = [i["Id"] for i in listed if not i["RepoTags"] and i["Id"] != final]
        assert len(steps) >= 2, listed  # ENV's and LABEL's images: her cache holds them

        def missing_answer(ref: str, dockerfile: str) -> str:
            _, error = build(bob, dockerfile.replace("REF", ref))
            return error.replace(ref, "REF")

        for template in ("FROM REF\n", "FROM base:1\nCOPY --from=REF /data /stolen\n"):
            expected = missing_answer(NEVER, template)
            assert "No such image: REF" in expected, expected
            for ref in (final, *steps):
                assert missing_answer(ref, template) == expected, (template, ref)

        # alice's Dockerfile built by bob: every step is his own, none a hit of hers
        messages, error = build(bob, DOCKERFILE, t="mine:1")
        assert error == "" and "Using cache" not in stream(messages), stream(messages)
        again, _ = build(bob, DOCKERFILE, t="mine:1")
        assert stream(again).count("Using cache") == 3  # his own cache works
        mine = next(m["aux"]["ID"] for m in messages if "aux" in m)
        assert mine not in [final, *steps]

        # bob's prune empties his cache only; her rebuild is still fully cached
        pruned = bob.post("/build/prune")
        assert pruned.status_code == 200 and not set(pruned.json()["CachesDeleted"]) & \
            {final, *steps}, pruned.text
        messages, _ = build(alice, DOCKERFILE, t="secret-app:1")
        assert stream(messages).count("Using cache") == 3, stream(messages)
        assert {i["Id"] for i in alice.get("/images/json", params={"all": "1"}).json()} \
            >= {final, *steps}
        after = {i["Id"] for i in bob.get("/images/json", params={"all": "1"}).json()}
        assert not after & {final, *steps}


def test_a_tenants_add_of_a_url_cannot_reach_the_hosts_loopback(cloud: Cloud) -> None:
    with cloud.client("bob") as bob:
        load_base(bob)
        for url in ("http://127.0.0.1:2375/info", "http://localhost/x",
                    "http://169.254.169.254/latest/meta-data/", "http://[::1]:80/x"):
            _, error = build(bob, f"FROM base:1\nADD {url} /x\n")
            assert "which a tenant's build may not reach" in error, (url, error)
