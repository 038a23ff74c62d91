"""steelcup.cgroups.paths: OCI cgroupsPath forms, the check of HostConfig.SteelcupCgroup and
the directories a path names on cgroup v1, v2 and hybrid hosts (mountinfo text)."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from steelcup.cgroups.paths import Hierarchy, directory, from_oci, hierarchies, validate
from steelcup.errors import InvalidArgument

# this test machine's layout: v1 controllers, name=systemd, and the unified tree (hybrid)
HYBRID = """\
30 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,relatime shared:10 - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:13 - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/cpuset rw,nosuid shared:14 - cgroup cgroup rw,cpuset,clone_children
36 24 0:30 / /tmp/memory-again rw,nosuid shared:13 - cgroup cgroup rw,memory
37 24 0:30 /some/ns /sys/fs/cgroup/nsmem rw shared:15 - cgroup cgroup rw,pids
"""
UNIFIED = "29 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev shared:4 - cgroup2 cgroup2 rw\n"


def test_a_hybrid_hosts_hierarchies_once_each_and_only_below_sys_fs_cgroup() -> None:
    found = hierarchies(HYBRID)
    assert found == (
        Hierarchy(PurePosixPath("/sys/fs/cgroup/unified"), 2, frozenset()),
        Hierarchy(PurePosixPath("/sys/fs/cgroup/systemd"), 1, frozenset({"name=systemd"})),
        Hierarchy(PurePosixPath("/sys/fs/cgroup/cpu,cpuacct"), 1, frozenset({"cpu", "cpuacct"})),
        Hierarchy(PurePosixPath("/sys/fs/cgroup/memory"), 1, frozenset({"memory"})),
        Hierarchy(PurePosixPath("/sys/fs/cgroup/cpuset"), 1, frozenset({"cpuset"})),
    )  # not the second memory mount, nor one whose root is not the hierarchy's
    assert [str(directory(h, "/k8s.io/abc")) for h in found[2:4]] == [
        "/sys/fs/cgroup/cpu,cpuacct/k8s.io/abc", "/sys/fs/cgroup/memory/k8s.io/abc"]


def test_a_unified_host_has_one_hierarchy() -> None:
    (only,) = hierarchies(UNIFIED)
    assert only.version == 2
    assert directory(only, "/kubepods/pod1/c1") == PurePosixPath("/sys/fs/cgroup/kubepods/pod1/c1")


def test_no_cgroup_mount_no_hierarchy() -> None:
    assert hierarchies("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n") == ()


@pytest.mark.parametrize(("given", "normal"), [
    ("/k8s.io/abc", "/k8s.io/abc"),
    ("/kubepods//besteffort/pod1/", "/kubepods/besteffort/pod1"),
])
def test_valid_paths_are_normalised(given: str, normal: str) -> None:
    assert validate(given) == normal


@pytest.mark.parametrize(("given", "text"), [
    ("", "must be a cgroup path"),
    ("k8s.io/abc", "absolute"),
    ("/", "below the root"),
    ("/a/../../etc", r"'\.\.' components"),
    ("/a/./b", r"'\.\.' components"),
    ("/a/b\nc", "control characters"),
    ("/" + "a" * 1100, "longer than"),
])
def test_bad_paths_are_refused_with_the_reason(given: str, text: str) -> None:
    with pytest.raises(InvalidArgument, match=text):
        validate(given)


@pytest.mark.parametrize(("oci", "systemd", "path"), [
    ("/k8s.io/abc", False, "/k8s.io/abc"),
    ("/libpod_parent/libpod-abc", False, "/libpod_parent/libpod-abc"),
    ("k8s.io/abc", False, "/k8s.io/abc"),  # relative: from the root
    ("kubepods-besteffort-pod1.slice:cri-containerd:abc", True,
     "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/"
     "cri-containerd-abc.scope"),
    ("machine.slice:libpod:abc", False, "/machine.slice/libpod-abc.scope"),  # told by form
    (":cri-containerd:abc", True, "/system.slice/cri-containerd-abc.scope"),
    # podman's pod infra container with its systemd cgroup manager
    ("machine-libpod_pod_p1.slice:libpod:abc", True,
     "/machine.slice/machine-libpod_pod_p1.slice/libpod-abc.scope"),
    ("-.slice::abc", True, "/abc.scope"),
])
def test_oci_cgroups_paths(oci: str, systemd: bool, path: str) -> None:
    assert from_oci(oci, systemd) == path


@pytest.mark.parametrize(("oci", "systemd", "text"), [
    ("/a/../b", False, r"'\.\.' components"),
    ("/a/b", True, "slice:prefix:name"),  # a path where systemd's form is due
    ("a--b.slice:p:n", True, "not a valid slice name"),
    ("notaslice:p:n", True, "not a systemd slice name"),
    ("x.slice:p:", True, "unit name characters"),
    ("x.slice:p:n/m", True, "unit name characters"),
    ("x.slice:p:y.slice", True, "not supported"),
])
def test_bad_oci_cgroups_paths(oci: str, systemd: bool, text: str) -> None:
    with pytest.raises(InvalidArgument, match=text):
        from_oci(oci, systemd)
