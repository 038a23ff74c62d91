"""Funcs on a real daemon with real microVMs: each call a fresh container in a VM from the warm
pool, through the CLI (`func call`) and the gateway (`--func-listen`).

One daemon for the module (its own: it serves the gateway and tenants on loopback, and has no
networking of its own, so no namespace is needed).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from steelcup.daemon import vm_run_dir
from tests.vm.support import (
    BUSYBOX_TAR,
    Daemon,
    leftovers_of,
    need_assets,
    our_qemus,
    start_daemon,
    stop_daemon,
    wait_pool_ready,
    wait_until,
)

IMAGE = "steelcup/busybox"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Env:
    def __init__(self, daemon: Daemon, gateway: str, tls_port: int, base: Path) -> None:
        self.daemon = daemon
        self.gateway = gateway
        self.tls_port = tls_port
        self.base = base

    def tenant(self, name: str) -> dict[str, str]:
        """A tenant with a key and its own busybox: the CLI's environment for it."""
        certs = self.base / f"{name}-certs"
        if not certs.exists():
            self.daemon.cli("tenant", "create", name, check=True)
            self.daemon.cli("tenant", "key", "create", name, "--out", str(certs), check=True)
        env = dict(self.daemon.env, DOCKER_HOST=f"tcp://127.0.0.1:{self.tls_port}",
                   DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(certs))
        env.pop("STEELCUP_HOST", None)
        return env

    def token(self, name: str) -> str:
        return (self.base / f"{name}-certs" / "token").read_text().strip()

    def as_tenant(self, env: dict[str, str], *args: str, input: bytes | None = None
                  ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "steelcup", *args], input=input,
                              capture_output=True, timeout=180, env=env)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    need_assets()
    base = tmp_path_factory.mktemp("fn")
    gateway_port, tls_port = free_port(), free_port()
    d = start_daemon(base / "root", base / "run" / "s.sock", extra_args=(
        "--func-listen", f"127.0.0.1:{gateway_port}", "--multi-tenant", "--allow-tcg",
        "--tls-listen", f"127.0.0.1:{tls_port}"))
    try:
        d.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        wait_pool_ready(d)
        yield Env(d, f"http://127.0.0.1:{gateway_port}", tls_port, base)
    finally:
        stop_daemon(d)
        problems = leftovers_of(base / "root")
        assert not problems, "after daemon shutdown: " + "\n".join(problems)


def create(env: Env, name: str, *args: str) -> dict[str, object]:
    env.daemon.cli("func", "create", "--name", name, *args, check=True)
    return dict(json.loads(env.daemon.out("func", "inspect", name))[0])


def operator(env: Env, timeout: float | None = 30) -> httpx.Client:
    return httpx.Client(base_url="http://steelcup", timeout=timeout,
                        transport=httpx.HTTPTransport(uds=str(env.daemon.socket)))


def func_containers(env: Env) -> list[str]:
    with operator(env) as api:
        return [c["Id"] for c in api.get("/containers/json", params={"all": "1"}).json()
                if "sh.steelcup.func" in (c.get("Labels") or {})]


