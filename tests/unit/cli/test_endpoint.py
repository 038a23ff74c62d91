"""Where the CLI's daemon is: -H, $STEELCUP_HOST, a tcp:// $DOCKER_HOST, the default socket; TLS
files from flags, $DOCKER_CERT_PATH or ~/.docker; a bearer token beside them."""

from __future__ import annotations

from pathlib import Path

import pytest

from steelcup.cli.endpoint import Endpoint, TlsFiles, TlsFlags, resolve
from steelcup.errors import InvalidArgument

SOCK = "/run/steelcup/api.sock"


def test_the_default_socket_unless_told_otherwise() -> None:
    assert resolve(None, TlsFlags(), {}, SOCK) == Endpoint(unix_path=SOCK)
    assert resolve("unix:///tmp/a.sock", TlsFlags(), {}, SOCK).unix_path == "/tmp/a.sock"
    assert resolve(None, TlsFlags(), {"STEELCUP_HOST": "/tmp/b.sock"}, SOCK).unix_path == \
        "/tmp/b.sock"


def test_a_unix_docker_host_is_dockers_socket_not_ours() -> None:
    env = {"DOCKER_HOST": "unix:///var/run/docker.sock"}
    assert resolve(None, TlsFlags(), env, SOCK) == Endpoint(unix_path=SOCK)


def test_flag_beats_steelcup_host_beats_docker_host() -> None:
    env = {"STEELCUP_HOST": "tcp://b:1", "DOCKER_HOST": "tcp://c:2"}
    assert resolve("tcp://a:3", TlsFlags(), env, SOCK).host == "a"
    assert resolve(None, TlsFlags(), env, SOCK).host == "b"
    assert resolve(None, TlsFlags(), {"DOCKER_HOST": "tcp://c:2"}, SOCK).host == "c"


def test_tls_from_dockers_variables(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok-123\n")
    env = {"DOCKER_HOST": "tcp://cloud.example:2376", "DOCKER_TLS_VERIFY": "1",
           "DOCKER_CERT_PATH": str(tmp_path)}
    got = resolve(None, TlsFlags(), env, SOCK)
    assert got == Endpoint(host="cloud.example", port=2376, token="tok-123", tls=TlsFiles(
        ca=str(tmp_path / "ca.pem"), cert=str(tmp_path / "cert.pem"),
        key=str(tmp_path / "key.pem"), verify=True))
    assert str(got) == "tcp://cloud.example:2376"


def test_flags_name_the_files_and_default_ports_are_dockers(tmp_path: Path) -> None:
    flags = TlsFlags(verify=True, ca="/c/ca", cert="/c/cert", key="/c/key")
    got = resolve("tcp://[::1]", flags, {"HOME": str(tmp_path)}, SOCK, home=str(tmp_path))
    assert (got.host, got.port) == ("::1", 2376)
    assert got.tls == TlsFiles("/c/ca", "/c/cert", "/c/key", True)
    plain = resolve("tcp://127.0.0.1", TlsFlags(), {}, SOCK)
    assert (plain.port, plain.tls, plain.token) == (2375, None, "")
    unverified = resolve("tcp://h:9", TlsFlags(tls=True), {}, SOCK, home=str(tmp_path))
    assert unverified.tls is not None and not unverified.tls.verify
    assert unverified.tls.ca == str(tmp_path / ".docker" / "ca.pem")


def test_steelcup_token_beats_the_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file")
    env = {"DOCKER_CERT_PATH": str(tmp_path), "STEELCUP_TOKEN": "from-env"}
    assert resolve("tcp://h:1", TlsFlags(verify=True), env, SOCK).token == "from-env"


@pytest.mark.parametrize("bad", ["ssh://h", "tcp://:5", "tcp://h:x", "tcp://h:70000"])
def test_bad_addresses_are_refused_clearly(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="daemon address"):
        resolve(bad, TlsFlags(), {}, SOCK)
