"""`steelcup build`'s client side: the context tar, build args and how errors end."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from steelcup.cli.commands.build import parse_pairs, render, write_context
from steelcup.errors import InvalidArgument


def names(data: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name for m in tar}


def test_context_leaves_out_what_dockerignore_says_but_keeps_the_dockerfile(
        tmp_path: Path) -> None:
    for name in ("Dockerfile", "a.txt", "b.log", "logs/x", "docs/keep.md", "docs/drop.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / ".dockerignore").write_text("*.log\nlogs\nDockerfile\ndocs\n!docs/keep.md\n")
    (tmp_path / "link").symlink_to("/etc/passwd")
    out = io.BytesIO()
    assert write_context(out, str(tmp_path), "Dockerfile", None) == "Dockerfile"
    assert names(out.getvalue()) == {"Dockerfile", ".dockerignore", "a.txt", "docs/keep.md",
                                     "link"}


def test_dockerfile_from_elsewhere_travels_under_a_private_name(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    out = io.BytesIO()
    name = write_context(out, str(tmp_path), "", b"FROM scratch\n")
    assert name.startswith(".dockerfile.") and names(out.getvalue()) == {"a", name}
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        member = tar.extractfile(name)
        assert member is not None and member.read() == b"FROM scratch\n"


def test_build_args_and_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_ENV", "e")
    monkeypatch.delenv("UNSET_ONE", raising=False)
    assert parse_pairs(["A=1", "B=", "FROM_ENV", "UNSET_ONE"], "arg", from_env=True) == {
        "A": "1", "B": "", "FROM_ENV": "e", "UNSET_ONE": None}
    with pytest.raises(InvalidArgument):
        parse_pairs(["=x"], "label", from_env=False)


def test_render_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert render([{"stream": "Step 1/1 : FROM x\n"}, {"aux": {"ID": "sha256:1"}}],
                  quiet=False) == 0
    assert render([{"errorDetail": {"message": "m", "code": 3}, "error": "m"}],
                  quiet=False) == 3
    assert render([{"errorDetail": {"message": "m"}, "error": "m"}], quiet=False) == 1
    assert render([{"stream": "Step\n"}, {"stream": "sha256:abc\n"}], quiet=True) == 0
    out = capsys.readouterr()
    assert out.out == "Step 1/1 : FROM x\nsha256:abc\n" and out.err == "m\nm\n"
