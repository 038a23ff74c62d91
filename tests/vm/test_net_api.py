"""The /networks and /volumes API through the real docker CLI and steelcup's own CLI, served by
a real HttpServer whose NetworkManager keeps its bridges in a namespace this test creates."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from steelcup.api import net_routes, volume_routes
from steelcup.api.http import HttpServer, Router
from steelcup.boundedfs import DiskMaker
from steelcup.errors import NotFound
from steelcup.net.links import Host
from steelcup.net.manager import NetworkManager
from steelcup.net.store import NetStore
from steelcup.runtime.model import ContainerConfig, ContainerRecord
from steelcup.state.db import open_db
from steelcup.volume.manager import VolumeManager

pytestmark = pytest.mark.vm
CONTAINERS = {"c" * 64: "web"}
VOLUME_USERS: dict[str, list[str]] = {}


def resolve(ref: str, tenant: str | None) -> ContainerRecord:
    for cid, name in CONTAINERS.items():
        if ref in (cid, name) or cid.startswith(ref):
            return ContainerRecord(cid, name, "", ContainerConfig(image="base", image_id=""),
                                   "sh", ())
    raise NotFound(f"No such container: {ref}")


@pytest.fixture()
def api(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root and nftables")
    ns = f"scapi{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    sock = tmp_path / "api.sock"
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    loop_box: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        mgr = NetworkManager(NetStore(open_db(tmp_path)), Host(ns), upstreams=[],
                             host_routes=lambda: [])
        await mgr.startup()
        disks = DiskMaker(tmp_path / "vcache", 64 << 20, label="steelcup-vol",
                          empty_root=True)
        vols = VolumeManager(tmp_path, in_use=lambda n: VOLUME_USERS.get(n, []), disks=disks)
        router = Router()
        volume_routes.scope(router, vols)
        net_routes.register(router, mgr, resolve)
        volume_routes.register(router, vols)
        stop.append(asyncio.Event())
        loop_box.append(asyncio.get_running_loop())
        async with HttpServer(router, unix_path=sock):
            ready.set()
            await stop[0].wait()
        await mgr.close()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(20)
    try:
        yield sock
    finally:
        loop_box[0].call_soon_threadsafe(stop[0].set)
        thread.join(10)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def docker(sock: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["docker", "-H", f"unix://{sock}", *args], capture_output=True,
                       text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {args}: {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def steelcup_cli(sock: Path, *args: str) -> tuple[int, str]:
    """steelcup's own network/volume commands (in-process parser: they are not yet wired into
    cli/main.py)."""
    import argparse
    import contextlib
    import io

    from steelcup.cli.commands import COMMANDS, network, volume
    from steelcup.cli.context import Context

    parser = argparse.ArgumentParser(prog="steelcup")
    sub = parser.add_subparsers(dest="command")
    for name, module in (("network", network), ("volume", volume)):
        module.register(sub, name, COMMANDS[name][1])
    ns = parser.parse_args(list(args))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = ns.func(Context(sock, sock.parent, autostart=False), ns)
    return int(code), out.getvalue()


def test_docker_cli_networks(api: Path) -> None:
    if shutil.which("docker") is None:
        pytest.skip("docker CLI not installed")
    net_id = docker(api, "network", "create", "--subnet", "10.214.7.0/24", "--label", "a=b",
                    "front").stdout.strip()
    assert len(net_id) == 64
    assert "front" in docker(api, "network", "ls").stdout
    assert "bridge" in docker(api, "network", "ls").stdout
    info = json.loads(docker(api, "network", "inspect", "front").stdout)[0]
    assert info["IPAM"]["Config"] == [{"Subnet": "10.214.7.0/24", "Gateway": "10.214.7.1"}]
    assert info["Labels"] == {"a": "b"}
    dup = docker(api, "network", "create", "front", check=False)
    assert dup.returncode != 0 and "already exists" in dup.stderr
    overlap = docker(api, "network", "create", "--subnet", "10.214.0.0/16", "x2", check=False)
    assert overlap.returncode != 0 and "overlaps" in overlap.stderr
    docker(api, "network", "connect", "--alias", "www", "front", "web")
    info = json.loads(docker(api, "network", "inspect", "front").stdout)[0]
    (ep,) = info["Containers"].values()
    assert ep["Name"] == "web" and ep["IPv4Address"] == "10.214.7.2/24"
    busy = docker(api, "network", "rm", "front", check=False)
    assert busy.returncode != 0 and "active endpoints" in busy.stderr
    docker(api, "network", "disconnect", "front", "web")
    docker(api, "network", "rm", "front")
    gone = docker(api, "network", "inspect", "front", check=False)
    assert gone.returncode != 0
    assert docker(api, "network", "rm", "bridge", check=False).returncode != 0


def test_docker_cli_volumes_and_own_cli(api: Path) -> None:
    if shutil.which("docker") is None:
        pytest.skip("docker CLI not installed")
    assert docker(api, "volume", "create", "--label", "k=v", "data").stdout.strip() == "data"
    info = json.loads(docker(api, "volume", "inspect", "data").stdout)[0]
    assert info["Mountpoint"].endswith("/volumes/data/_data") and info["Labels"] == {"k": "v"}
    assert info["Options"] == {"size": "64M"}  # the default size, shown
    docker(api, "volume", "create", "--opt", "size=32m", "sized")
    info = json.loads(docker(api, "volume", "inspect", "sized").stdout)[0]
    assert info["Options"] == {"size": "32m"}
    nfs = docker(api, "volume", "create", "--opt", "type=nfs", "--opt", "o=addr=10.0.0.1",
                 "--opt", "device=:/x", "nfs", check=False)
    assert nfs.returncode != 0 and "not supported" in nfs.stderr, nfs.stderr
    small = docker(api, "volume", "create", "--opt", "size=1m", "small", check=False)
    assert small.returncode != 0 and "volume size must be between" in small.stderr
    docker(api, "volume", "rm", "sized")
    assert "data" in docker(api, "volume", "ls", "-q").stdout.split()
    VOLUME_USERS["data"] = ["c" * 64]
    busy = docker(api, "volume", "rm", "data", check=False)
    assert busy.returncode != 0 and "in use" in busy.stderr
    VOLUME_USERS.clear()
    docker(api, "volume", "rm", "data")
    assert docker(api, "volume", "inspect", "data", check=False).returncode != 0
    # steelcup's own CLI against the same API
    code, out = steelcup_cli(api, "volume", "create", "mine")
    assert (code, out.strip()) == (0, "mine")
    code, out = steelcup_cli(api, "volume", "ls")
    assert code == 0 and "mine" in out
    code, out = steelcup_cli(api, "network", "create", "--internal", "back")
    assert code == 0 and len(out.strip()) == 64
    code, out = steelcup_cli(api, "network", "ls")
    assert "back" in out and "bridge" in out
    code, out = steelcup_cli(api, "network", "prune")
    assert "back" in out
    code, out = steelcup_cli(api, "volume", "prune", "-a")
    assert "mine" in out
