"""GET /images/json filters and the image inspect Config, as dockerd gives them."""

from __future__ import annotations

import json

import pytest

from steelcup.api.image_codec import (
    decode_image_filters,
    encode_inspect,
    select_images,
)
from steelcup.errors import InvalidArgument, NotFound
from steelcup.image.config import ImageConfig
from steelcup.image.store import Image


def _image(n: int, tags: tuple[str, ...], labels: dict[str, str] | None = None) -> Image:
    return Image(id=f"sha256:{n:064x}", repo_tags=tags,
                 config=ImageConfig(labels=labels or {}),
                 created=f"2024-01-0{n}T00:00:00.123456789Z", architecture="amd64", os="linux",
                 diff_ids=(), size_bytes=1, raw_config=b"{}")


OLD = _image(1, ("busybox:latest", "docker.io/me/app:1"))
MID = _image(2, (), {"tier": "gold"})
NEW = _image(3, ("127.0.0.1:5000/x/y:2", "me/app:2"), {"tier": "gold", "k": "v"})
ALL = [NEW, MID, OLD]


def _resolve(name: str) -> Image:
    for image in ALL:
        if name in image.repo_tags or image.id == name:
            return image
    raise NotFound(f"No such image: {name}")


def _select(text: str, now_s: float = 1e10) -> list[tuple[str, list[str]]]:
    return [(i.id[-1], tags) for i, tags in select_images(ALL, decode_image_filters(text),
                                                          _resolve, now_s)]


def test_no_filter_lists_everything_with_all_tags() -> None:
    assert _select("") == [("3", list(NEW.repo_tags)), ("2", []), ("1", list(OLD.repo_tags))]


@pytest.mark.parametrize(("pattern", "want"), [
    ("busybox", [("1", ["busybox:latest"])]),
    ("busybox:latest", [("1", ["busybox:latest"])]),
    ("docker.io/library/busybox", [("1", ["busybox:latest"])]),
    ("me/*", [("3", ["me/app:2"]), ("1", ["docker.io/me/app:1"])]),
    ("*/app:1", [("1", ["docker.io/me/app:1"])]),
    ("*", [("1", ["busybox:latest"])]),  # `*` does not cross a `/`
    ("127.0.0.1:5000/x/*", [("3", ["127.0.0.1:5000/x/y:2"])]),
    ("nothing", []),
])
def test_reference_globs_like_path_match_and_narrow_the_tags(
    pattern: str, want: list[tuple[str, list[str]]]
) -> None:
    assert _select(json.dumps({"reference": [pattern]})) == want


def test_dangling_label_before_since_until() -> None:
    assert _select('{"dangling": ["true"]}') == [("2", [])]
    assert [i for i, _ in _select('{"dangling": ["false"]}')] == ["3", "1"]
    assert [i for i, _ in _select('{"label": ["tier=gold"]}')] == ["3", "2"]
    assert [i for i, _ in _select('{"label": ["tier=gold", "k"]}')] == ["3"]
    assert [i for i, _ in _select('{"label": ["tier=silver"]}')] == []
    assert [i for i, _ in _select('{"before": ["me/app:2"]}')] == ["2", "1"]
    assert [i for i, _ in _select('{"since": ["busybox:latest"]}')] == ["3", "2"]
    both = '{"since": ["busybox:latest"], "before": ["me/app:2"]}'
    assert [i for i, _ in _select(both)] == ["2"]
    assert [i for i, _ in _select('{"until": ["2024-01-02T12:00:00Z"]}')] == ["2", "1"]
    jan3 = 1704240000.0  # 2024-01-03T00:00:00Z
    assert [i for i, _ in _select('{"until": ["30h"]}', now_s=jan3)] == ["1"]
    assert [i for i, _ in _select(json.dumps({"until": [str(jan3 - 3600)]}))] == ["2", "1"]


@pytest.mark.parametrize(("text", "message"), [
    ('{"dangling": ["maybe"]}', "Invalid filter 'dangling=maybe'"),
    ('{"colour": ["red"]}', "invalid filter 'colour'"),
    ('{"until": ["soon"]}', "invalid value for 'until' filter"),
    ('{"reference": ["[abc"]}', "syntax error in pattern"),
])
def test_bad_filters_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("[", r"\[")):
        _select(text)


def test_before_an_unknown_image_is_not_found() -> None:
    with pytest.raises(NotFound):
        _select('{"before": ["ghost"]}')


def test_inspect_config_has_every_key_unset_ones_null() -> None:
    config = encode_inspect(OLD)["Config"]
    assert config["Cmd"] is None and config["Entrypoint"] is None and config["Env"] is None
    assert config["WorkingDir"] == "" and config["AttachStdout"] is False
