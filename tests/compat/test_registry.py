"""The registry client against a REAL registry (Debian's docker-registry, distribution 2.8),
cross-checked with skopeo: push/pull round trips, TLS + htpasswd auth, crash safety, save.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from steelcup.image import registry
from steelcup.image.auth import Credentials
from steelcup.image.registry import RegistryAuthError, RegistryOptions
from steelcup.image.store import ImageStore

REPO = Path(__file__).resolve().parents[2]
BUSYBOX = REPO / "build" / "images" / "busybox.tar"
REGISTRY_BIN = "/usr/bin/docker-registry"

pytestmark = [
    pytest.mark.skipif(not Path(REGISTRY_BIN).exists(), reason="docker-registry not installed"),
    pytest.mark.skipif(not BUSYBOX.exists(), reason="run `make images` first"),
    pytest.mark.skipif(os.geteuid() != 0, reason="layer extraction needs root (whiteouts)"),
]


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    proc: subprocess.Popen[bytes]
    ca: Path | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PROBE = "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 0.5)"


def listening(port: int, enter: Sequence[str] = ()) -> bool:
    """Whether 127.0.0.1:`port` takes connections, in the network namespace `enter` runs in."""
    if enter:
        probe = subprocess.run([*enter, sys.executable, "-c", PROBE, str(port)],
                               capture_output=True, timeout=10)
        return probe.returncode == 0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_registry(workdir: Path, *, tls: bool = False, htpasswd: Path | None = None,
                   enter: Sequence[str] = ()) -> Registry:
    """A registry on 127.0.0.1; `enter` (e.g. nsenter --net=...) runs it in another network
    namespace, whose port is then free as the host's is (a fresh namespace has none bound)."""
    port = free_port()
    lines = [
        "version: 0.1",
        "log: {level: error}",
        "storage:",
        f"  filesystem: {{rootdirectory: {workdir / 'data'}}}",
        "  delete: {enabled: true}",
        "http:",
        f"  addr: 127.0.0.1:{port}",
    ]
    ca = None
    if tls:
        ca = make_certs(workdir)
        lines += [
            "  tls:",
            f"    certificate: {workdir / 'server.crt'}",
            f"    key: {workdir / 'server.key'}",
        ]
    if htpasswd is not None:
        lines += ["auth:", f"  htpasswd: {{realm: steelcup-test, path: {htpasswd}}}"]
    config = workdir / "config.yml"
    config.write_text("\n".join(lines) + "\n")
    log = open(workdir / "registry.log", "wb")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen([*enter, REGISTRY_BIN, "serve", str(config)], stdout=log,
                            stderr=log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((workdir / "registry.log").read_text())
        if listening(port, enter):
            return Registry(f"127.0.0.1:{port}", proc, ca)
        time.sleep(0.05)  # polling a port that has no ready message
    proc.kill()
    raise RuntimeError("registry did not start")


def make_certs(workdir: Path) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (openssl CLI)."""
    ca_key, ca_crt = workdir / "ca.key", workdir / "ca.crt"
    key, csr, crt = workdir / "server.key", workdir / "server.csr", workdir / "server.crt"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=steelcup test CA",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca_crt),
    )
    run(
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    ext = workdir / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "openssl",
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_crt),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(crt),
    )
    return ca_crt


def stop(reg: Registry) -> None:
    reg.proc.terminate()
    try:
        reg.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        reg.proc.kill()
        reg.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = start_registry(tmp_path_factory.mktemp("registry-plain"))
    yield reg
    stop(reg)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    if shutil.which("htpasswd") is None:
        pytest.skip("htpasswd (apache2-utils) not installed")
    workdir = tmp_path_factory.mktemp("registry-tls")
    htpasswd = workdir / "htpasswd"
    subprocess.run(
        ["htpasswd", "-Bbc", str(htpasswd), "alice", "s3cret"], check=True, capture_output=True
    )
    reg = start_registry(workdir, tls=True, htpasswd=htpasswd)
    yield reg
    stop(reg)


def new_store(path: Path) -> ImageStore:
    path.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path / "state.db", isolation_level=None, check_same_thread=False)
    return ImageStore(path / "images", db)


def loaded_store(path: Path) -> tuple[ImageStore, str]:
    store = new_store(path)
    with open(BUSYBOX, "rb") as f:
        (entry,) = store.load(f)
    return store, entry.image.id


def skopeo(*args: str) -> str:
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_push_pull_roundtrip_and_skopeo_agrees(plain: Registry, tmp_path: Path) -> None:
    src, image_id = loaded_store(tmp_path / "a")
    ref = f"{plain.host}/ns/app:1.1"
    src.tag(image_id, ref)
    events: list[registry.ProgressEvent] = []
    digest = registry.push(ref, src, events.append)
    assert {"Pushed", "Preparing"} <= {e.status for e in events}
    assert registry.push(ref, src) == digest  # same bytes again: same digest
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}"))
    assert inspected["Digest"] == digest
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
    assert json.loads(raw)["config"]["digest"] == image_id

    dst = new_store(tmp_path / "b")
    pulled: list[registry.ProgressEvent] = []
    result = registry.pull(ref, dst, pulled.append)
    assert result.image.id == image_id
    assert result.digest == digest and result.downloaded
    assert result.image.repo_tags == (ref,)
    assert f"{plain.host}/ns/app@{digest}" in result.image.repo_digests
    statuses = [e.status for e in pulled]
    assert statuses[0] == "Pulling from ns/app" and "Pull complete" in statuses
    assert statuses[-1] == f"Status: Downloaded newer image for {ref}"
    again = registry.pull(ref, dst)
    assert not again.downloaded
    by_digest = registry.pull(f"{plain.host}/ns/app@{digest}", dst)
    assert by_digest.image.id == image_id
    assert dst.get(f"{plain.host}/ns/app@{digest}").id == image_id
    # the pulled store can push again (verbatim manifest) and mounts the blob cross-repo
    mounted: list[registry.ProgressEvent] = []
    dst.tag(image_id, f"{plain.host}/other/app:2")
    assert registry.push(f"{plain.host}/other/app:2", dst, mounted.append) == digest
    assert any(e.status == "Mounted from ns/app" for e in mounted), mounted


def test_pulled_layers_mount_as_rootfs(plain: Registry, tmp_path: Path) -> None:
    from steelcup.image import rootfs

    src, image_id = loaded_store(tmp_path / "a")
    ref = f"{plain.host}/ns/rootfs:1"
    src.tag(image_id, ref)
    registry.push(ref, src)
    dst = new_store(tmp_path / "b")
    image = registry.pull(ref, dst).image
    container = tmp_path / "container"
    mounted = rootfs.prepare(dst.layer_dirs(image), container)
    try:
        assert (mounted / "bin" / "busybox").is_file()
    finally:
        rootfs.remove(container)


def test_skopeo_pushed_image_pulls(plain: Registry, tmp_path: Path) -> None:
    ref = f"{plain.host}/skopeo/busybox:latest"
    skopeo("copy", "--dest-tls-verify=false", f"docker-archive:{BUSYBOX}", f"docker://{ref}")
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}"))
    store = new_store(tmp_path / "s")
    result = registry.pull(ref, store)
    assert result.digest == inspected["Digest"]
    _, expected_id = loaded_store(tmp_path / "ref")
    assert result.image.id == expected_id
    assert (store.layer_dirs(result.image)[0] / "bin" / "busybox").is_file()


def test_missing_tag_is_not_found(plain: Registry, tmp_path: Path) -> None:
    store = new_store(tmp_path / "s")
    with pytest.raises(registry.NotFound, match="not found"):
        registry.pull(f"{plain.host}/nothing/here:1", store)


def test_tls_and_basic_auth(secure: Registry, tmp_path: Path) -> None:
    src, image_id = loaded_store(tmp_path / "a")
    ref = f"{secure.host}/private/app:1"
    src.tag(image_id, ref)
    good = Credentials("alice", "s3cret")
    # 127.0.0.1 may fall back to plain HTTP, but this one is TLS: verify against the test CA
    opts = RegistryOptions(ca_file=secure.ca)
    with pytest.raises(RegistryAuthError):
        registry.push(ref, src, options=opts)  # anonymous
    with pytest.raises(RegistryAuthError):
        registry.login(secure.host, Credentials("alice", "wrong"), opts)
    registry.login(secure.host, good, opts)
    digest = registry.push(ref, src, credentials=good, options=opts)
    dst = new_store(tmp_path / "b")
    result = registry.pull(ref, dst, credentials=good, options=opts)
    assert result.image.id == image_id and result.digest == digest


def test_tls_verification_is_enforced_for_non_loopback_hosts(secure: Registry) -> None:
    port = secure.host.split(":")[1]
    with httpx.Client(verify=True) as client, pytest.raises(httpx.ConnectError):
        client.get(f"https://127.0.0.1:{port}/v2/")  # self-signed CA: not trusted by default
    session = registry._Session(f"127.0.0.1:{port}", None, RegistryOptions(ca_file=secure.ca))
    with session:
        assert session.base().startswith("https://")


_PULL_SCRIPT = """
import sqlite3, sys
from pathlib import Path
from steelcup.image import registry
from steelcup.image.store import ImageStore
root = Path(sys.argv[1])
db = sqlite3.connect(root / "state.db", isolation_level=None, check_same_thread=False)
store = ImageStore(root / "images", db)
def progress(event):
    print(event.status, flush=True)
registry.pull(sys.argv[2], store, progress, options=registry.RegistryOptions(max_concurrent=1))
print("DONE", flush=True)
"""


@pytest.mark.parametrize(
    "kill_after", ["Pulling fs layer", "Downloading", "Download complete", "Extracting"]
)
def test_killed_pull_leaves_store_consistent(
    plain: Registry, tmp_path: Path, kill_after: str
) -> None:
    src, image_id = loaded_store(tmp_path / "a")
    ref = f"{plain.host}/crash/app:1"
    src.tag(image_id, ref)
    registry.push(ref, src)
    root = tmp_path / "victim"
    new_store(root)  # schema in place
    proc = subprocess.Popen(
        [sys.executable, "-c", _PULL_SCRIPT, str(root), ref],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line.strip())
        if line.startswith(kill_after):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=30)
    proc.stdout.close()
    store = new_store(root)  # restart: tmp/ is swept
    assert list((root / "images" / "tmp").iterdir()) == []
    for blob in (root / "images" / "blobs" / "sha256").iterdir():  # no partial blob anywhere
        assert _sha256(blob) == blob.name
    if "DONE" not in seen:
        with pytest.raises(registry.NotFound):
            store.get(ref)
    result = registry.pull(ref, store)
    assert result.image.id == image_id
    assert (store.layer_dirs(result.image)[0] / "bin" / "busybox").is_file()
    store.prune()
    assert store.get(ref).id == image_id


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def test_save_roundtrip_and_skopeo_reads_it(tmp_path: Path) -> None:
    src, image_id = loaded_store(tmp_path / "a")
    src.tag(image_id, "app:1.0")
    out = tmp_path / "app.tar"
    with open(out, "wb") as f:
        src.save(["app:1.0"], f)
    dst = new_store(tmp_path / "b")
    with open(out, "rb") as f:
        (entry,) = dst.load(f)
    loaded = entry.image
    assert loaded.id == image_id and loaded.repo_tags == ("app:1.0",)
    inspected = json.loads(skopeo("inspect", f"docker-archive:{out}"))
    assert len(inspected["Layers"]) == len(loaded.diff_ids)
    # skopeo finds the image by the tag recorded in manifest.json
    skopeo("inspect", f"docker-archive:{out}:docker.io/library/app:1.0")
    config = json.loads(skopeo("inspect", "--config", f"docker-archive:{out}"))
    assert config["rootfs"]["diff_ids"] == list(loaded.diff_ids)
    oci = json.loads(skopeo("inspect", "--config", f"oci-archive:{out}"))
    assert oci["rootfs"]["diff_ids"] == list(loaded.diff_ids)


def test_prune_collects_only_garbage(plain: Registry, tmp_path: Path) -> None:
    store, image_id = loaded_store(tmp_path / "a")
    blobs = store.root / "blobs" / "sha256"
    junk = blobs / ("0" * 64)
    junk.write_bytes(b"orphan from a crash")
    result = store.prune()
    assert not junk.exists() and result.reclaimed_bytes >= len(b"orphan from a crash")
    assert store.get(image_id).id == image_id  # tagged: kept
    store.remove("steelcup/busybox:latest")
    assert not any(blobs.iterdir())
    store2, image_id = loaded_store(tmp_path / "b")
    (tag,) = store2.get(image_id).repo_tags
    store2._untag(image_id, [tag], None)  # dangling now
    result = store2.prune()
    assert f"Deleted: {image_id}" in result.deleted and result.reclaimed_bytes > 1_000_000
    assert not any((store2.root / "layers").iterdir())
