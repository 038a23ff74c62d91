"""steelcup.cgroups.place on directories standing in for hierarchies: every level is made in
every hierarchy, a v1 cpuset level gets its parent's CPUs and nodes, removal takes the leaf
only, and a failed move says where."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from steelcup.cgroups import place
from steelcup.cgroups.paths import Hierarchy


def _hierarchy(tmp_path: Path, name: str, *controllers: str) -> Hierarchy:
    (tmp_path / name).mkdir()
    return Hierarchy(PurePosixPath(tmp_path / name), 1, frozenset(controllers))


def test_make_every_level_in_every_hierarchy_and_remove_the_leaf(tmp_path: Path) -> None:
    found = (_hierarchy(tmp_path, "cpu", "cpu", "cpuacct"),
             _hierarchy(tmp_path, "memory", "memory"))
    placed = place.make("/pods/p1/c1", found)
    assert [p.directory for p in placed] == [tmp_path / "cpu/pods/p1/c1",
                                             tmp_path / "memory/pods/p1/c1"]
    assert place.make("/pods/p1/c1", found) == placed  # there already: fine
    assert place.remove("/pods/p1/c1", found) == []
    assert not (tmp_path / "memory/pods/p1/c1").exists()
    assert (tmp_path / "memory/pods/p1").is_dir()  # the engine's parent stays
    assert place.remove("/pods/p1/c1", found) == []  # gone already: fine
    (tmp_path / "cpu/pods/p1/c1/busy").mkdir(parents=True)  # as a cgroup with a process
    assert place.remove("/pods/p1/c1", found) == [f"{tmp_path}/cpu/pods/p1/c1: "
                                                  "Directory not empty"]


def test_a_cpuset_level_gets_its_parents_cpus_and_nodes(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    cpuset = _hierarchy(tmp_path, "cpuset", "cpuset")
    (tmp_path / "cpuset" / "cpuset.cpus").write_text("0-1\n")
    (tmp_path / "cpuset" / "cpuset.mems").write_text("0\n")
    real_mkdir = Path.mkdir

    def mkdir_as_the_kernel(self: Path, *args: object, **kw: object) -> None:
        real_mkdir(self)  # the kernel's new cpuset cgroup: empty cpus and mems
        for name in ("cpuset.cpus", "cpuset.mems"):
            (self / name).write_text("\n")

    monkeypatch.setattr(Path, "mkdir", mkdir_as_the_kernel)
    place.make("/a/b", (cpuset,))
    for level in ("a", "a/b"):
        assert (tmp_path / "cpuset" / level / "cpuset.cpus").read_text() == "0-1"
        assert (tmp_path / "cpuset" / level / "cpuset.mems").read_text() == "0"


def test_entering_a_missing_cgroup_says_where(tmp_path: Path) -> None:
    placed = (place.Placed(Hierarchy(PurePosixPath(tmp_path), 2, frozenset()),
                           tmp_path / "gone"),)
    with pytest.raises(place.CgroupPlaceError,
                       match=f"cannot move process 1 into the cgroup {tmp_path}/gone"):
        place.enter(placed, 1)
