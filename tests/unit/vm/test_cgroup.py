"""Where a VM's memory cgroup goes and what is written to it, for cgroup v2 and v1 (hybrid)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from steelcup.vm import cgroup
from steelcup.vm.cgroup import Hierarchy, Layout, MemoryCgroups, Write

# This machine: cgroup v1 controllers, cgroup2 at /sys/fs/cgroup/unified without memory.
HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_SELF = """\
9:name=systemd:/
4:memory:/process_api/1e15
1:cpu:/
0::/
"""
V2_MOUNTINFO = """\
25 21 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""
V2_SELF = "0::/system.slice/steelcup.service\n"


def _controllers(offered: dict[str, str]) -> object:
    return lambda mount: offered.get(str(mount), "")


def test_a_hybrid_host_uses_the_v1_memory_hierarchy() -> None:
    h = cgroup.find_hierarchy(HYBRID_MOUNTINFO, HYBRID_SELF,
                              _controllers({"/sys/fs/cgroup/unified": ""}))  # type: ignore[arg-type]
    assert h == Hierarchy(Layout.V1, Path("/sys/fs/cgroup/memory"),
                          PurePosixPath("/process_api/1e15"))
    # Next to the daemon's cgroup, one directory per daemon (state root).
    assert cgroup.vm_parent(h, "vms-abc") == Path(
        "/sys/fs/cgroup/memory/process_api/steelcup/vms-abc")


def test_a_v2_host_uses_the_unified_hierarchy() -> None:
    h = cgroup.find_hierarchy(V2_MOUNTINFO, V2_SELF, _controllers(
        {"/sys/fs/cgroup": "cpuset cpu io memory hugetlb pids rdma misc\n"}))  # type: ignore[arg-type]
    assert h == Hierarchy(Layout.V2, Path("/sys/fs/cgroup"),
                          PurePosixPath("/system.slice/steelcup.service"))
    # A sibling, not a child: a v2 cgroup with processes cannot have controlled children.
    assert cgroup.vm_parent(h, "vms-abc") == Path("/sys/fs/cgroup/system.slice/steelcup/vms-abc")


def test_v2_is_preferred_when_it_offers_memory_even_with_v1_mounts() -> None:
    h = cgroup.find_hierarchy(HYBRID_MOUNTINFO.replace(",memory", ",blkio"), HYBRID_SELF,
                              _controllers({"/sys/fs/cgroup/unified": "memory pids"}))  # type: ignore[arg-type]
    assert h is not None and h.layout is Layout.V2 and h.mount == Path("/sys/fs/cgroup/unified")
    assert cgroup.vm_parent(h, "x") == Path("/sys/fs/cgroup/unified/steelcup/x")  # own is "/"


def test_no_memory_controller_anywhere() -> None:
    no_v1_memory = HYBRID_MOUNTINFO.replace(",memory", ",blkio")
    assert cgroup.find_hierarchy(no_v1_memory, HYBRID_SELF,
                                 _controllers({})) is None  # type: ignore[arg-type]
    assert cgroup.find_hierarchy("", "", _controllers({})) is None  # type: ignore[arg-type]


def test_own_path_is_relative_to_what_the_mount_shows() -> None:
    # A container's bind of its own subtree, or a cgroup namespace rooted at /a.
    mountinfo = "40 31 0:32 /a /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    h = cgroup.find_hierarchy(mountinfo, "4:memory:/a/b/c\n",
                              _controllers({}))  # type: ignore[arg-type]
    assert h is not None and h.own == PurePosixPath("/b/c")
    assert cgroup.vm_parent(h, "i") == Path("/sys/fs/cgroup/memory/b/steelcup/i")
    h = cgroup.find_hierarchy(mountinfo, "4:memory:/elsewhere\n",
                              _controllers({}))  # type: ignore[arg-type]
    assert h is not None and h.own == PurePosixPath("/")


def test_own_cgroups() -> None:
    assert cgroup.own_cgroups(HYBRID_SELF) == (PurePosixPath("/"),
                                               PurePosixPath("/process_api/1e15"))
    assert cgroup.own_cgroups(V2_SELF) == (PurePosixPath("/system.slice/steelcup.service"), None)
    assert cgroup.own_cgroups("3:cpu,memory:/x\n") == (None, PurePosixPath("/x"))


def test_the_limit_is_guest_ram_plus_overhead() -> None:
    assert cgroup.limit_bytes(128, 64) == 192 << 20
    assert cgroup.overhead_mib("tcg", 32) == cgroup.QEMU_OVERHEAD_MIB + 32
    assert cgroup.overhead_mib("kvm", 32) == cgroup.QEMU_OVERHEAD_MIB  # no translation cache


def test_limit_writes_v2_forbid_swap_and_kill_the_whole_group() -> None:
    assert cgroup.limit_writes(Layout.V2, 1000) == (
        Write("memory.max", "1000"),
        Write("memory.swap.max", "0", optional=True),
        Write("memory.oom.group", "1", optional=True),
    )


