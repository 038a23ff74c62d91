"""Docker's capability rules (moby oci/caps), as a table of what dockerd does."""

from __future__ import annotations

import pytest

from steelcup.errors import InvalidArgument
from steelcup.runtime.capabilities import (
    ALL_CAPS,
    DEFAULT_CAPS,
    DEFAULT_NAMES,
    NAMES,
    capability_set,
    mask_of,
    names_of,
)

DEFAULT = set(DEFAULT_NAMES)
EVERY = set(NAMES)


def test_tables_match_the_kernel_and_docker() -> None:
    assert len(NAMES) == 41 and NAMES[19] == "CAP_SYS_PTRACE" and NAMES[40] == (
        "CAP_CHECKPOINT_RESTORE")
    assert NAMES[12] == "CAP_NET_ADMIN" and NAMES[21] == "CAP_SYS_ADMIN" and NAMES[31] == (
        "CAP_SETFCAP")
    assert len(DEFAULT) == 14 and DEFAULT <= EVERY
    # the mask the init's caps_default() builds and the golden vector start_caps is based on
    assert DEFAULT_CAPS == 0xA80425FB
    assert ALL_CAPS == (1 << 41) - 1
    assert set(names_of(DEFAULT_CAPS)) == DEFAULT


@pytest.mark.parametrize(
    ("add", "drop", "privileged", "want"),
    [
        ([], [], False, DEFAULT),
        (["NET_ADMIN"], [], False, DEFAULT | {"CAP_NET_ADMIN"}),
        (["cap_sys_ptrace"], [], False, DEFAULT | {"CAP_SYS_PTRACE"}),  # any case, prefix
        (["Sys_Admin", "CAP_NET_ADMIN"], [], False, DEFAULT | {"CAP_SYS_ADMIN", "CAP_NET_ADMIN"}),
        ([], ["CHOWN"], False, DEFAULT - {"CAP_CHOWN"}),
        ([], ["chown", "cap_kill"], False, DEFAULT - {"CAP_CHOWN", "CAP_KILL"}),
        ([], ["NET_ADMIN"], False, DEFAULT),  # dropping what is not there
        (["CHOWN"], [], False, DEFAULT),  # adding what is there
        (["CHOWN"], ["CHOWN"], False, DEFAULT),  # in both: drops first, then adds
        (["NET_ADMIN"], ["NET_ADMIN"], False, DEFAULT | {"CAP_NET_ADMIN"}),
        ([], ["ALL"], False, set()),
        ([], ["all"], False, set()),  # ALL in any case
        (["NET_BIND_SERVICE"], ["ALL"], False, {"CAP_NET_BIND_SERVICE"}),  # only what is added
        (["ALL"], [], False, EVERY),
        (["ALL"], ["SYS_ADMIN", "NET_ADMIN"], False, EVERY - {"CAP_SYS_ADMIN", "CAP_NET_ADMIN"}),
        (["ALL"], ["ALL"], False, EVERY),  # ALL in CapAdd wins
        ([], [], True, EVERY),
        (["NET_ADMIN"], ["ALL"], True, EVERY),  # privileged ignores both lists
    ],
)
def test_docker_rules(add: list[str], drop: list[str], privileged: bool, want: set[str]) -> None:
    mask = capability_set(add, drop, privileged)
    assert set(names_of(mask)) == want
    assert mask == mask_of(want)


@pytest.mark.parametrize(
    ("add", "drop", "message"),
    [
        (["FOO"], [], 'invalid CapAdd: unknown capability: "CAP_FOO"'),
        ([], ["CAP_BAR"], 'invalid CapDrop: unknown capability: "CAP_BAR"'),
        ([""], [], 'invalid CapAdd: unknown capability: "CAP_"'),
        (["CAP_ALL"], [], 'invalid CapAdd: unknown capability: "CAP_ALL"'),
        ([" NET_ADMIN"], [], 'invalid CapAdd: unknown capability: "CAP_ NET_ADMIN"'),
    ],
)
def test_unknown_names_are_invalid(add: list[str], drop: list[str], message: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        capability_set(add, drop, False)
    assert str(exc.value) == message
    with pytest.raises(InvalidArgument):  # checked even when privileged, like dockerd
        capability_set(add, drop, True)
