"""Security groups (issue 15) with real containers in real VMs on one network of the session
daemon, driven through the CLI: ingress allowed only from a CIDR, a live `sg update`, a live
`update --sg-add`, no egress rule allowing nothing out but DNS, an egress rule that leaves one
port open, a remote group that follows its
members, and `sg rm` refused while in use; and, with a daemon of its own, groups, members and
rules across a daemon restart.

Containers on `sgnet`: `srv` (httpd :80, in group `web`), `open` (httpd :80 and :81, in no
group), clients `inside` and `outside` (in no group at first).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.support import (
    BUSYBOX_TAR,
    Daemon,
    delete_netns,
    leftovers_of,
    need_assets,
    new_netns,
    start_daemon,
    stop_daemon,
)

pytestmark = pytest.mark.vm
IMG = "steelcup/busybox"
NET = "sgnet"
SERVE = "mkdir -p /www && echo hello from {name} > /www/index.html && "


def _address(daemon: Daemon, name: str) -> str:
    info = json.loads(daemon.out("inspect", name))[0]
    return str(info["NetworkSettings"]["Networks"][NET]["IPAddress"])


def _get(daemon: Daemon, client: str, url: str) -> bool:
    """One HTTP GET from `client` (5 s at most): whether the page came back."""
    run = daemon.cli("exec", client, "sh", "-c", f"timeout 5 wget -qO- {url}", timeout=60)
    return run.returncode == 0 and b"hello from" in run.stdout


def _until(daemon: Daemon, client: str, url: str, want: bool, within_s: float) -> float:
    """Seconds until `_get` answers `want` (AssertionError after `within_s`)."""
    start = time.monotonic()
    while _get(daemon, client, url) != want:
        assert time.monotonic() - start < within_s, (client, url, want)
    return time.monotonic() - start


def _group(daemon: Daemon, tmp: Path, verb: str, name: str, rules: list[dict[str, object]]
           ) -> None:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps({"description": f"test group {name}", "rules": rules}))
    daemon.out("sg", verb, "-f", str(path), name)


@pytest.fixture(scope="module")
def sgnet(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("sg")
    daemon.out("network", "create", NET)
    names = ("inside", "outside", "open", "srv")
    try:
        for name in ("inside", "outside"):
            daemon.out("run", "-d", "--name", name, "--network", NET, IMG, "sleep", "900")
        daemon.out("run", "-d", "--name", "open", "--network", NET, IMG, "sh", "-c",
                   SERVE.format(name="open") + "httpd -p 81 -h /www && exec httpd -f -p 80 "
                   "-h /www")
        ips = {name: _address(daemon, name) for name in ("inside", "outside", "open")}
        _group(daemon, tmp, "create", "web", [
            {"direction": "ingress", "protocol": "tcp", "ports": 80,
             "remote": f"{ips['inside']}/32"}])
        daemon.out("run", "-d", "--name", "srv", "--network", NET, "--sg", "web", IMG, "sh",
                   "-c", SERVE.format(name="srv") + "exec httpd -f -p 80 -h /www")
        ips["srv"] = _address(daemon, "srv")
        ips["tmp"] = str(tmp)
        yield ips
    finally:
        daemon.cli("rm", "-f", *names)
        for group in ("web", "from-outside", "out80", "clients"):
            daemon.cli("sg", "rm", group)
        daemon.cli("network", "rm", NET)


def test_ingress_only_from_the_allowed_cidr(daemon: Daemon, sgnet: dict[str, str]) -> None:
    url = f"http://{sgnet['srv']}/"
    _until(daemon, "inside", url, True, 60)  # the server is up, and inside is allowed
    assert not _get(daemon, "outside", url)
    assert _get(daemon, "outside", f"http://{sgnet['open']}/")  # outside itself is fine
    group = json.loads(daemon.out("sg", "inspect", "web"))[0]
    srv_id = json.loads(daemon.out("inspect", "srv"))[0]["Id"]
    assert group["Members"] == [srv_id]
    assert "in use" in daemon.cli("sg", "rm", "web").stderr.decode()


def test_no_egress_rule_means_no_way_out_but_dns(daemon: Daemon,
                                                 sgnet: dict[str, str]) -> None:
    """srv's only group (`web`) has no egress rule: hyper.sh's semantics, nothing goes out but
    DNS (and replies, which the previous test's page came back as)."""
    lookup = daemon.cli("exec", "srv", "nslookup", "open", timeout=60)
    assert lookup.returncode == 0 and sgnet["open"] in lookup.stdout.decode()
    assert not _get(daemon, "srv", f"http://{sgnet['open']}/")
    assert _get(daemon, "inside", f"http://{sgnet['open']}/")  # open itself answers


def test_update_sg_add_applies_live(daemon: Daemon, sgnet: dict[str, str]) -> None:
    tmp = Path(sgnet["tmp"])
    url = f"http://{sgnet['srv']}/"
    _group(daemon, tmp, "create", "from-outside", [
        {"direction": "ingress", "protocol": "tcp", "ports": "80-80",
         "remote": f"{sgnet['outside']}/32"}])
    daemon.out("update", "--sg-add", "from-outside", "srv")
    # no restart, and loaded before the command returns: the very next request passes
    assert _get(daemon, "outside", url)
    daemon.out("update", "--sg-rm", "from-outside", "srv")
    assert not _get(daemon, "outside", url)
    assert _get(daemon, "inside", url)  # `web` still lets inside in


def test_sg_update_changes_the_rules_of_running_members(daemon: Daemon,
                                                        sgnet: dict[str, str]) -> None:
    tmp = Path(sgnet["tmp"])
    url = f"http://{sgnet['srv']}/"
    _group(daemon, tmp, "update", "web", [
        {"direction": "ingress", "protocol": "tcp", "ports": 80,
         "remote": f"{sgnet['outside']}/32"}])
    assert _get(daemon, "outside", url)  # at once
    assert not _get(daemon, "inside", url)


def test_an_egress_rule_leaves_only_its_port(daemon: Daemon, sgnet: dict[str, str]) -> None:
    tmp = Path(sgnet["tmp"])
    assert _get(daemon, "inside", "http://open:81/")  # before: any port (and DNS) works
    _group(daemon, tmp, "create", "out80", [{"direction": "egress", "protocol": "tcp",
                                             "ports": 80}])
    daemon.out("update", "--sg-add", "out80", "inside")
    # by name: the network's DNS always passes
    assert not _get(daemon, "inside", "http://open:81/")
    assert _get(daemon, "inside", "http://open:80/")
    assert not _get(daemon, "inside", f"http://{sgnet['open']}:81/")


def test_a_remote_group_follows_its_members(daemon: Daemon, sgnet: dict[str, str]) -> None:
    """srv lets in tcp 80 from members of `clients` only: `inside` gets in while it is one."""
    tmp = Path(sgnet["tmp"])
    url = f"http://{sgnet['srv']}/"
    _group(daemon, tmp, "create", "clients", [])
    _group(daemon, tmp, "update", "web", [
        {"direction": "ingress", "protocol": "tcp", "ports": 80, "remote_group": "clients"}])
    assert not _get(daemon, "inside", url)
    daemon.out("update", "--sg-add", "clients", "inside")
    assert _get(daemon, "inside", url)
    assert not _get(daemon, "outside", url)
    daemon.out("update", "--sg-rm", "clients", "inside")
    assert not _get(daemon, "inside", url)


def test_groups_and_rules_survive_a_daemon_restart(tmp_path: Path) -> None:
    """A daemon of its own: a group and its member are in the state database, and the next
    daemon loads the member's rules before it starts again (nothing is open meanwhile)."""
    need_assets()
    netns = new_netns("sgr")
    root, sock = tmp_path / "root", tmp_path / "run" / "steelcup.sock"
    daemon = start_daemon(root, sock, netns)
    try:
        daemon.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        daemon.out("network", "create", NET)
        daemon.out("run", "-d", "--name", "client", "--network", NET, IMG, "sleep", "900")
        _group(daemon, tmp_path, "create", "web", [
            {"direction": "ingress", "protocol": "tcp", "ports": 80, "remote": "192.0.2.0/24"}])
        daemon.out("run", "-d", "--name", "srv", "--network", NET, "--sg", "web", IMG, "sh",
                   "-c", SERVE.format(name="srv") + "exec httpd -f -p 80 -h /www")
        url = f"http://{_address(daemon, 'srv')}/"
        assert not _get(daemon, "client", url)  # the client is not in 192.0.2.0/24

        stop_daemon(daemon)
        daemon = start_daemon(root, sock, netns)
        group = json.loads(daemon.out("sg", "inspect", "web"))[0]
        assert group["Rules"] == [{"direction": "ingress", "protocol": "tcp", "ports": "80",
                                   "remote": "192.0.2.0/24"}]
        assert group["Members"] == [json.loads(daemon.out("inspect", "srv"))[0]["Id"]]
        daemon.out("start", "client", "srv")
        assert not _get(daemon, "client", url)
        daemon.out("update", "--sg-rm", "web", "srv")
        _until(daemon, "client", url, True, 60)  # the server was refusing, not down
    finally:
        daemon.cli("rm", "-f", "client", "srv")
        stop_daemon(daemon)
        problems = leftovers_of(root, netns=netns)
        delete_netns(netns)
        assert not problems, "\n".join(problems)