def test_limit_writes_v1_keep_memsw_at_least_memory_whether_raising_or_lowering() -> None:
    writes = cgroup.limit_writes(Layout.V1, 1000)
    assert [(w.file, w.optional) for w in writes] == [
        ("memory.memsw.limit_in_bytes", True),  # raising: memsw must go up first
        ("memory.limit_in_bytes", False),
        ("memory.memsw.limit_in_bytes", True),  # lowering (or from unlimited): after
    ]
    assert {w.value for w in writes} == {"1000"}


def test_oom_kill_counts_in_either_layout() -> None:
    v2_events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 1\n"
    v1_oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"
    assert cgroup.oom_kills(v2_events) == 1
    assert cgroup.oom_kills(v1_oom_control) == 3
    assert cgroup.oom_kills("oom_kill_disable 0\nunder_oom 0\n") == 0  # kernels before 4.13
    assert cgroup.events_file(Layout.V2) == "memory.events"
    assert cgroup.events_file(Layout.V1) == "memory.oom_control"


def test_set_limit_writes_the_files_and_skips_absent_optional_ones(tmp_path: Path) -> None:
    cgs = MemoryCgroups(Layout.V2, tmp_path, overhead_mib=64)
    vm = cgs.vm("clone-1")
    vm.path.mkdir()
    (vm.path / "memory.max").write_text("max")  # no swap accounting: no memory.swap.max
    vm.set_limit(256)
    assert (vm.path / "memory.max").read_text() == str(320 << 20)
    assert vm.mem_mib == 256
    (vm.path / "memory.max").unlink()
    with pytest.raises(cgroup.CgroupError, match="memory.max"):
        vm.set_limit(512)


def test_a_vm_lent_to_a_containers_cgroup_limits_it_and_leaves_it(tmp_path: Path) -> None:
    cgs = MemoryCgroups(Layout.V2, tmp_path / "parent", overhead_mib=64)
    vm = cgs.vm("clone-1")
    vm.path.mkdir(parents=True)
    (vm.path / "memory.max").write_text("max")
    vm.set_limit(256)
    container = tmp_path / "kubepods" / "c1"
    container.mkdir(parents=True)
    with pytest.raises(cgroup.CgroupError, match="memory.max"):  # no memory controller there
        vm.lend_to(container)
    assert (vm.path, vm.borrowed) == (cgs.parent / "clone-1", False)
    (container / "memory.max").write_text("max")
    assert vm.lend_to(container) == cgs.parent / "clone-1"
    assert (container / "memory.max").read_text() == str(320 << 20)
    assert vm.path == container and vm.borrowed
    assert vm.remove() and container.is_dir()  # the container's owner removes it
    vm.take_back(cgs.parent / "clone-1")
    assert (vm.path, vm.borrowed) == (cgs.parent / "clone-1", False)


def test_vm_names_stay_below_the_parent(tmp_path: Path) -> None:
    cgs = MemoryCgroups(Layout.V1, tmp_path, overhead_mib=64)
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError):
            cgs.vm(bad)


def test_remove_keeps_the_oom_count_and_stale_cgroups_go(tmp_path: Path) -> None:
    cgs = MemoryCgroups(Layout.V1, tmp_path / "parent", overhead_mib=64)
    (tmp_path / "parent").mkdir()
    vm = cgs.vm("clone-1")
    vm.path.mkdir()
    (vm.path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    assert vm.oom_kills() == 1
    with pytest.raises(OSError):
        vm.remove()  # a plain directory with a file: ENOTEMPTY is an error, not EBUSY
    (vm.path / "memory.oom_control").unlink()  # (cgroupfs files go with their directory)
    assert vm.remove() and not vm.path.exists()
    assert vm.oom_kills() == 1  # counted before the cgroup went
    assert vm.remove()  # already gone
    (tmp_path / "parent" / "stale-a").mkdir()
    (tmp_path / "parent" / "stale-b").mkdir()
    assert cgs.remove_stale() == ["stale-a", "stale-b"]
    cgs.close()
    assert not (tmp_path / "parent").exists()


def test_mount_args_for_a_namespace_without_cgroup_mounts() -> None:
    assert cgroup.mount_args(HYBRID_SELF) == ("cgroup", "memory")
    assert cgroup.mount_args(V2_SELF) == ("cgroup2", "")
    assert cgroup.mount_args("") is None


def test_stale_sweep_keeps_the_cgroups_of_vms_that_outlived_the_daemon(tmp_path: Path) -> None:
    cgs = MemoryCgroups(Layout.V1, tmp_path / "parent", overhead_mib=64)
    for name in ("kept-1", "stale-1"):
        (tmp_path / "parent" / name).mkdir(parents=True)
    assert cgs.remove_stale(keep={"kept-1"}) == ["stale-1"]
    assert (tmp_path / "parent" / "kept-1").is_dir()
