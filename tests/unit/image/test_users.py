"""resolve_user: docker's --user forms, read from the container's files only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from steelcup.errors import InvalidArgument
from steelcup.image.users import User, resolve_user

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n" \
         "nobody:x:65534:65534::/:/bin/false\n"
GROUP = "root:x:0:\nwheel:x:10:app,root\nappgrp:x:1001:\nstaff:x:50:app\nnogroup:x:65534:\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    return tmp_path


def ids(user: User) -> tuple[int, int, list[int]]:
    return user.uid, user.gid, list(user.groups)


def test_forms(root: Path) -> None:
    assert ids(resolve_user(root, "")) == (0, 0, [10])
    assert ids(resolve_user(root, "app")) == (1000, 1001, [10, 50])
    assert ids(resolve_user(root, "1000")) == (1000, 1001, [10, 50])
    assert ids(resolve_user(root, "4242")) == (4242, 0, [])
    assert ids(resolve_user(root, "app:staff")) == (1000, 50, [])
    assert ids(resolve_user(root, "1000:77")) == (1000, 77, [])
    assert ids(resolve_user(root, "nobody")) == (65534, 65534, [])


def test_errors(root: Path) -> None:
    with pytest.raises(InvalidArgument,
                       match="unable to find user ghost: no matching entries in passwd file"):
        resolve_user(root, "ghost")
    with pytest.raises(InvalidArgument,
                       match="unable to find group nogrp: no matching entries in group file"):
        resolve_user(root, "app:nogrp")
    with pytest.raises(InvalidArgument):
        resolve_user(root, "99999999999")
    with pytest.raises(InvalidArgument):
        resolve_user(root, "app:")


def test_missing_files(tmp_path: Path) -> None:
    assert ids(resolve_user(tmp_path, "123:45")) == (123, 45, [])
    with pytest.raises(InvalidArgument, match="unable to find user app"):
        resolve_user(tmp_path, "app")


def test_symlinks_never_leave_rootfs(tmp_path: Path) -> None:
    outside = tmp_path / "host"
    (outside / "etc").mkdir(parents=True)
    (outside / "etc/passwd").write_text("evil:x:0:0::/:/bin/sh\n")
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").symlink_to(outside / "etc/passwd")  # absolute: resolved inside root
    with pytest.raises(InvalidArgument):
        resolve_user(root, "evil")
    os.unlink(root / "etc/passwd")
    (root / "etc/passwd").symlink_to("../../../host/etc/passwd")  # .. clamps at the root
    with pytest.raises(InvalidArgument):
        resolve_user(root, "evil")
    (root / "etc/passwd").unlink()
    (root / "real").mkdir()
    (root / "real/passwd").write_text("inside:x:7:8::/:/bin/sh\n")
    (root / "etc/passwd").symlink_to("/real/passwd")  # absolute link within the rootfs works
    assert ids(resolve_user(root, "inside")) == (7, 8, [])
    (root / "etc/group").symlink_to("group")  # loop
    assert ids(resolve_user(root, "inside:9")) == (7, 9, [])


def test_etc_symlink_to_host(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "etc").symlink_to("/etc")  # /etc inside the rootfs = rootfs/etc = itself: a loop
    with pytest.raises(InvalidArgument):
        resolve_user(root, "root")


def test_group_add_appends_gids_and_names_of_the_containers_group_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir(exist_ok=True)
    (tmp_path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\naudio:x:29:\n")
    assert ids(resolve_user(tmp_path, "", ("audio", "1234", "29"))) == (0, 0, [29, 1234])
    with pytest.raises(InvalidArgument, match="Unable to find group video"):
        resolve_user(tmp_path, "", ("video",))


def test_home_is_the_passwd_entrys_or_runcs_default(root: Path, tmp_path: Path) -> None:
    assert resolve_user(root, "").home == "/root"
    assert resolve_user(root, "app:staff").home == "/home/app"
    assert resolve_user(root, "1000").home == "/home/app"
    assert resolve_user(root, "4242").home == "/"  # not in passwd
    (root / "etc/passwd").write_text("blank:x:5:5:::/bin/sh\n")
    assert resolve_user(root, "blank").home == "/"
    (tmp_path / "bare").mkdir()
    assert resolve_user(tmp_path / "bare", "0").home == "/"  # no passwd file
