"""`steelcup fip ls -f` turns into docker's filters object; anything else is a clear error;
`run --fip` sends the label the daemon reads; `fip attach` names a container first, else a
service; `fip detach` takes an address, a container or a service."""

from __future__ import annotations

import argparse

import pytest

from steelcup.cli.commands import containers
from steelcup.cli.commands import fip as fip_commands
from steelcup.cli.commands.fip import filters
from steelcup.cli.createspec import create_body
from steelcup.defaults import FIP_LABEL
from steelcup.errors import InvalidArgument, NotFound


def test_dangling_filter() -> None:
    assert filters(["dangling=true"]) == {"dangling": ["true"]}
    for bad in ("dangling", "name=x"):
        with pytest.raises(InvalidArgument, match="dangling=true or dangling=false"):
            filters([bad])


def test_run_fip_is_a_label() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    containers.register(sub, "run", "run")
    args = parser.parse_args(["run", "--fip", "203.0.113.17", "img"])
    body = create_body(containers.options(args, run=True), for_run=True)
    assert body["Labels"] == {FIP_LABEL: "203.0.113.17"}
    plain = parser.parse_args(["run", "img"])
    assert FIP_LABEL not in (create_body(containers.options(plain, run=True),
                                         for_run=True).get("Labels") or {})


class _Client:
    """The daemon as the fip commands see it: container `web1` and service `web` exist."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, dict[str, str] | None]] = []

    def get_json(self, path: str, query: object = None) -> object:
        if path == "/containers/web1/json":
            return {"Id": "c" * 64}
        if path == "/services/web":
            return {"ID": "s" * 25}
        if path == "/fips":
            return [{"Address": "203.0.113.17", "Container": "", "Service": "s" * 25},
                    {"Address": "203.0.113.18", "Container": "c" * 64, "Service": ""}]
        raise NotFound(f"no such thing: {path}")

    def post_json(self, path: str, query: dict[str, str] | None = None) -> object:
        self.posted.append((path, query))
        return {}


class _Ctx:
    def __init__(self) -> None:
        self.api = _Client()

    def client(self) -> _Client:
        return self.api


def test_attach_names_a_container_first_else_a_service() -> None:
    for target, flag, sent in (("web1", False, {"container": "web1"}),
                               ("web", False, {"service": "web"}),
                               ("web1", True, {"service": "web1"})):
        ctx = _Ctx()
        args = argparse.Namespace(ip="203.0.113.17", target=target, service=flag)
        assert fip_commands.cmd_attach(ctx, args) == 0  # type: ignore[arg-type]
        assert ctx.api.posted == [("/fips/203.0.113.17/attach", sent)]


def test_detach_by_address_container_or_service() -> None:
    for target, address in (("203.0.113.20", "203.0.113.20"), ("web1", "203.0.113.18"),
                            ("web", "203.0.113.17")):
        ctx = _Ctx()
        args = argparse.Namespace(target=target)
        assert fip_commands.cmd_detach(ctx, args) == 0  # type: ignore[arg-type]
        assert ctx.api.posted == [(f"/fips/{address}/detach", None)]
    with pytest.raises(NotFound, match="no such thing"):
        fip_commands.cmd_detach(_Ctx(), argparse.Namespace(target="nothing"))  # type: ignore[arg-type]
