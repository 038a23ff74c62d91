"""Docker's word rules: quotes, escapes and ${VAR} forms, one word or split."""

import pytest

from steelcup.build.words import expand_word, expand_words
from steelcup.errors import InvalidArgument

ENV = {"A": "x y", "E": "", "N": "1"}


@pytest.mark.parametrize(("text", "want"), [
    ("$N", "1"),
    ("${N}0", "10"),
    ("pre$A.post", "prex y.post"),
    ("$MISSING-", "-"),
    ("${MISSING:-dflt}", "dflt"),
    ("${E:-dflt}", "dflt"),
    ("${E-dflt}", ""),
    ("${MISSING-dflt}", "dflt"),
    ("${N:+set}", "set"),
    ("${E:+set}", ""),
    ("${E+set}", "set"),
    ("${MISSING+set}", ""),
    ("${MISSING:-${N}x}", "1x"),
    ("'$N'", "$N"),
    ('"$N and \\$N"', "1 and $N"),
    ("\\$N", "$N"),
    ('"a \\b"', "a \\b"),
    ("$", "$"),
])
def test_expand_word(text: str, want: str) -> None:
    assert expand_word(text, ENV) == want


def test_words_split_on_unquoted_blanks_including_expansions() -> None:
    assert expand_words('a "b c" $A \'d e\' ""', ENV) == ["a", "b c", "x", "y", "d e", ""]
    assert expand_words('"$A"', ENV) == ["x y"]


def test_other_escape_character() -> None:
    assert expand_word("`$N", ENV, escape="`") == "$N"
    assert expand_word("C:\\dir", ENV, escape="`") == "C:\\dir"


@pytest.mark.parametrize("text", ["'open", '"open', "${N", "${N:x}", "${}"])
def test_malformed(text: str) -> None:
    with pytest.raises(InvalidArgument):
        expand_word(text, ENV)


def test_required_variable() -> None:
    with pytest.raises(InvalidArgument, match="MISSING: needed"):
        expand_word("${MISSING:?needed}", ENV)
    assert expand_word("${N:?needed}", ENV) == "1"