def test_cat_echoes_64k_of_binary_stdin_exactly(env: Env) -> None:
    func = create(env, "cat", IMAGE, "cat")
    data = os.urandom(64 * 1024)
    result = env.daemon.cli("func", "call", "cat", input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data
    # the same through the gateway, with its secret in the path
    answer = httpx.post(f"{env.gateway}{func['CallPath']}", content=data, timeout=120)
    assert answer.status_code == 200 and answer.content == data
    assert answer.headers["steelcup-exit-code"] == "0"
    call_id = answer.headers["steelcup-call-id"]
    logs = json.loads(env.daemon.out("func", "logs", "cat", "--call", call_id,
                                     "--format", "json"))
    assert logs[0]["Status"] == "done" and logs[0]["InputBytes"] == len(data)
    assert func_containers(env) == []  # each call's container is removed
    # a wrong secret is answered as a missing func
    wrong = httpx.post(f"{env.gateway}/call/cat/{'0' * 32}", content=b"x", timeout=30)
    assert wrong.status_code == 404


def test_headers_and_query_reach_the_container_as_variables(env: Env) -> None:
    func = create(env, "envs", IMAGE, "sh", "-c", 'echo "$HTTP_X_GREETING $QUERY_who"')
    answer = httpx.post(f"{env.gateway}/call/envs", params={"secret": func["Secret"],
                                                            "who": "world"},
                        headers={"X-Greeting": "hello"}, timeout=120)
    assert answer.status_code == 200 and answer.text == "hello world\n"


def test_a_func_exiting_3_reports_3(env: Env) -> None:
    func = create(env, "three", IMAGE, "sh", "-c", "echo out; echo why >&2; exit 3")
    result = env.daemon.cli("func", "call", "three", input=b"")
    assert result.returncode == 3 and result.stdout == b"out\n"
    answer = httpx.post(f"{env.gateway}{func['CallPath']}", timeout=120)
    assert answer.status_code == 500
    body = answer.json()
    assert body["ExitCode"] == 3 and body["Stderr"] == "why\n"
    assert body["CallId"] == answer.headers["steelcup-call-id"] and "exited with 3" in \
        body["message"]


def daemon_qemus(env: Env) -> set[int]:
    markers = (str(env.daemon.root), str(vm_run_dir(env.daemon.root)))
    return {int(line.split(":")[0]) for m in markers for line in our_qemus(m)}


def test_a_call_past_its_timeout_is_killed_and_its_vm_gone(env: Env) -> None:
    func = create(env, "slow", "--timeout", "4s", IMAGE, "sleep", "600")
    wait_pool_ready(env.daemon)
    warm = daemon_qemus(env)  # idle ready VMs: one of them serves the call
    started = time.monotonic()
    answer = httpx.post(f"{env.gateway}{func['CallPath']}", timeout=120)
    assert answer.status_code == 504, answer.text
    assert time.monotonic() - started < 60
    body = answer.json()
    assert body["Status"] == "timed-out" and "timeout of 4s" in body["message"]
    # the VM that ran it is gone (a ready VM otherwise lives on), and so is its container
    wait_until(lambda: warm - daemon_qemus(env), "the call's VM ended", timeout_s=30)
    assert func_containers(env) == []
    status = httpx.get(f"{env.gateway}/calls/{body['CallId']}",
                       params={"secret": func["Secret"]}, timeout=30)
    assert status.status_code == 504 and status.json()["Status"] == "timed-out"


def test_20_parallel_calls_with_concurrency_4_never_run_more_than_4(env: Env) -> None:
    func = create(env, "four", "--concurrency", "4", IMAGE, "sh", "-c", "sleep 1; cat")
    lines: list[str] = []
    subscribed = threading.Event()

    def watch() -> None:
        filters = json.dumps({"type": ["container"], "label": ["sh.steelcup.func=four"]})
        with operator(env, timeout=None) as api, api.stream(
                "GET", "/events", params={"filters": filters}) as stream:
            subscribed.set()
            for line in stream.iter_lines():
                lines.append(line)
                if sum('"destroy"' in x for x in lines) == 20:
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert subscribed.wait(30)
    results: list[tuple[int, bytes, bytes]] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        body = f"call {i}".encode()
        answer = httpx.post(f"{env.gateway}{func['CallPath']}", content=body, timeout=600)
        with lock:
            results.append((answer.status_code, answer.content, body))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(900)
    assert len(results) == 20
    assert all(status == 200 and got == sent for status, got, sent in results), results
    watcher.join(60)
    running, peak, starts = 0, 0, 0
    for line in lines:
        action = json.loads(line)["Action"]
        if action == "start":
            running, starts = running + 1, starts + 1
        elif action == "die":
            running -= 1
        peak = max(peak, running)
    assert starts == 20 and peak <= 4, (starts, peak)
    inspected = json.loads(env.daemon.out("func", "inspect", "four"))[0]
    assert inspected["PeakRunning"] == 4 and inspected["Running"] == 0


def test_an_async_call_is_fetched_once_done(env: Env) -> None:
    func = create(env, "later", IMAGE, "sh", "-c", "sleep 2; cat")
    accepted = httpx.post(f"{env.gateway}{func['CallPath']}", params={"async": "1"},
                          content=b"done later", timeout=60)
    assert accepted.status_code == 202
    call_id = accepted.json()["CallId"]
    follow = subprocess.Popen([sys.executable, "-m", "steelcup", "func", "logs", "later",
                               "--call", call_id, "-f"], stdout=subprocess.PIPE,
                              env=env.daemon.env)
    pending = httpx.get(f"{env.gateway}/calls/{call_id}", params={"secret": func["Secret"]},
                        timeout=30)
    assert pending.status_code == 202 and pending.json()["Status"] in ("queued", "running")
    done = httpx.get(f"{env.gateway}/calls/{call_id}",
                     params={"secret": func["Secret"], "wait": "1"}, timeout=300)
    assert done.status_code == 200 and done.content == b"done later"
    assert done.headers["steelcup-call-status"] == "done"
    followed, _ = follow.communicate(timeout=120)  # `func logs -f --call ID`: once it ends
    assert follow.returncode == 0 and followed == b"done later"
    # without the func's secret, the call is not there
    assert httpx.get(f"{env.gateway}/calls/{call_id}", timeout=30).status_code == 404


def test_input_over_the_cap_is_refused(env: Env) -> None:
    func = create(env, "small", "--max-input", "1k", IMAGE, "cat")
    answer = httpx.post(f"{env.gateway}{func['CallPath']}", content=b"x" * 2000, timeout=60)
    assert answer.status_code == 413
    result = env.daemon.cli("func", "call", "small", input=b"x" * 2000)
    assert result.returncode != 0 and b"larger than 1024 bytes" in result.stderr
    assert json.loads(env.daemon.out("func", "logs", "small", "--format", "json")) == []


def test_a_tenant_cannot_call_or_see_another_tenants_func(env: Env) -> None:
    alice, bob = env.tenant("alice"), env.tenant("bob")
    for who in (alice, bob):
        loaded = env.as_tenant(who, "load", "-i", str(BUSYBOX_TAR))
        assert loaded.returncode == 0, loaded.stderr
    made = env.as_tenant(alice, "func", "create", "--name", "hers", "--auth", "token", IMAGE,
                         "echo", "alice's")
    assert made.returncode == 0, made.stderr
    called = env.as_tenant(alice, "func", "call", "hers", input=b"")
    assert called.returncode == 0 and called.stdout == b"alice's\n", called.stderr
    assert env.as_tenant(bob, "func", "ls", "-q").stdout == b""
    for argv in (["func", "call", "hers"], ["func", "inspect", "hers"],
                 ["func", "logs", "hers"], ["func", "rm", "hers"]):
        refused = env.as_tenant(bob, *argv, input=b"")
        assert refused.returncode != 0 and b"no such func" in refused.stderr, argv
    # at the gateway: alice's token calls it, bob's does not
    ok = httpx.post(f"{env.gateway}/call/hers", timeout=120,
                    headers={"Authorization": f"Bearer {env.token('alice')}"})
    assert ok.status_code == 200 and ok.content == b"alice's\n"
    no = httpx.post(f"{env.gateway}/call/hers", timeout=60,
                    headers={"Authorization": f"Bearer {env.token('bob')}"})
    assert no.status_code == 404
    assert env.as_tenant(alice, "func", "ls", "-q").stdout == b"hers\n"
