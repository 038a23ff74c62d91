"""`steelcup fip ls -f` turns into docker's filters object; anything else is a clear error;
`run --fip` sends the label the daemon reads."""

from __future__ import annotations

import argparse

import pytest

from steelcup.cli.commands import containers
from steelcup.cli.commands.fip import filters
from steelcup.cli.createspec import create_body
from steelcup.defaults import FIP_LABEL
from steelcup.errors import InvalidArgument


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
