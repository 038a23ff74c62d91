"""Pure registry-auth helpers: challenge parsing, X-Registry-Auth, addresses, credential file."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from steelcup.errors import InvalidArgument
from steelcup.image.auth import (
    Challenge,
    Credentials,
    basic_authorization,
    decode_registry_auth,
    encode_registry_auth,
    is_loopback_registry,
    normalize_server_address,
    parse_challenges,
    registry_api_host,
    repository_scope,
)
from steelcup.image.credentials import CredentialStore


def test_bearer_challenge_docker_hub_form() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull"'
    )
    assert parse_challenges(header) == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:library/busybox:pull",
            },
        )
    ]


def test_quoted_commas_escapes_and_several_challenges() -> None:
    header = (
        'Bearer realm="https://a/t",scope="repository:x:pull,push", error="say \\"hi\\"", '
        'Basic realm="Registry Realm"'
    )
    got = parse_challenges(header)
    assert [c.scheme for c in got] == ["bearer", "basic"]
    assert got[0].params["scope"] == "repository:x:pull,push"
    assert got[0].params["error"] == 'say "hi"'
    assert got[1].params == {"realm": "Registry Realm"}


def test_case_insensitive_scheme_and_keys_unquoted_value() -> None:
    assert parse_challenges("BASIC Realm=registry") == [Challenge("basic", {"realm": "registry"})]


@pytest.mark.parametrize("header", ["", ",,,", "=foo", '"unterminated'])
def test_garbage_does_not_raise(header: str) -> None:
    assert all(isinstance(c, Challenge) for c in parse_challenges(header))


def test_scope_and_basic() -> None:
    assert repository_scope("ns/app", ("pull", "push")) == "repository:ns/app:pull,push"
    assert basic_authorization("alice", "s3:cr") == "Basic " + base64.b64encode(
        b"alice:s3:cr"
    ).decode()


def test_registry_auth_roundtrip_and_docker_forms() -> None:
    creds = Credentials(username="alice", password="pw")
    assert decode_registry_auth(encode_registry_auth(creds, "127.0.0.1:5000")) == creds
    # docker CLI: URL-safe base64 without padding
    raw = json.dumps({"username": "bob", "password": "x?>"}).encode()
    text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert decode_registry_auth(text) == Credentials("bob", "x?>")
    assert decode_registry_auth("") is None
    assert decode_registry_auth(base64.b64encode(b"{}").decode()) == Credentials()
    assert Credentials().anonymous
    auth_field = base64.b64encode(b"carol:pw").decode()
    encoded = base64.b64encode(json.dumps({"auth": auth_field}).encode()).decode()
    assert decode_registry_auth(encoded) == Credentials("carol", "pw")


@pytest.mark.parametrize("header", ["!!!", base64.b64encode(b"[1]").decode()])
def test_bad_registry_auth(header: str) -> None:
    with pytest.raises(InvalidArgument):
        decode_registry_auth(header)


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("https://index.docker.io/v1/", "docker.io"),
        ("docker.io", "docker.io"),
        ("", "docker.io"),
        ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
        ("Registry.Example:443", "registry.example:443"),
    ],
)
def test_normalize_server_address(address: str, key: str) -> None:
    assert normalize_server_address(address) == key


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("[::1]:5000", True),
        ("registry.example:5000", False),
        ("10.0.0.1", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback_registry(host) is loopback


def test_api_host() -> None:
    assert registry_api_host("docker.io") == "registry-1.docker.io"
    assert registry_api_host("127.0.0.1:5000") == "127.0.0.1:5000"


def test_credential_store_roundtrip_mode(tmp_path: Path) -> None:
    path = tmp_path / "root" / "registry-auth.json"
    store = CredentialStore(path)
    assert store.get("127.0.0.1:5000") is None
    store.set("http://127.0.0.1:5000/", Credentials("alice", "pw:with:colons"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.get("127.0.0.1:5000") == Credentials("alice", "pw:with:colons")
    assert store.servers() == ["127.0.0.1:5000"]
    assert CredentialStore(path).get("127.0.0.1:5000") == Credentials("alice", "pw:with:colons")
    assert store.remove("127.0.0.1:5000")
    assert not store.remove("127.0.0.1:5000")
    assert store.get("127.0.0.1:5000") is None
