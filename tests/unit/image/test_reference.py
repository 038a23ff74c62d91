"""Reference parsing and docker-style normalisation."""

from __future__ import annotations

import pytest

from steelcup.errors import InvalidArgument
from steelcup.image.reference import is_full_id, is_id_prefix, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "text,domain,path,tag,digest,familiar",
    [
        ("busybox", "docker.io", "library/busybox", "latest", None, "busybox:latest"),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None, "busybox:1.36"),
        ("library/busybox", "docker.io", "library/busybox", "latest", None, "busybox:latest"),
        ("docker.io/library/busybox:1", "docker.io", "library/busybox", "1", None, "busybox:1"),
        ("index.docker.io/library/x", "docker.io", "library/x", "latest", None, "x:latest"),
        ("steelcup/busybox:1", "docker.io", "steelcup/busybox", "1", None, "steelcup/busybox:1"),
        ("127.0.0.1:5000/ns/app:1.0", "127.0.0.1:5000", "ns/app", "1.0", None,
         "127.0.0.1:5000/ns/app:1.0"),
        ("localhost/app", "localhost", "app", "latest", None, "localhost/app:latest"),
        ("localhost:5000/a/b/c", "localhost:5000", "a/b/c", "latest", None,
         "localhost:5000/a/b/c:latest"),
        (f"app@{DIGEST}", "docker.io", "library/app", None, DIGEST, f"app@{DIGEST}"),
        (f"app:v1@{DIGEST}", "docker.io", "library/app", "v1", DIGEST, f"app:v1@{DIGEST}"),
        ("my_app.x-y__z", "docker.io", "library/my_app.x-y__z", "latest", None,
         "my_app.x-y__z:latest"),
        ("[::1]:5000/app:t", "[::1]:5000", "app", "t", None, "[::1]:5000/app:t"),
    ],
)
def test_parse(text: str, domain: str, path: str, tag: str | None, digest: str | None,
               familiar: str) -> None:
    ref = parse_reference(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert ref.familiar() == familiar == str(ref)
    assert parse_reference(ref.canonical()) == ref
    assert parse_reference(ref.familiar()) == ref


def test_canonical() -> None:
    assert parse_reference("busybox").canonical() == "docker.io/library/busybox:latest"
    assert parse_reference("busybox", default_tag=False).tag is None


@pytest.mark.parametrize(
    "text",
    ["", "Busybox", "busybox:", ":tag", "a//b", "-a", "a-", "app@sha256:123", "app@",
     "busybox:" + "t" * 200, "a/" + "b" * 300, "a b", "app@sha256:" + "g" * 64,
     "ns/UPPER", "host:99999999999999999999x/app"],
)
def test_invalid(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        parse_reference(text)


def test_with_tag_and_ids() -> None:
    assert parse_reference("a:1").with_tag("2").familiar() == "a:2"
    with pytest.raises(InvalidArgument):
        parse_reference("a").with_tag("bad tag")
    assert is_full_id("sha256:" + "a" * 64) and is_full_id("a" * 64)
    assert not is_full_id("abc")
    assert is_id_prefix("abc123") and is_id_prefix("sha256:ab")
    assert not is_id_prefix("busybox") and not is_id_prefix("")
