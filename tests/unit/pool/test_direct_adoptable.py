"""DirectSource.adoptable: a VM an earlier daemon left running gets its memory cgroup back,
the daemon's own by name, or the container's (HostConfig.SteelcupCgroup) it was placed in,
which stays borrowed: the new daemon limits the VM there and never removes it."""

from __future__ import annotations

from pathlib import Path

from steelcup.pool.direct import DirectSource
from steelcup.vm.assets import GuestAssets
from steelcup.vm.cgroup import Layout, MemoryCgroups
from steelcup.vm.machine import VmHandle


def _source(tmp_path: Path) -> DirectSource:
    return DirectSource(assets=GuestAssets(tmp_path / "k", tmp_path / "i"), accel="tcg",
                        tcg_tb_mib=64, run_dir=tmp_path / "run",
                        cgroups=MemoryCgroups(Layout.V1, tmp_path / "cg" / "steelcup" / "x",
                                              overhead_mib=96))


def _handle(tmp_path: Path, cgroup: str) -> VmHandle:
    return VmHandle(pid=1, started=1, state_dir=str(tmp_path / "run" / "vm-1"), mem_mib=128,
                    limit_mib=128, cgroup=cgroup)


def test_its_own_cgroup_by_name(tmp_path: Path) -> None:
    source = _source(tmp_path)
    own = str(tmp_path / "cg" / "steelcup" / "x" / "vm-1")
    machine = source.adoptable(_handle(tmp_path, own), tmp_path / "console.log")
    assert machine.cgroup is not None
    assert (str(machine.cgroup.path), machine.cgroup.borrowed) == (own, False)


def test_a_containers_cgroup_stays_borrowed(tmp_path: Path) -> None:
    source = _source(tmp_path)
    container = tmp_path / "cg" / "kubepods" / "pod1" / "abc"
    machine = source.adoptable(_handle(tmp_path, str(container)), tmp_path / "console.log")
    assert machine.cgroup is not None
    assert (machine.cgroup.path, machine.cgroup.borrowed) == (container, True)
    assert (machine.cgroup.layout, machine.cgroup.overhead_mib) == (Layout.V1, 96)
    container.mkdir(parents=True)
    assert machine.cgroup.remove() and container.is_dir()  # its owner's to remove
