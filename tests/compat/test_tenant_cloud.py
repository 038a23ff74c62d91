"""The container cloud as tenants see it: one real daemon with `--multi-tenant --tls-listen`,
two tenants with keys `steelcup tenant key create` wrote, driven by the real docker CLI,
docker-py and the steelcup CLI over TLS (docs/tenancy.md). Each sees only its own objects;
requests without a live key are refused and create nothing.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pytest

from tests.compat.conftest import DOCKER, IMG
from tests.vm.support import (
    BUSYBOX_TAR,
    Daemon,
    leftovers_of,
    need_assets,
    start_daemon,
    stop_daemon,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Tenant:
    name: str
    certs: Path
    key_id: str
    url: str

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ, DOCKER_HOST=self.url.replace("https://", "tcp://"),
                   DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(self.certs),
                   DOCKER_CONFIG=str(self.certs.parent / f"{self.name}-config"),
                   DOCKER_CLI_HINTS="false", STEELCUP_NO_AUTOSTART="1")
        for name in ("STEELCUP_HOST", "DOCKER_API_VERSION", "DOCKER_CONTEXT"):
            env.pop(name, None)
        return env

    def docker(self, *args: str, input: bytes | None = None
               ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([DOCKER, *args], input=input, capture_output=True, timeout=180,
                              env=self.env)

    def steelcup(self, *args: str, input: bytes | None = None
                 ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "steelcup", *args], input=input,
                              capture_output=True, timeout=180, env=self.env)

    def http(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            verify=ssl.create_default_context(cafile=str(self.certs / "ca.pem")),
                            **kw)  # type: ignore[arg-type]


@dataclass
class Cloud:
    daemon: Daemon
    alice: Tenant
    bob: Tenant
    args: tuple[str, ...]  # the daemon's listener flags

    def restart(self) -> None:
        stop_daemon(self.daemon)
        self.daemon = start_daemon(self.daemon.root, self.daemon.socket, extra_args=self.args)


def _ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, (result.args, result.stdout[-2000:], result.stderr[-2000:])
    return result.stdout.decode()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    need_assets()
    base = tmp_path_factory.mktemp("cloud")
    port = _free_port()
    args = ("--multi-tenant", "--allow-tcg", "--tls-listen", f"127.0.0.1:{port}")
    cloud = Cloud(start_daemon(base / "root", base / "run" / "steelcup.sock", extra_args=args),
                  *[None] * 2, args)  # type: ignore[arg-type]
    daemon = cloud.daemon
    try:
        tenants = []
        for name in ("alice", "bob"):
            _ok(daemon.cli("tenant", "create", name))
            key_id = _ok(daemon.cli("tenant", "key", "create", name, "--out",
                                    str(base / f"{name}-certs"))).strip()
            tenants.append(Tenant(name, base / f"{name}-certs", key_id,
                                  f"https://127.0.0.1:{port}"))
        cloud.alice, cloud.bob = tenants
        yield cloud
    finally:
        stop_daemon(cloud.daemon)
        problems = leftovers_of(base / "root")
        assert not problems, "after daemon shutdown: " + "\n".join(problems)


def test_the_docker_cli_as_two_tenants(cloud: Cloud) -> None:
    alice, bob = cloud.alice, cloud.bob
    _ok(alice.docker("load", "-i", str(BUSYBOX_TAR)))
    assert _ok(alice.docker("run", "--name", "web", IMG, "echo", "hello-alice")) == \
        "hello-alice\n"
    piped = alice.docker("run", "-i", "--rm", IMG, "cat", input=b"piped over tls\n")
    assert _ok(piped) == "piped over tls\n"
    # bob sees none of it: no containers, no images, no name
    assert _ok(bob.docker("ps", "-a", "-q")) == ""
    assert _ok(bob.docker("images", "-q")) == ""
    missing = bob.docker("inspect", "web")
    assert missing.returncode == 1 and b"No such object: web" in missing.stderr
    assert b"No such container: web" in bob.docker("rm", "-f", "web").stderr
    # alice's container is as it was
    assert _ok(alice.docker("inspect", "-f", "{{.Name}} {{.State.ExitCode}}", "web")) == \
        "/web 0\n"
    assert _ok(alice.docker("logs", "web")) == "hello-alice\n"


def test_docker_py_as_a_tenant(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    bob = cloud.bob
    # requests takes these over docker-py's own CA (a requests quirk, not the daemon's)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    client = docker.from_env(environment=bob.env)
    try:
        with open(BUSYBOX_TAR, "rb") as f:
            client.images.load(f.read())
        assert client.containers.run(IMG, ["echo", "hello-bob"], name="web") == b"hello-bob\n"
        names = sorted(c.name for c in client.containers.list(all=True))
        assert names == ["web"]  # bob's own "web": names are per tenant
        assert client.containers.get("web").attrs["Config"]["Cmd"] == ["echo", "hello-bob"]
        # the operator's routes are not a tenant's
        assert client.api.get(client.api._url("/steelcup/tenants")).status_code == 403
    finally:
        client.close()
    alice_web = _ok(cloud.alice.docker("inspect", "-f", "{{.Config.Cmd}}", "web"))
    assert "hello-alice" in alice_web


def test_the_steelcup_cli_with_dockers_variables(cloud: Cloud) -> None:
    alice = cloud.alice
    ran = alice.steelcup("run", "--rm", IMG, "echo", "from-steelcup")
    assert _ok(ran) == "from-steelcup\n"
    # a daemon without KVM says so once per CLI session
    assert ran.stderr.decode().count("QEMU TCG") == 1
    assert _ok(alice.steelcup("run", "-i", "--rm", IMG, "wc", "-l",
                              input=b"a\nb\nc\n")).strip() == "3"
    assert "web" in _ok(alice.steelcup("ps", "-a"))


def test_requests_without_a_live_key_are_refused_and_create_nothing(
        cloud: Cloud, tmp_path: Path) -> None:
    alice = cloud.alice
    body = {"Image": IMG, "Cmd": ["true"]}
    with alice.http() as anonymous:
        answer = anonymous.post("/containers/create", params={"name": "anon"}, json=body)
        assert answer.status_code == 401
    with alice.http(headers={"Authorization": "Bearer not-a-token"}) as forged:
        assert forged.post("/containers/create", json=body).status_code == 401
    # a certificate from another CA does not get through the handshake
    other = tmp_path / "other"
    from steelcup.tenancy.credentials import Authority

    issued = Authority(other).issue_client("alice", "k-other")
    (other / "c.pem").write_bytes(issued.cert_pem)
    (other / "k.pem").write_bytes(issued.key_pem)
    context = ssl.create_default_context(cafile=str(alice.certs / "ca.pem"))
    context.load_cert_chain(str(other / "c.pem"), str(other / "k.pem"))
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)), \
            httpx.Client(base_url=alice.url, verify=context, timeout=30) as stranger:
        stranger.get("/containers/json")
    # a removed key is refused on its very next request
    extra = tmp_path / "extra"
    key_id = _ok(cloud.daemon.cli("tenant", "key", "create", "alice", "--out",
                                  str(extra))).strip()
    holder = Tenant("alice", extra, key_id, alice.url)
    assert _ok(holder.docker("ps", "-a", "-q")) != ""
    _ok(cloud.daemon.cli("tenant", "key", "rm", "alice", key_id))
    gone = holder.docker("create", "--name", "after-removal", IMG, "true")
    assert gone.returncode != 0
    names = _ok(alice.docker("ps", "-a", "--format", "{{.Names}}")).split()
    assert "anon" not in names and "after-removal" not in names


def test_a_daemon_restart_keeps_tenants_keys_quotas_ownership_and_usage(cloud: Cloud) -> None:
    alice, bob = cloud.alice, cloud.bob
    _ok(cloud.daemon.cli("tenant", "update", "alice", "--quota", "containers=7"))
    before = _ok(cloud.daemon.cli("tenant", "usage", "alice", "--format", "json"))
    cloud.restart()
    assert "web" in _ok(alice.docker("ps", "-a", "--format", "{{.Names}}")).split()
    assert _ok(alice.docker("logs", "web")) == "hello-alice\n"
    bobs = _ok(bob.docker("ps", "-a", "--format", "{{.Names}} {{.Command}}"))
    assert "hello-bob" in bobs and "hello-alice" not in bobs
    quotas = _ok(cloud.daemon.cli("tenant", "inspect", "-f", "{{.Quotas.containers}}", "alice"))
    assert quotas.strip() == "7"
    after = _ok(cloud.daemon.cli("tenant", "usage", "alice", "--format", "json"))
    assert json.loads(after) == json.loads(before) and json.loads(after)  # billed, and kept
