"""HostConfig.SteelcupCgroup on a real VM: the container's QEMU is in the named cgroup in
every hierarchy below /sys/fs/cgroup (made where missing; a fresh VM boots there, a warm one
is moved), its CPU shows there, the memory hierarchy's cgroup carries the VM's limit (and a
fresh VM's whole memory), and the cgroup empties when the VM ends and is left for its owner.
A path that would leave /sys/fs/cgroup is refused (the tenant's 403:
tests/unit/tenancy/test_tenant_host_root.py, over the real TLS listener)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from steelcup.cgroups import paths, place
from steelcup.cli.client import ApiClient
from steelcup.errors import InvalidArgument
from tests.vm.support import (
    BUSYBOX_TAR,
    Daemon,
    leftovers_of,
    need_assets,
    start_daemon,
    stop_daemon,
    wait_until,
)

IMG = "steelcup/busybox"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    need_assets()
    base = tmp_path_factory.mktemp("hostcg")
    # no netns of the test's: `ip netns exec` would hide /sys/fs/cgroup (no networking needed)
    d = start_daemon(base / "root", base / "run" / "steelcup.sock")
    try:
        d.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        yield d
    finally:
        stop_daemon(d)
        problems = leftovers_of(base / "root")
        assert not problems, "after daemon shutdown: " + "\n".join(problems)


def _procs(directory: Path) -> list[int]:
    return [int(p) for p in (directory / "cgroup.procs").read_text().split()]


def _cpu_ns(hierarchy: paths.Hierarchy, directory: Path) -> int | None:
    if hierarchy.version == 2:
        for line in (directory / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) * 1000
    if "cpuacct" in hierarchy.controllers:
        return int((directory / "cpuacct.usage").read_text())
    return None


def _memory_bytes(hierarchy: paths.Hierarchy, directory: Path) -> int | None:
    name = "memory.current" if hierarchy.version == 2 else "memory.usage_in_bytes"
    return int((directory / name).read_text()) if (directory / name).exists() else None


# A pod sandbox's VM has a share no pooled VM has: it boots fresh, in the cgroup from its
# first instruction, so all its memory is counted there. A plain one may be a warm VM, moved.
@pytest.mark.parametrize("kind", ["any", "fresh"])
def test_the_vms_qemu_is_in_the_containers_cgroup(daemon: Daemon, kind: str) -> None:
    cgroup = f"/sct-{os.getpid()}/vm-cg-{kind}"
    found = paths.hierarchies(Path("/proc/self/mountinfo").read_text())
    assert found, "no cgroup hierarchy below /sys/fs/cgroup on this machine"
    api = ApiClient(daemon.socket)
    host: dict[str, object] = {"SteelcupCgroup": cgroup, "Memory": 128 << 20}
    if kind == "fresh":
        host["SteelcupPodSandbox"] = True
    created = api.post_json("/containers/create", {"name": f"cg-{kind}"}, {
        "Image": IMG, "Cmd": ["sh", "-c", "while :; do :; done"], "HostConfig": host})
    cid = str(created["Id"])
    try:
        daemon.out("start", cid)
        dirs = {h: Path(paths.directory(h, cgroup)) for h in found}
        (qemu,) = set(_procs(dirs[found[0]]))
        assert Path(f"/proc/{qemu}/comm").read_text().startswith("qemu"), qemu
        for directory in dirs.values():  # every hierarchy, and nothing else there
            assert _procs(directory) == [qemu], directory
        assert f":{cgroup}\n" in Path(f"/proc/{qemu}/cgroup").read_text()
        # the busy guest's CPU is the cgroup's
        cpu = [(h, d) for h, d in dirs.items() if _cpu_ns(h, d) is not None]
        assert cpu, found
        first = _cpu_ns(*cpu[0])
        time.sleep(1.0)
        assert (_cpu_ns(*cpu[0]) or 0) - (first or 0) > 100_000_000  # > 0.1 s of 1 s
        # the memory hierarchy's cgroup is the VM's memory cgroup: its limit is the VM's
        # (128 MiB of guest RAM plus QEMU's overhead), not unlimited
        for h, d in dirs.items():
            limit_file = ("memory.max" if h.version == 2 else "memory.limit_in_bytes")
            if (d / limit_file).exists() and (h.version == 1 or (d / "memory.max").exists()):
                limit = int((d / limit_file).read_text().replace("max", str(1 << 62)))
                assert 128 << 20 < limit < 1 << 40, (d, limit)
        if kind == "fresh":  # its boot (kernel, initramfs, guest RAM touched) is counted there
            memory = [b for h, d in dirs.items() if (b := _memory_bytes(h, d)) is not None]
            assert memory and memory[0] > 32 << 20, memory
        daemon.out("rm", "-f", cid)
        cid = ""
        wait_until(lambda: all(not _procs(d) for d in dirs.values()),
                   "the cgroup empty after the VM ended", timeout_s=30)
        assert all(d.is_dir() for d in dirs.values())  # its owner's to remove
    finally:
        if cid:
            daemon.cli("rm", "-f", cid)
        wait_until(lambda: place.remove(cgroup, found) == [], "the test's cgroup removed",
                   timeout_s=30)
        if kind == "fresh":
            place.remove(f"/sct-{os.getpid()}", found)


def test_a_parent_limit_below_the_vms_needs(daemon: Daemon) -> None:
    """The engine's limit on a parent (the kubelet's pod cgroup) bounds QEMU as a whole: a VM
    booted under too small a limit fails to start, saying why; a warm VM moved there is
    OOM-killed once the guest uses the memory, and its container ends as docker's would."""
    parent = f"/sct-{os.getpid()}/small"
    found = paths.hierarchies(Path("/proc/self/mountinfo").read_text())
    memory = next((p for p in place.make(parent, found)
                   if p.hierarchy.version == 1 and "memory" in p.hierarchy.controllers), None)
    if memory is None:
        pytest.skip("written for a v1 memory hierarchy (this machine's)")
    (memory.directory / "memory.limit_in_bytes").write_text(str(48 << 20))
    api = ApiClient(daemon.socket)
    cids = []
    try:
        for kind, extra in (("fresh", {"SteelcupPodSandbox": True}), ("warm", {})):
            cids.append(str(api.post_json("/containers/create", None, {
                "Image": IMG, "Cmd": ["sh", "-c", "head -c 100000000 /dev/zero | tail"],
                "HostConfig": {"SteelcupCgroup": f"{parent}/{kind}", **extra}})["Id"]))
        fresh = daemon.cli("start", cids[0])
        assert fresh.returncode != 0
        assert b"killed by the host's OOM killer" in fresh.stderr, fresh.stderr
        daemon.out("start", cids[1])
        wait_until(lambda: daemon.out("inspect", "-f", "{{.State.Status}}", cids[1]).strip()
                   == "exited", "the warm VM's end", timeout_s=60)
        assert daemon.out("inspect", "-f", "{{.State.ExitCode}} {{.State.OOMKilled}}",
                          cids[1]).split() == ["137", "true"]
    finally:
        for cid in cids:
            daemon.cli("rm", "-f", cid)
        for leaf in (f"{parent}/fresh", f"{parent}/warm"):
            wait_until(lambda leaf=leaf: place.remove(leaf, found) == [],
                       "the test's cgroups removed", timeout_s=30)
        place.remove(parent, found)
        place.remove(f"/sct-{os.getpid()}", found)


