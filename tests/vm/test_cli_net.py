"""Networks, DNS, published ports and volumes through the CLI, with containers in real VMs.

The session daemon runs inside a network namespace the test suite created, so bridges, NAT
rules and every packet stay there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.vm.support import Daemon, in_netns

pytestmark = pytest.mark.vm
IMG = "steelcup/busybox"


def _serve(daemon: Daemon, name: str, network: str, *extra: str) -> str:
    """A busybox httpd container answering `hello from NAME` on port 80."""
    cid = daemon.out(
        "run", "-d", "--name", name, "--network", network, *extra, IMG, "sh", "-c",
        f"mkdir -p /www && echo hello from {name} > /www/index.html && "
        "exec httpd -f -p 80 -h /www",
    ).strip()
    return cid


def test_containers_reach_each_other_by_name_not_across_networks(daemon: Daemon) -> None:
    daemon.out("network", "create", "appnet")
    daemon.out("network", "create", "othernet")
    try:
        _serve(daemon, "web", "appnet", "--network-alias", "www")
        fetch = "for i in $(seq 50); do wget -qO- http://{host}/ && exit 0; sleep 0.2; done; exit 1"
        assert daemon.out("run", "--rm", "--network", "appnet", IMG, "sh", "-c",
                          fetch.format(host="web")) == "hello from web\n"
        assert daemon.out("run", "--rm", "--network", "appnet", IMG, "sh", "-c",
                          fetch.format(host="www")) == "hello from web\n"
        info = json.loads(daemon.out("inspect", "web"))[0]
        address = info["NetworkSettings"]["Networks"]["appnet"]["IPAddress"]
        assert address
        # Another network: neither the name nor the address is reachable.
        cross = daemon.cli("run", "--rm", "--network", "othernet", IMG, "sh", "-c",
                           f"nslookup web >/dev/null 2>&1 && echo resolved; "
                           f"timeout 5 wget -qO- http://{address}/ && echo reached; exit 0")
        assert cross.returncode == 0, cross.stderr
        assert b"resolved" not in cross.stdout and b"reached" not in cross.stdout
    finally:
        daemon.cli("rm", "-f", "web")
        daemon.cli("network", "rm", "appnet")
        daemon.cli("network", "rm", "othernet")
    assert "appnet" not in daemon.out("network", "ls")


def test_published_port_answers_on_the_host_side(daemon: Daemon) -> None:
    assert daemon.netns, "the session daemon runs in its own network namespace"
    _serve(daemon, "pub", "bridge", "-p", "18080:80")
    try:
        url = "http://127.0.0.1:18080/"
        probe = ("import urllib.request,time\n"
                 "for i in range(100):\n"
                 "    try:\n"
                 f"        print(urllib.request.urlopen('{url}', timeout=2).read().decode(),"
                 " end=''); break\n"
                 "    except OSError: time.sleep(0.2)\n")
        result = in_netns(daemon.netns, "python3", "-c", probe)
        assert result.stdout == b"hello from pub\n", result.stderr
        ports = json.loads(daemon.out("inspect", "pub"))[0]["NetworkSettings"]["Ports"]
        assert ports["80/tcp"][0]["HostPort"] == "18080"
    finally:
        daemon.cli("rm", "-f", "pub")


def test_volume_persists_and_read_only_refuses_writes(daemon: Daemon) -> None:
    daemon.out("volume", "create", "data")
    try:
        daemon.out("run", "--rm", "-v", "data:/data", IMG, "sh", "-c",
                   "echo kept > /data/f && sync")
        info = json.loads(daemon.out("volume", "inspect", "data"))[0]
        mountpoint = Path(info["Mountpoint"])
        assert info["Options"] == {"size": "10G"}  # the daemon's default
        assert not mountpoint.exists()  # its filesystem is mounted only while in use
        ro = daemon.cli("run", "--rm", "-v", "data:/data:ro", IMG, "sh", "-c",
                        "cat /data/f; echo x > /data/g")
        assert ro.stdout == b"kept\n" and ro.returncode != 0
        cid = daemon.out("run", "-d", "-v", "data:/data", IMG, "sleep", "300").strip()
        try:
            # the host sees the files at Mountpoint meanwhile (in the daemon's mount namespace)
            kept = Path(f"/proc/{daemon.proc.pid}/root{mountpoint}/f")
            assert kept.read_text() == "kept\n"
            assert daemon.cli("volume", "rm", "data").returncode != 0  # in use
            # cp reaches the volume, not the container's root beneath its mount point
            src = Path(tempfile.mkdtemp()) / "copied"
            src.write_text("via cp\n")
            daemon.out("cp", str(src), f"{cid}:/data/copied")
            assert daemon.out("exec", cid, "cat", "/data/copied") == "via cp\n"
        finally:
            daemon.cli("rm", "-f", cid)
        assert daemon.out("run", "--rm", "-v", "data:/data", IMG, "cat", "/data/copied") == \
            "via cp\n"
        deadline = time.monotonic() + 10
        while daemon.cli("volume", "rm", "data").returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        daemon.cli("volume", "rm", "-f", "data")


def _docker(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    """The real docker CLI against the session daemon (which has networks and volumes)."""
    if shutil.which("docker") is None:
        pytest.skip("docker CLI not installed")
    return subprocess.run(["docker", "-H", f"unix://{daemon.socket}", *args],
                          capture_output=True, text=True, timeout=180)


def test_docker_cli_volume_size_inspect_and_system_df(daemon: Daemon) -> None:
    """`docker volume create --opt size=` bounds the volume the guest sees (statfs through 9p
    is the volume's own filesystem, in a cloned VM); inspect shows the size; `system df`
    lists the volume; the local driver's mount options are refused with a reason; `--mount
    volume-opt=size=` sizes the volume it creates."""
    assert _docker(daemon, "volume", "create", "--opt", "size=64m", "sized").returncode == 0
    try:
        info = json.loads(_docker(daemon, "volume", "inspect", "sized").stdout)[0]
        assert info["Options"] == {"size": "64m"} and info["Driver"] == "local"
        ran = _docker(daemon, "run", "--rm", "-v", "sized:/data", IMG, "sh", "-c",
                      "echo x > /data/f && stat -f -c '%b %S' /data")
        total_blocks, block_size = (int(n) for n in ran.stdout.split())
        assert 40 << 20 < total_blocks * block_size <= 64 << 20, ran
        df = _docker(daemon, "system", "df")
        assert df.returncode == 0 and "Local Volumes" in df.stdout, df
        verbose = _docker(daemon, "system", "df", "-v")
        assert verbose.returncode == 0 and "sized" in verbose.stdout, verbose
        refused = _docker(daemon, "volume", "create", "--opt", "type=tmpfs", "--opt",
                          "device=tmpfs", "tmp")
        assert refused.returncode != 0 and "not supported" in refused.stderr, refused
        created = _docker(daemon, "create", "--mount",
                          "type=volume,src=bymount,dst=/d,volume-opt=size=48m", IMG, "true")
        assert created.returncode == 0, created
        _docker(daemon, "rm", created.stdout.strip())
        info = json.loads(_docker(daemon, "volume", "inspect", "bymount").stdout)[0]
        assert info["Options"] == {"size": "48m"}
    finally:
        _docker(daemon, "volume", "rm", "sized", "bymount")


def test_a_containers_nic_has_no_ipv6_and_its_loopback_keeps_it(daemon: Daemon) -> None:
    """As dockerd on an IPv4-only network: no link-local address, duplicate detection or MLD
    on the NIC (the host drops a guest's IPv6 anyway); `::1` stays, and `::` can be bound."""
    out = daemon.out("run", "--rm", IMG, "sh", "-c",
                     "cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6; echo ==; "
                     "ip -6 addr show dev eth0; echo ==; ip -6 addr show dev lo; echo ==; "
                     "httpd -p '[::]:8080' -h / && netstat -ltn | grep 8080")
    flag, nic, loopback, listening = out.split("==")
    assert flag.strip() == "1", out
    assert "inet6" not in nic, out
    assert "inet6 ::1" in loopback, out
    assert ":::8080" in listening, out
