"""ImageStore: import, docker-archive and OCI-layout load, lookup, tag, remove, blob integrity."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

import pytest

from steelcup.errors import Conflict, ImageError, InvalidArgument, NotFound
from steelcup.image.config import ImageConfig
from steelcup.image.layers import LayerLimits
from steelcup.image.store import Image, ImageStore, LoadedImage

from .tarutil import make_tar

REPO = Path(__file__).resolve().parents[3]


def outer_tar(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def config_for(layers: list[bytes], **inner: Any) -> bytes:
    doc = {"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
           "config": inner, "rootfs": {"type": "layers",
                                       "diff_ids": ["sha256:" + sha(layer) for layer in layers]}}
    return json.dumps(doc).encode()


def docker_archive(layers: list[bytes], tags: list[str], gz: bool = False, **inner: Any) -> bytes:
    cfg = config_for(layers, **inner)
    files = {}
    paths = []
    for layer in layers:
        paths.append(f"{sha(layer)}/layer.tar")
        files[paths[-1]] = gzip.compress(layer, mtime=0) if gz else layer
    files[f"{sha(cfg)}.json"] = cfg
    files["manifest.json"] = json.dumps(
        [{"Config": f"{sha(cfg)}.json", "RepoTags": tags, "Layers": paths}]).encode()
    return outer_tar(files)


def oci_archive(layers: list[bytes], ref_name: str, wrap_index: bool = False) -> bytes:
    cfg = config_for(layers, Cmd=["true"])
    blobs = {sha(cfg): cfg}
    layer_descs = []
    for layer in layers:
        comp = gzip.compress(layer, mtime=0)
        blobs[sha(comp)] = comp
        layer_descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            "digest": "sha256:" + sha(comp), "size": len(comp)})
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": "sha256:" + sha(cfg), "size": len(cfg)},
                           "layers": layer_descs}).encode()
    blobs[sha(manifest)] = manifest
    desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + sha(manifest), "size": len(manifest),
            "platform": {"os": "linux", "architecture": "amd64"}}
    if wrap_index:
        inner = json.dumps({"schemaVersion": 2, "manifests": [
            dict(desc, platform={"os": "linux", "architecture": "s390x"},
                 digest="sha256:" + "0" * 64), desc]}).encode()
        blobs[sha(inner)] = inner
        desc = {"mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": "sha256:" + sha(inner), "size": len(inner)}
    desc["annotations"] = {"org.opencontainers.image.ref.name": ref_name}
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
             "index.json": json.dumps({"schemaVersion": 2, "manifests": [desc]}).encode()}
    files.update({f"blobs/sha256/{k}": v for k, v in blobs.items()})
    return outer_tar(files)


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "root", sqlite3.connect(tmp_path / "state.db"))


LAYER1 = make_tar([("dir", "etc"), ("file", "etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
                   ("file", "etc/os", b"one")])
LAYER2 = make_tar([("file", "etc/os", b"two"), ("file", "app", b"#!/bin/sh\n", 0o755)])


def test_import_rootfs(store: ImageStore) -> None:
    changes = ImageConfig(cmd=("sh",), env=("A=1",))
    img = store.import_rootfs(io.BytesIO(gzip.compress(LAYER1, mtime=0)), "myimg:v1", changes)
    assert img.id.startswith("sha256:") and len(img.id) == 71
    assert img.id == "sha256:" + sha(img.raw_config)
    assert img.repo_tags == ("myimg:v1",)
    assert img.config.cmd == ("sh",) and img.config.env == ("A=1",)
    assert img.diff_ids == ("sha256:" + sha(LAYER1),)
    (layer,) = store.layer_dirs(img)
    assert (layer / "etc/os").read_bytes() == b"one"
    assert (store.root / "blobs/sha256" / sha(gzip.compress(LAYER1, mtime=0))).exists()
    assert store.get("myimg:v1") == img
    assert store.get(img.id[7:19]) == img
    untagged = store.import_rootfs(io.BytesIO(LAYER1), None)
    assert untagged.repo_tags == ()
    assert store.layer_dirs(untagged) == [layer]  # layer shared, unpacked once


def _images(loaded: list[LoadedImage]) -> list[Image]:
    return [entry.image for entry in loaded]


def test_load_docker_archive_multi_layer(store: ImageStore) -> None:
    data = docker_archive([LAYER1, LAYER2], ["busybox:latest", "docker.io/library/x:1"],
                          Cmd=["sh"], Env=["PATH=/bin"])
    (img,) = _images(store.load(io.BytesIO(data)))
    assert img.repo_tags == ("busybox:latest", "x:1")
    assert img.config.cmd == ("sh",)
    dirs = store.layer_dirs(img)
    assert [d.name for d in dirs] == [sha(LAYER1), sha(LAYER2)]
    assert (dirs[1] / "etc/os").read_bytes() == b"two"
    assert img.size_bytes == len(LAYER1) + len(LAYER2)
    assert store.get("docker.io/library/busybox") == img
    assert store.get("busybox") == img
    # what docker load reports: the archive's tags, not others the image has since
    store.tag("busybox", "mine:1")
    (loaded,) = store.load(io.BytesIO(data))
    assert loaded.tags == ("busybox:latest", "x:1") and "mine:1" in loaded.image.repo_tags
    # loading again is idempotent
    (again,) = _images(store.load(io.BytesIO(data)))
    assert again.id == img.id and len(store.list()) == 1
    # no stray files: manifest.json blob garbage-collected, tmp empty
    assert list((store.root / "tmp").iterdir()) == []
    blobs = {p.name for p in (store.root / "blobs/sha256").iterdir()}
    assert blobs == {sha(LAYER1), sha(LAYER2), img.id[7:]}


def test_load_gzip_layers_and_gzip_archive(store: ImageStore) -> None:
    data = gzip.compress(docker_archive([LAYER1], ["gz:1"], gz=True))
    (img,) = _images(store.load(io.BytesIO(data)))
    assert (store.layer_dirs(img)[0] / "etc/os").read_bytes() == b"one"


@pytest.mark.parametrize("wrap", [False, True])
def test_load_oci_layout(store: ImageStore, wrap: bool) -> None:
    data = oci_archive([LAYER1, LAYER2], "127.0.0.1:5000/ns/app:1.0", wrap_index=wrap)
    (img,) = _images(store.load(io.BytesIO(data)))
    assert img.repo_tags == ("127.0.0.1:5000/ns/app:1.0",)
    assert img.config.cmd == ("true",)
    assert len(store.layer_dirs(img)) == 2
    assert img.repo_digests and img.repo_digests[0].startswith("127.0.0.1:5000/ns/app@sha256:")
    assert store.get(img.repo_digests[0]) == img


def test_load_rejects_bad_archives(store: ImageStore) -> None:
    with pytest.raises(ImageError, match="neither manifest.json nor index.json"):
        store.load(io.BytesIO(outer_tar({"x": b"y"})))
    with pytest.raises(ImageError):
        store.load(io.BytesIO(b"this is not a tar" * 100))
    bad = docker_archive([LAYER1], ["bad:1"])
    # diff id mismatch: swap the layer content
    evil = bad.replace(b"etc/os", b"etc/OS")
    with pytest.raises(ImageError):
        store.load(io.BytesIO(evil))
    missing = outer_tar({"manifest.json": json.dumps(
        [{"Config": "c.json", "RepoTags": [], "Layers": []}]).encode()})
    with pytest.raises(ImageError, match="missing"):
        store.load(io.BytesIO(missing))
    assert store.list() == []
    assert list((store.root / "layers").iterdir()) == []
    assert list((store.root / "tmp").iterdir()) == []


def test_load_refuses_deeply_nested_manifest_and_config(store: ImageStore) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ImageError, match="manifest.json: nested deeper than 100 levels"):
        store.load(io.BytesIO(outer_tar({"manifest.json": deep})))
    cfg = b'{"rootfs": ' + deep + b"}"
    manifest = json.dumps([{"Config": "c.json", "RepoTags": [], "Layers": []}]).encode()
    with pytest.raises(ImageError, match="c.json: nested deeper"):
        store.load(io.BytesIO(outer_tar({"manifest.json": manifest, "c.json": cfg})))
    assert store.list() == []
    assert list((store.root / "tmp").iterdir()) == []


def test_load_refuses_a_gzip_bomb_and_leaves_nothing(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "root", sqlite3.connect(tmp_path / "state.db"),
                       limits=LayerLimits(ratio_floor_bytes=1 << 20))
    bomb = make_tar([("file", "zeros", b"\0" * 8_000_000)])
    with pytest.raises(ImageError, match="expands more than 100 times"):
        store.load(io.BytesIO(docker_archive([bomb], ["bomb:1"], gz=True)))
    assert store.list() == []
    for sub in ("layers", "tmp", "blobs/sha256"):
        assert list((store.root / sub).iterdir()) == [], sub


def test_oci_blob_digest_verified(store: ImageStore) -> None:
    data = oci_archive([LAYER1], "a:1")
    cfg = config_for([LAYER1], Cmd=["true"])
    tampered = data.replace(cfg, cfg.replace(b"amd64", b"arm64"))
    with pytest.raises(ImageError, match="digest"):
        store.load(io.BytesIO(tampered))


def test_get_not_found_message(store: ImageStore) -> None:
    with pytest.raises(NotFound, match="No such image: nope:1"):
        store.get("nope:1")
    with pytest.raises(NotFound):
        store.get("sha256:" + "a" * 64)


def test_tag_and_remove_semantics(store: ImageStore) -> None:
    (img,) = _images(store.load(io.BytesIO(docker_archive([LAYER1, LAYER2], ["a:1"]))))
    store.tag("a:1", "b")
    assert store.get("b:latest").id == img.id
    assert store.get(img.id).repo_tags == ("a:1", "b:latest")
    with pytest.raises(InvalidArgument):
        store.tag("a:1", "Bad Name")
    with pytest.raises(Conflict, match="multiple repositories"):
        store.remove(img.short_id)
    assert store.remove("b") == ["Untagged: b:latest"]
    in_use = {img.id}
    store.in_use = lambda image_id, _tenant: image_id in in_use
    with pytest.raises(Conflict):
        store.remove("a:1")
    with pytest.raises(Conflict):
        store.remove(img.id, force=True)
    in_use.clear()
    layer_dirs = store.layer_dirs(img)
    assert store.remove("a:1") == ["Untagged: a:1", f"Deleted: {img.id}"]
    assert store.list() == []
    assert not any(d.exists() for d in layer_dirs)
    assert list((store.root / "blobs/sha256").iterdir()) == []


def test_remove_keeps_shared_layers(store: ImageStore) -> None:
    (a,) = _images(store.load(io.BytesIO(docker_archive([LAYER1], ["a:1"]))))
    (b,) = _images(store.load(io.BytesIO(docker_archive([LAYER1, LAYER2], ["b:1"]))))
    store.remove("a:1")
    assert [d.exists() for d in store.layer_dirs(b)] == [True, True]
    with pytest.raises(NotFound):
        store.get(a.id)


def test_ambiguous_prefix(store: ImageStore) -> None:
    imgs = [store.import_rootfs(io.BytesIO(LAYER1), f"i{i}:1") for i in range(17)]
    first_chars = [i.id[7] for i in imgs]
    dup = next(c for c in first_chars if first_chars.count(c) > 1)
    with pytest.raises(InvalidArgument, match="ambiguous"):
        store.get(dup)


def test_busybox_image_from_tool(store: ImageStore, tmp_path: Path) -> None:
    if not Path("/bin/busybox").exists():
        pytest.skip("busybox-static not installed")
    spec = importlib.util.spec_from_file_location("mkbusybox", REPO / "tools/mkbusybox.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    data = mod.build_archive(Path("/bin/busybox"), "steelcup/busybox:latest")
    assert data == mod.build_archive(Path("/bin/busybox"), "steelcup/busybox:latest")
    (img,) = _images(store.load(io.BytesIO(data)))
    assert img.repo_tags == ("steelcup/busybox:latest",)
    assert img.config.cmd == ("sh",)
    (layer,) = store.layer_dirs(img)
    assert os.readlink(layer / "bin/sh") == "/bin/busybox"
    assert (layer / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert b"nobody:x:65534" in (layer / "etc/passwd").read_bytes()
