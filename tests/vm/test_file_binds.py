"""Single-file binds and a pod member's mounts, in real VMs through the daemon: a file bound with
`-v FILE:PATH` stays live both ways (the container's write is the host's file, the host's change
is seen inside), `:ro` refuses writes, a symlink source is the file it named when bound; a pod
member (HostConfig.SteelcupPodOf) gets a read-only directory and a file bound from its sandbox's
share, as the kubelet's token dir and /dev/termination-log, and another member sees none of it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.vm.support import Daemon, wait_until

pytestmark = pytest.mark.vm

IMG = "steelcup/busybox"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
USER = 1000  # a host user: the same id in the VM, with or without user namespaces


@pytest.fixture()
def api(daemon: Daemon) -> Iterator[httpx.Client]:
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)),
                      base_url="http://steelcup", timeout=180) as client:
        yield client


def _create(api: httpx.Client, cmd: list[str], **host: Any) -> str:
    r = api.post("/containers/create", json={"Image": IMG, "Cmd": cmd, "HostConfig": host})
    assert r.status_code == 201, r.text
    return str(r.json()["Id"])


def _start(api: httpx.Client, cid: str) -> httpx.Response:
    return api.post(f"/containers/{cid}/start")


def _wait(api: httpx.Client, cid: str) -> int:
    r = api.post(f"/containers/{cid}/wait", timeout=180)
    assert r.status_code == 200, r.text
    return int(r.json()["StatusCode"])


def _logs(daemon: Daemon, cid: str) -> str:
    return daemon.out("logs", cid)


def test_a_single_file_bind_is_live_both_ways_and_ro_refuses_writes(
        daemon: Daemon, tmp_path: Path) -> None:
    shared = tmp_path / "shared.txt"
    shared.write_text("from-host\n")
    readonly = tmp_path / "ro.txt"
    readonly.write_text("keep\n")
    os.chmod(tmp_path, 0o755)
    os.chown(shared, USER, USER)  # a user's (host root's can be appended to, not truncated:
    readonly.chmod(0o644)         # docs/kubernetes.md)
    script = ("cat /etc/shared.txt; echo from-ctr > /etc/shared.txt; "
              "while [ \"$(cat /etc/shared.txt)\" != host-again ]; do sleep 0.1; done; "
              "echo seen; echo evil > /ro.txt 2>/dev/null || echo refused; cat /ro.txt")
    cid = daemon.out("run", "-d", "-v", f"{shared}:/etc/shared.txt",
                     "-v", f"{readonly}:/ro.txt:ro", IMG, "sh", "-c", script).strip()
    try:
        wait_until(lambda: shared.read_text() == "from-ctr\n",
                   "the container's write reaches the host's file", timeout_s=60)
        shared.write_text("host-again")  # the same inode: a bind is of the file
        assert daemon.out("wait", cid).strip() == "0"
        assert _logs(daemon, cid).split() == ["from-host", "seen", "refused", "keep"]
        assert readonly.read_text() == "keep\n"
    finally:
        daemon.cli("rm", "-f", cid)


def test_a_symlink_source_is_the_file_it_named_and_a_missing_target_is_made(
        daemon: Daemon, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_text("real\n")
    real.chmod(0o644)
    os.chmod(tmp_path, 0o755)
    link = tmp_path / "link"
    link.symlink_to(real)
    out = daemon.out("run", "--rm", "-v", f"{link}:/new/dir/file:ro", IMG,
                     "sh", "-c", "cat /new/dir/file; test -L /new/dir/file || echo plain")
    assert out.split() == ["real", "plain"]


def test_a_pod_member_gets_a_directory_and_a_file_bound_and_another_member_not(
        daemon: Daemon, api: httpx.Client, tmp_path: Path) -> None:
    """The kubelet's mounts for a member in its sandbox's running VM: a token dir read-only, a
    termination log the container writes and the host reads after it exits."""
    os.chmod(tmp_path, 0o755)
    sa = tmp_path / "sa"
    sa.mkdir(mode=0o755)
    (sa / "token").write_text("tok-123")
    (sa / "token").chmod(0o644)
    term = tmp_path / "termination-log"
    term.write_text("")
    os.chown(term, USER, USER)
    sandbox = _create(api, ["sleep", "1000"], SteelcupPodSandbox=True, NetworkMode="none")
    ids = [sandbox]
    try:
        assert _start(api, sandbox).status_code == 204
        binds = [f"{sa}:{SA_DIR}:ro", f"{term}:/dev/termination-log"]
        script = (f"cat {SA_DIR}/token; echo; "
                  f"touch {SA_DIR}/x 2>/dev/null || echo ro-dir; "
                  "echo 'last words' > /dev/termination-log; "
                  "grep -c ' /run/steelcup' /proc/mounts; exit 2")
        member = _create(api, ["sh", "-c", script], SteelcupPodOf=sandbox, Binds=binds)
        ids.append(member)
        other = _create(api, ["sh", "-c", f"ls {SA_DIR} 2>&1; cat /dev/termination-log; "
                                          "ls /run/steelcup 2>&1; echo other-done"],
                        SteelcupPodOf=sandbox)
        ids.append(other)
        r = _start(api, member)
        assert r.status_code == 204, r.text
        assert _wait(api, member) == 2
        assert _logs(daemon, member).split() == ["tok-123", "ro-dir", "0"]
        assert term.read_text() == "last words\n"  # read on the host after the exit
        assert not (sa / "x").exists()
        # the member's binds are gone from the sandbox's share once it ended
        pod = daemon.root / "containers" / sandbox / "pod"
        wait_until(lambda: not (pod / f"{member}.mounts").exists(),
                   "the member's mounts unbound", timeout_s=30)
        # another member of the same VM sees nothing of them, nor the init's shares
        assert _start(api, other).status_code == 204
        assert _wait(api, other) == 0
        shown = _logs(daemon, other)
        assert "tok-123" not in shown and "last words" not in shown, shown
        assert "No such file" in shown and shown.strip().endswith("other-done"), shown
    finally:
        for cid in reversed(ids):
            api.delete(f"/containers/{cid}", params={"force": "1"})
    left = daemon.out("ps", "-aq")
    assert not any(cid[:12] in left for cid in ids), left
