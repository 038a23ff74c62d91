"""steelcup-runtime's command line without a daemon: runc's argv shapes parse, --version and
features answer, and errors go where conmon reads them (stderr, and --log as JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steelcup.oci.main import main, parser


def test_runc_argv_shapes_from_conmon_and_containerd_parse() -> None:
    p = parser()
    a = p.parse_args(["--root", "/r", "--log", "/l", "--log-format", "json",
                      "--systemd-cgroup", "create", "--bundle", "/b", "--pid-file", "/p",
                      "--console-socket", "/s", "c1"])
    assert (a.command, a.root, a.log, a.bundle, a.pid_file, a.console_socket, a.id) == (
        "create", "/r", "/l", "/b", "/p", "/s", "c1")
    a = p.parse_args(["exec", "--pid-file", "/x", "--process", "/y", "--detach", "c1"])
    assert (a.command, a.process, a.detach, a.id, a.exec_args) == ("exec", "/y", True, "c1", [])
    a = p.parse_args(["kill", "--all", "c1", "KILL"])
    assert (a.command, a.all, a.signal) == ("kill", True, "KILL")
    a = p.parse_args(["delete", "--force", "c1"])
    assert a.force
    a = p.parse_args(["ps", "--format", "json", "c1"])
    assert a.format == "json"


def test_version_has_runcs_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("steelcup-runtime version ")
    assert "spec: 1.1.0" in lines


def test_features_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["features"]) == 0
    features = json.loads(capsys.readouterr().out)
    assert features["ociVersionMax"] == "1.1.0" and "bind" in features["mountOptions"]


def test_a_missing_container_is_runcs_error_in_the_json_log(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log.json"
    argv = ["--root", str(tmp_path / "root"), "--host", str(tmp_path / "no.sock"),
            "--log", str(log), "--log-format", "json"]
    with pytest.raises(SystemExit) as exited:
        main([*argv, "state", "c1"])
    assert exited.value.code == 1
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and entry["msg"] == "container does not exist"
    assert "container does not exist" in capsys.readouterr().err
    # runc: deleting a missing container with --force is not an error
    assert main([*argv, "delete", "--force", "c1"]) == 0


def test_no_daemon_is_an_error_a_person_can_act_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = _bundle(tmp_path)
    with pytest.raises(SystemExit):
        main(["--root", str(tmp_path / "root"), "--host", str(tmp_path / "no.sock"),
              "create", "--bundle", str(bundle), "c1"])
    assert "cannot connect to the steelcup daemon" in capsys.readouterr().err
    assert not (tmp_path / "root" / "c1").exists()


def test_a_missing_program_fails_create_with_runcs_words_before_any_daemon(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = _bundle(tmp_path, program="no-such-program")
    with pytest.raises(SystemExit):
        main(["--root", str(tmp_path / "root"), "--host", str(tmp_path / "no.sock"),
              "create", "--bundle", str(bundle), "c1"])
    assert ('exec: "no-such-program": executable file not found in $PATH'
            in capsys.readouterr().err)


def _bundle(tmp_path: Path, program: str = "true") -> Path:
    bundle = tmp_path / "b"
    (bundle / "rootfs" / "bin").mkdir(parents=True)
    (bundle / "rootfs" / "bin" / "true").write_text("#!")
    (bundle / "rootfs" / "bin" / "true").chmod(0o755)
    (bundle / "config.json").write_text(json.dumps(
        {"process": {"args": [program], "env": ["PATH=/bin"]}, "root": {"path": "rootfs"}}))
    return bundle


def test_the_daemons_name_is_the_id_where_dockers_rule_allows() -> None:
    from steelcup.oci.main import daemon_name

    assert daemon_name("9c8344e31f86") == "9c8344e31f86"
    assert daemon_name("k8s_pod.1-a") == "k8s_pod.1-a"
    assert daemon_name("a+b") is None  # runc allows '+', docker names do not


def test_host_fds_cannot_be_preserved_into_a_vm(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--root", str(tmp_path), "--host", str(tmp_path / "no.sock"), "create",
              "--preserve-fds", "2", "--bundle", str(_bundle(tmp_path)), "c1"])
    assert "cannot pass host file descriptors" in capsys.readouterr().err
