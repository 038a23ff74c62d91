""".dockerignore matching with docker's rules."""

import pytest

from steelcup.build.ignore import IgnoreRules


def rules(*lines: str) -> IgnoreRules:
    return IgnoreRules(list(lines))


@pytest.mark.parametrize(("patterns", "path", "ignored"), [
    (["*.log"], "a.log", True),
    (["*.log"], "sub/a.log", False),  # anchored at the root, unlike .gitignore
    (["**/*.log"], "sub/deep/a.log", True),
    (["**/*.log"], "a.log", True),
    (["/secret"], "secret", True),
    (["./secret/"], "secret/key", True),  # a directory's contents go with it
    (["secret"], "secret/deep/key", True),
    (["sec?et"], "secret", True),
    (["sec?et"], "sec/et", False),
    (["[a-c]x"], "bx", True),
    (["[!a-c]x"], "bx", False),
    (["*", "!keep"], "keep", False),
    (["*", "!keep"], "other", True),
    (["docs", "!docs/README.md"], "docs/README.md", False),
    (["docs", "!docs/README.md"], "docs/other.md", True),
    (["!a", "a"], "a", True),  # the last match decides
    (["# a comment", ""], "# a comment", False),
    (["a/**/b"], "a/b", True),
    (["a/**/b"], "a/x/y/b", True),
    (["a\\*"], "a*", True),
    (["a\\*"], "ab", False),
])
def test_matching(patterns: list[str], path: str, ignored: bool) -> None:
    assert rules(*patterns).ignored(path) is ignored


def test_exclusions_flag() -> None:
    assert rules("a", "!a/b").has_exclusions
    assert not rules("a").has_exclusions
