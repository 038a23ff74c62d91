"""The program lookup `create` does in the bundle's root, as runc: found through PATH or by
path, symlinks resolved inside the root (never on the host), runc's words when it fails."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from steelcup.errors import InvalidArgument
from steelcup.oci.lookup import check_program, resolve_in_root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    (r / "bin").mkdir(parents=True)
    (r / "usr" / "bin").mkdir(parents=True)
    (r / "etc").mkdir()
    busybox = r / "bin" / "busybox"
    busybox.write_text("#!")
    busybox.chmod(0o755)
    (r / "bin" / "sh").symlink_to("busybox")
    (r / "usr" / "bin" / "env").symlink_to("/bin/busybox")  # absolute: inside the root
    (r / "usr" / "bin" / "escape").symlink_to("../../../../../../bin/true")
    (r / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\n")
    (r / "loop").symlink_to("loop")
    return r


def test_paths_resolve_inside_the_root(root: Path) -> None:
    assert resolve_in_root(root, "/usr/bin/env") == root / "bin" / "busybox"
    assert resolve_in_root(root, "/bin/sh") == root / "bin" / "busybox"
    # `..` stops at the root: the host's /bin/true is not reached
    assert resolve_in_root(root, "/usr/bin/escape") is None
    assert resolve_in_root(root, "/loop") is None
    assert resolve_in_root(root, "/nope/x") is None


def test_found_by_path_search_and_by_path(root: Path) -> None:
    env = ["PATH=/usr/bin:/bin"]
    check_program(root, "sh", env)
    check_program(root, "env", env)
    check_program(root, "/bin/sh", env)
    check_program(root, "bin/sh", env, cwd="/")
    check_program(root, "busybox", [])  # the default PATH


@pytest.mark.parametrize(("argv0", "words"), [
    ("nonexistent", 'exec: "nonexistent": executable file not found in $PATH'),
    ("passwd", 'exec: "passwd": executable file not found in $PATH'),
    ("escape", 'exec: "escape": executable file not found in $PATH'),
    ("/nope", 'exec: "/nope": stat /nope: no such file or directory'),
    ("/etc/passwd", 'exec: "/etc/passwd": permission denied'),
    ("/etc", 'exec: "/etc": permission denied'),
])
def test_failures_say_what_runc_says(root: Path, argv0: str, words: str) -> None:
    assert os.access("/bin/true", os.X_OK)  # what `escape` would reach on the host
    with pytest.raises(InvalidArgument) as failed:
        check_program(root, argv0, ["PATH=/usr/bin:/bin:/etc"])
    assert str(failed.value) == words
