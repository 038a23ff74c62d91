"""The registry client's bearer-token flow and verification, against an in-process fake registry
(httpx.MockTransport). The real-registry tier is tests/compat/test_registry.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sqlite3
import tarfile
from pathlib import Path

import httpx
import pytest

from steelcup.errors import ImageError
from steelcup.image import registry
from steelcup.image.auth import Credentials
from steelcup.image.manifest import DOCKER_LAYER_GZIP, Descriptor, build_manifest
from steelcup.image.store import ImageStore


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    return buf.getvalue()


class FakeRegistry:
    """Bearer auth like Docker Hub: /v2/ answers 401 with a challenge; /token issues tokens."""

    def __init__(self, corrupt_layer: bool = False) -> None:
        import gzip

        self.layer = gzip.compress(_layer(), mtime=0)
        diff_id = _sha(_layer())
        self.config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                "config": {"Cmd": ["sh"]},
            }
        ).encode()
        self.manifest = build_manifest(
            _sha(self.config),
            len(self.config),
            [Descriptor(DOCKER_LAYER_GZIP, _sha(self.layer), len(self.layer))],
        )
        self.corrupt_layer = corrupt_layer
        self.token_requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.url.host == "auth.example":
            self.token_requests.append(request)
            expected = "Basic " + base64.b64encode(b"alice:pw").decode()
            if request.headers.get("authorization") != expected:
                return httpx.Response(401)
            return httpx.Response(200, json={"token": "T0K"})
        if request.headers.get("authorization") != "Bearer T0K":
            challenge = (
                'Bearer realm="https://auth.example/token",service="reg.example",'
                'scope="repository:ns/app:pull"'
            )
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        if path == "/v2/":
            return httpx.Response(200)
        if path == "/v2/ns/app/manifests/1.0":
            return httpx.Response(
                200,
                content=self.manifest,
                headers={"Content-Type": json.loads(self.manifest)["mediaType"]},
            )
        blobs = {_sha(self.config): self.config, _sha(self.layer): self.layer}
        for digest, data in blobs.items():
            if path == f"/v2/ns/app/blobs/{digest}":
                if self.corrupt_layer and data is self.layer:
                    data = data[:-1] + bytes([data[-1] ^ 1])
                return httpx.Response(200, content=data)
        return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN", "message": "x"}]})


def _store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "root", sqlite3.connect(tmp_path / "db", check_same_thread=False))


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="layer extraction as root")
def test_bearer_pull(tmp_path: Path) -> None:
    fake = FakeRegistry()
    store = _store(tmp_path)
    result = registry.pull(
        "reg.example/ns/app:1.0",
        store,
        credentials=Credentials("alice", "pw"),
        transport=httpx.MockTransport(fake),
    )
    assert result.image.id == _sha(fake.config)
    assert result.digest == _sha(fake.manifest)
    query = fake.token_requests[-1].url.params
    assert query["service"] == "reg.example"
    assert query["scope"] == "repository:ns/app:pull"
    layer_dir = store.layer_dirs(result.image)[0]
    assert (layer_dir / "hello.txt").read_bytes() == b"hello"


def test_bad_password_is_auth_error(tmp_path: Path) -> None:
    with pytest.raises(registry.RegistryAuthError, match="incorrect username or password"):
        registry.pull(
            "reg.example/ns/app:1.0",
            _store(tmp_path),
            credentials=Credentials("alice", "nope"),
            transport=httpx.MockTransport(FakeRegistry()),
        )


def test_corrupt_blob_never_committed(tmp_path: Path) -> None:
    store = _store(tmp_path)
    fake = FakeRegistry(corrupt_layer=True)
    with pytest.raises(ImageError, match="digest mismatch"):
        registry.pull(
            "reg.example/ns/app:1.0",
            store,
            credentials=Credentials("alice", "pw"),
            transport=httpx.MockTransport(fake),
        )
    assert not store.has_blob(_sha(fake.layer))
    assert list((tmp_path / "root" / "tmp").iterdir()) == []
