"""Object names are checked whole: `re.match` with a pattern ending in `$` also accepts a
name with a final newline (a directory or record named "x\n"), so the checks use fullmatch."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from steelcup.cron.model import check_cron_name
from steelcup.errors import InvalidArgument
from steelcup.funcs.model import check_func_name
from steelcup.tenancy.model import check_tenant_name

CHECKS: list[Callable[[str], str]] = [check_tenant_name, check_cron_name, check_func_name]


@pytest.mark.parametrize("check", CHECKS)
def test_a_plain_name_passes(check: Callable[[str], str]) -> None:
    assert check("web-1") == "web-1"


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("name", ["web\n", "web\r\n", "\nweb", "we\nb", "", "-web", "a" * 64])
def test_a_name_with_a_newline_or_out_of_shape_is_refused(check: Callable[[str], str],
                                                          name: str) -> None:
    with pytest.raises(InvalidArgument):
        check(name)
