"""Placing swarm secrets and configs for a run: targets checked, owner and mode honoured, no
symlink in the container's root ever followed out of it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from steelcup.errors import InvalidArgument
from steelcup.runtime.swarmfiles import (
    SwarmFile,
    config_target,
    secret_target,
    write_configs,
    write_secrets,
)

DATA = {"s1": b"hunter2", "c1": b"port=80\n"}


def data_of(kind: str, object_id: str) -> bytes:
    return DATA[object_id]


@pytest.mark.parametrize(("name", "path"), [
    ("db", "/run/secrets/db"), ("/run/secrets/db", "/run/secrets/db"),
    ("a.b-c", "/run/secrets/a.b-c"),
])
def test_secret_targets(name: str, path: str) -> None:
    assert secret_target(name) == path


@pytest.mark.parametrize("name", ["", "..", "../x", "a/b", "/etc/passwd", "/run/secrets/../x",
                                  "/run/secrets/"])
def test_secret_targets_outside_run_secrets_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument, match="secret target"):
        secret_target(name)


@pytest.mark.parametrize(("name", "path"), [
    ("app.conf", "/app.conf"), ("/etc/app/app.conf", "/etc/app/app.conf"),
    ("/etc//x", "/etc/x"),
])
def test_config_targets(name: str, path: str) -> None:
    assert config_target(name) == path


@pytest.mark.parametrize("name", ["/etc/../../x", "..", "/", "/etc/", "/proc/1/x", "/sys/x",
                                  "/dev/sda", "/run/secrets/x"])
def test_bad_config_targets_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument):
        config_target(name)


def test_secrets_dir_holds_each_with_its_owner_and_mode(tmp_path: Path) -> None:
    out = tmp_path / "run" / "secrets"
    write_secrets(out, [SwarmFile("secret", "s1", "db", "/run/secrets/db", 1000, 100, 0o400)],
                  data_of, None)
    info = (out / "db").stat()
    assert (out / "db").read_bytes() == b"hunter2"
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o400, 1000, 100)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    write_secrets(out, [], data_of, None)  # a new run starts from nothing
    assert list(out.iterdir()) == []


def test_configs_are_written_below_the_root_with_owner_and_mode(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "old.conf").symlink_to("/etc/shadow")  # replaced, never followed
    write_configs(root, [SwarmFile("config", "c1", "c", "/etc/app/app.conf", 5, 6, 0o640),
                         SwarmFile("config", "c1", "c", "/etc/old.conf", 0, 0, 0o444)],
                  data_of, None)
    conf = root / "etc" / "app" / "app.conf"
    assert conf.read_bytes() == b"port=80\n"
    assert (stat.S_IMODE(conf.stat().st_mode), conf.stat().st_uid) == (0o640, 5)
    old = root / "etc" / "old.conf"
    assert not old.is_symlink() and old.read_bytes() == b"port=80\n"


def test_a_symlinked_directory_in_the_image_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "host"
    outside.mkdir()
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "etc").symlink_to(outside)  # the image points /etc at a host path
    with pytest.raises(InvalidArgument, match="not a directory"):
        write_configs(root, [SwarmFile("config", "c1", "c", "/etc/app.conf")], data_of, None)
    assert list(outside.iterdir()) == []


def test_a_container_config_keeps_its_files_across_the_store() -> None:
    from steelcup.runtime.model import ContainerConfig

    files = (SwarmFile("secret", "s1", "db", "/run/secrets/db", 1, 2, 0o400),
             SwarmFile("config", "c1", "c", "/etc/c"))
    config = ContainerConfig(image="x", image_id="sha256:1", swarm_files=files)
    assert ContainerConfig.from_json(config.to_json()) == config
