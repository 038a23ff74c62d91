"""ImageConfig parsing and validation."""

from __future__ import annotations

from typing import Any

import pytest

from steelcup.errors import ImageError
from steelcup.image.config import ImageConfig


def test_full_config() -> None:
    doc = {"architecture": "amd64", "config": {
        "Entrypoint": ["/entry"], "Cmd": ["a", "b"], "Env": ["PATH=/bin", "X=1=2", "EMPTY"],
        "WorkingDir": "/srv", "User": "app:app", "ExposedPorts": {"80/tcp": {}, "53/udp": {},
                                                                   "8080": {}},
        "Volumes": {"/data": {}}, "Labels": {"k": "v"}, "StopSignal": "SIGQUIT"}}
    cfg = ImageConfig.from_image_json(doc)
    assert cfg.entrypoint == ("/entry",) and cfg.cmd == ("a", "b")
    assert cfg.env_dict() == {"PATH": "/bin", "X": "1=2", "EMPTY": ""}
    assert cfg.exposed_ports == ("53/udp", "80/tcp", "8080/tcp")
    assert cfg.volumes == ("/data",) and cfg.labels == {"k": "v"}
    assert (cfg.working_dir, cfg.user, cfg.stop_signal) == ("/srv", "app:app", "SIGQUIT")
    assert ImageConfig.from_dict(cfg.to_dict()) == cfg


def test_empty_and_null() -> None:
    assert ImageConfig.from_image_json({}) == ImageConfig()
    cfg = ImageConfig.from_dict({"Cmd": None, "Entrypoint": None, "Env": None, "Labels": None})
    assert cfg.cmd is None and cfg.entrypoint is None and cfg.env == ()
    assert ImageConfig(cmd=()).to_dict() == {"Cmd": []}


@pytest.mark.parametrize(
    "inner,match",
    [
        ({"Cmd": [1, 2]}, "Cmd must be a list of strings"),
        ({"Entrypoint": {"a": 1}}, "Entrypoint must be a list of strings"),
        ({"Env": "PATH=/bin"}, "Env must be a list"),
        ({"Env": ["=x"]}, "invalid Env entry"),
        ({"WorkingDir": 5}, "WorkingDir must be a string"),
        ({"User": ["root"]}, "User must be a string"),
        ({"ExposedPorts": ["80/tcp"]}, "ExposedPorts must be an object"),
        ({"ExposedPorts": {"http/tcp": {}}}, "invalid exposed port"),
        ({"ExposedPorts": {"70000/tcp": {}}}, "invalid exposed port"),
        ({"Labels": {"a": 1}}, "Labels must map strings"),
        ({"StopSignal": 9}, "StopSignal must be a string"),
    ],
)
def test_invalid(inner: dict[str, Any], match: str) -> None:
    with pytest.raises(ImageError, match=match):
        ImageConfig.from_image_json({"config": inner})


def test_not_an_object() -> None:
    with pytest.raises(ImageError):
        ImageConfig.from_image_json([])
    with pytest.raises(ImageError):
        ImageConfig.from_image_json({"config": "x"})
