"""`run/create --checkpointable --auto-suspend IDLE`: what the CLI sends (cli/createspec.py)."""

import pytest

from steelcup.cli.createspec import ContainerOptions, create_body
from steelcup.errors import InvalidArgument


def test_auto_suspend_is_sent_as_whole_seconds() -> None:
    body = create_body(ContainerOptions("b", checkpointable=True, auto_suspend="1m30s"),
                       for_run=True)
    assert body["HostConfig"]["SteelcupAutoSuspend"] == 90
    assert body["HostConfig"]["SteelcupCheckpointable"] is True
    short = create_body(ContainerOptions("b", auto_suspend="200ms"), for_run=True)
    assert short["HostConfig"]["SteelcupAutoSuspend"] == 1  # at least a second
    plain = create_body(ContainerOptions("b"), for_run=True)
    assert "SteelcupAutoSuspend" not in plain.get("HostConfig", {})


def test_a_bad_idle_is_refused_naming_the_flag() -> None:
    with pytest.raises(InvalidArgument, match="--auto-suspend"):
        create_body(ContainerOptions("b", auto_suspend="soon"), for_run=True)