def test_a_path_out_of_the_cgroup_tree_is_refused(daemon: Daemon) -> None:
    api = ApiClient(daemon.socket)
    for bad, text in (("/a/../../../etc", "'..' components"), ("relative/x", "absolute")):
        with pytest.raises(InvalidArgument, match=text):
            api.post_json("/containers/create", None, {
                "Image": IMG, "Cmd": ["true"], "HostConfig": {"SteelcupCgroup": bad}})
    assert daemon.out("ps", "-aq").strip() == ""


def test_a_live_restore_keeps_the_vm_in_its_cgroup(tmp_path: Path) -> None:
    need_assets()
    cgroup = f"/sct-{os.getpid()}-lr/vm-cg"
    found = paths.hierarchies(Path("/proc/self/mountinfo").read_text())
    root, sock = tmp_path / "root", tmp_path / "run" / "steelcup.sock"
    d = start_daemon(root, sock, extra_args=("--live-restore",))
    cid = ""
    try:
        d.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        cid = str(ApiClient(d.socket).post_json("/containers/create", None, {
            "Image": IMG, "Cmd": ["sleep", "1000"],
            "HostConfig": {"SteelcupCgroup": cgroup}})["Id"])
        d.out("start", cid)
        directory = Path(paths.directory(found[0], cgroup))
        (qemu,) = _procs(directory)
        stop_daemon(d)
        assert _procs(directory) == [qemu]  # the VM outlived the daemon, where it was
        d = start_daemon(root, sock, extra_args=("--live-restore",))
        assert d.out("inspect", "-f", "{{.State.Running}}", cid).strip() == "true"
        assert _procs(directory) == [qemu]
        assert d.out("exec", cid, "echo", "still here") == "still here\n"
        d.out("rm", "-f", cid)
        cid = ""
        wait_until(lambda: not _procs(directory), "the cgroup empty", timeout_s=30)
    finally:
        if cid:
            d.cli("rm", "-f", cid)
        stop_daemon(d)
        problems = leftovers_of(root)
        wait_until(lambda: place.remove(cgroup, found) == [], "the test's cgroup removed",
                   timeout_s=30)
        place.remove(f"/sct-{os.getpid()}-lr", found)
        assert not problems, "after daemon shutdown: " + "\n".join(problems)
