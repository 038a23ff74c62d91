"""podman's own network reaches a steelcup VM: with `--runtime steelcup-runtime` and podman's
default bridge network (netavark), the VM's NIC is mirrored into the container's netns
(steelcup.net.netnsnic), so the guest has the address podman assigned and a server in it
answers at that address and on podman's published port. podman, its bridge and its firewall
rules, and the daemon all live in a network namespace of the test's. A pod on that network
shares its sandbox's NIC. Two VM boots.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.podmanutil import IMG, Podman, keepers_of, write_runtime_wrapper
from tests.vm.support import (
    BUSYBOX_TAR,
    delete_netns,
    in_netns,
    leftovers_of,
    need_assets,
    new_netns,
    start_daemon,
    stop_daemon,
    wait_until,
)

pytestmark = pytest.mark.vm

FETCH = ("import sys, urllib.request\n"
         "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode(), end='')\n")
BIG = ("import hashlib, sys, urllib.request\n"
       "data = urllib.request.urlopen(sys.argv[1], timeout=60).read()\n"
       "print(len(data), hashlib.md5(data).hexdigest())\n")


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    need_assets()
    if shutil.which("podman") is None:
        pytest.fail("podman is needed (apt-get install podman)")
    base = tmp_path_factory.mktemp("podnet")
    netns = new_netns("podnet")
    daemon = start_daemon(base / "sc", base / "sc-run" / "steelcup.sock", netns,
                          host_mounts=True)
    runtime_root = base / "oci"
    wrapper = write_runtime_wrapper(base / "steelcup-runtime", daemon.socket, runtime_root)
    p = Podman(daemon, base, wrapper, runtime_root, netns)
    try:
        p.run("load", "-i", str(BUSYBOX_TAR), check=True)
        yield p
    finally:
        subprocess.run(p.argv("pod", "rm", "-a", "-f", "-t", "0"), capture_output=True,
                       timeout=180)
        subprocess.run(p.argv("rm", "-a", "-f", "-t", "0"), capture_output=True, timeout=120)
        stop_daemon(daemon)
        problems = leftovers_of(base / "sc", netns=netns)
        keepers = keepers_of(runtime_root)
        for pid in keepers:
            os.kill(pid, 9)
        delete_netns(netns)
        assert not keepers, f"keeper processes left running: {keepers}"
        assert not problems, "after daemon shutdown: " + "\n".join(problems)


def _fetch(netns: str, url: str) -> str:
    result = in_netns(netns, sys.executable, "-c", FETCH, url, timeout=30)
    return result.stdout.decode() if result.returncode == 0 else ""


def test_podmans_bridge_network_reaches_the_vm(podman: Podman) -> None:
    assert podman.netns is not None
    run = podman.run(
        "run", "-d", "--rm", "--name", "web", "--network", "bridge", "-p", "18080:80",
        "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", IMG, "sh", "-c",
        "mkdir -p /www && echo hello-from-the-vm > /www/index.html && dd if=/dev/urandom "
        "of=/www/big bs=64k count=32 2>/dev/null && md5sum /www/big > /www/big.md5 && "
        "exec httpd -f -p 80 -h /www", check=True)
    cid = run.stdout.decode().strip()
    inspect = json.loads(podman.run("inspect", cid, check=True).stdout)[0]
    address = inspect["NetworkSettings"]["IPAddress"]
    assert address, inspect["NetworkSettings"]
    # inside the VM (its own kernel): the address podman assigned, on eth0, and podman's
    # gateway as the default route
    inside = podman.run("exec", cid, "sh", "-c", "uname -r; ip -4 addr show eth0; ip route; "
                        "cat /etc/resolv.conf", check=True).stdout.decode()
    assert inside.splitlines()[0] != os.uname().release, inside
    assert f"inet {address}/" in inside, inside
    gateway = inspect["NetworkSettings"]["Gateway"]
    assert f"default via {gateway}" in inside, inside
    # and podman's DNS servers
    engine_resolv = Path(inspect["ResolvConfPath"]).read_text().splitlines()
    servers = [line for line in engine_resolv if line.startswith("nameserver ")]
    assert servers and all(line in inside.splitlines() for line in servers), (
        engine_resolv, inside)
    # the server answers at the container's address and on the published port
    wait_until(lambda: _fetch(podman.netns or "", f"http://{address}/") == "hello-from-the-vm\n",
               f"httpd in the VM answering at {address}", timeout_s=60)
    wait_until(lambda: _fetch(podman.netns or "", f"http://{gateway}:18080/")
               == "hello-from-the-vm\n", "the published port 18080", timeout_s=30)
    # 2 MiB through the mirrored NIC intact (segmentation and checksum offloads on the tap)
    md5 = _fetch(podman.netns, f"http://{address}/big.md5").split()[0]
    big = in_netns(podman.netns, sys.executable, "-c", BIG, f"http://{address}/big",
                   timeout=120)
    assert big.stdout.decode().split() == [str(2 << 20), md5], big
    # the container's netns: the veth mirrored to a tap of steelcup's
    netns_path = inspect["NetworkSettings"]["SandboxKey"]
    filters = subprocess.run(["nsenter", f"--net={netns_path}", "tc", "filter", "show",
                              "dev", "eth0", "ingress"], capture_output=True, text=True)
    assert "mirred (Egress Redirect to device scn" in filters.stdout, filters
    podman.run("stop", "-t", "1", cid, check=True)
    wait_until(lambda: podman.run("container", "exists", cid).returncode == 1,
               "the --rm container removed", timeout_s=60)
    # nothing of the run stays in the daemon's namespace
    links = in_netns(podman.netns, "ip", "-o", "link", "show").stdout.decode()
    assert " scn" not in links, links


def test_a_pod_on_podmans_network_shares_its_sandboxs_nic(podman: Podman) -> None:
    assert podman.netns is not None
    podman.run("pod", "create", "--name", "pnet", "--network", "bridge", "-p", "18081:80",
               check=True)
    try:
        member = podman.run(
            "run", "-d", "--pod", "pnet", "--ulimit", "nofile=1024:1024", "--ulimit",
            "nproc=1024:1024", IMG, "sh", "-c",
            "mkdir -p /www && echo hello-from-the-pod > /www/index.html && exec httpd -f "
            "-p 80 -h /www", check=True).stdout.decode().strip()
        infra = json.loads(podman.run("pod", "inspect", "pnet", check=True).stdout)
        infra_id = infra["InfraContainerID"]
        settings = json.loads(podman.run("inspect", infra_id, check=True).stdout)[0][
            "NetworkSettings"]
        address, gateway = settings["IPAddress"], settings["Gateway"]
        inside = podman.run("exec", member, "ip", "-4", "addr", "show", "eth0",
                            check=True).stdout.decode()
        assert f"inet {address}/" in inside, inside  # the member sees the sandbox's NIC
        wait_until(lambda: _fetch(podman.netns or "", f"http://{address}/")
                   == "hello-from-the-pod\n", f"the pod's httpd at {address}", timeout_s=60)
        wait_until(lambda: _fetch(podman.netns or "", f"http://{gateway}:18081/")
                   == "hello-from-the-pod\n", "the pod's published port 18081", timeout_s=30)
    finally:
        podman.run("pod", "rm", "-f", "-t", "0", "pnet", timeout=180)
    links = in_netns(podman.netns, "ip", "-o", "link", "show").stdout.decode()
    assert " scn" not in links, links
