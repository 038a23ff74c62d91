"""run/create flags -> docker's create body (the shapes the docker CLI sends)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from steelcup.cli import netflags
from steelcup.errors import InvalidArgument


def body_for(*argv: str) -> dict[str, Any]:
    p = argparse.ArgumentParser()
    netflags.add_flags(p)
    body: dict[str, Any] = {"HostConfig": {"AutoRemove": False}}
    netflags.apply(body, p.parse_args(list(argv)))
    return body


def test_full_body() -> None:
    body = body_for("-p", "8080:80", "-P", "--network", "front", "--network-alias", "www",
                    "-v", "data:/data:ro", "-v", "/anon", "--mount",
                    "type=tmpfs,dst=/run,tmpfs-size=1m", "--tmpfs", "/scratch:size=2m")
    host = body["HostConfig"]
    assert body["ExposedPorts"] == {"80/tcp": {}}
    assert host["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    assert host["PublishAllPorts"] is True and host["AutoRemove"] is False
    assert host["Binds"] == ["data:/data:ro"] and body["Volumes"] == {"/anon": {}}
    assert host["Mounts"] == [{"Type": "tmpfs", "Target": "/run",
                               "TmpfsOptions": {"SizeBytes": 1 << 20}}]
    assert host["Tmpfs"] == {"/scratch": "size=2m"}
    assert host["NetworkMode"] == "front"
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"front": {"Aliases": ["www"]}}}


def test_defaults_and_errors() -> None:
    body = body_for()
    assert body["HostConfig"] == {"AutoRemove": False, "PublishAllPorts": False,
                                  "NetworkMode": "default"}
    with pytest.raises(InvalidArgument):
        body_for("--network-alias", "x")
    with pytest.raises(InvalidArgument):
        body_for("-v", "bad:relative")
