"""/etc files are written into the rootfs without following an image's symlinks."""

from __future__ import annotations

from pathlib import Path

import pytest

from steelcup.errors import InvalidArgument
from steelcup.net.etcfiles import write_etc_files


def test_writes_and_replaces_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "etc").mkdir(parents=True)
    outside.mkdir()
    (root / "etc" / "hosts").symlink_to(outside / "victim")
    write_etc_files(root, {"hosts": "127.0.0.1\tlocalhost\n", "hostname": "web\n"})
    assert (root / "etc" / "hosts").read_text() == "127.0.0.1\tlocalhost\n"
    assert not (root / "etc" / "hosts").is_symlink()
    assert not (outside / "victim").exists()
    assert (root / "etc" / "hostname").read_text() == "web\n"


def test_symlinked_etc_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "etc").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InvalidArgument):
        write_etc_files(root, {"hosts": "x"})
    assert list((tmp_path / "elsewhere").iterdir()) == []
    with pytest.raises(InvalidArgument):
        write_etc_files(tmp_path, {"../x": "y"})
