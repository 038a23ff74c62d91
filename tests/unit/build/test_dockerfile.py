"""Dockerfile parsing: forms, directives, continuations and errors naming the line."""

import pytest

from steelcup.build.dockerfile import parse, parse_trigger
from steelcup.errors import InvalidArgument


def test_forms_flags_and_lines() -> None:
    df = parse(
        "# syntax=docker/dockerfile:1\n"
        "FROM busybox AS b\n"
        "RUN echo a \\\n"
        "  && echo b\n"
        "# a comment\n"
        'RUN ["sh", "-c", "echo c"]\n'
        "COPY --from=b --chown=1:2 a /b\n"
    )
    run, exec_run, copy = df.instructions[1:]
    assert (run.cmd, run.json, run.line, run.rest) == ("RUN", False, 3, "echo a   && echo b")
    assert (exec_run.json, exec_run.args) == (True, ("sh", "-c", "echo c"))
    assert copy.flag("from") == "b" and copy.flag("chown") == "1:2" and copy.flag("x") is None
    assert copy.rest == "a /b"
    assert df.notes and "syntax directive" in df.notes[0]


def test_escape_directive() -> None:
    df = parse("# escape=`\nFROM a\nRUN echo a `\n  b\n")
    assert df.escape == "`"
    assert df.instructions[1].rest == "echo a   b"


def test_lower_case_keywords() -> None:
    assert parse("from a as b\n").instructions[0].cmd == "FROM"


def test_onbuild_keeps_its_trigger_text() -> None:
    onbuild = parse("FROM a\nONBUILD COPY --chown=1 a b\n").instructions[1]
    assert onbuild.trigger == "COPY --chown=1 a b"
    trig = parse_trigger(onbuild.trigger, 7)
    assert (trig.cmd, trig.flag("chown"), trig.line) == ("COPY", "1", 7)


def test_heredoc() -> None:
    run = parse("FROM a\nRUN <<EOF\necho hi\nEOF\n").instructions[1]
    assert run.heredocs[0].content == "echo hi\n"


@pytest.mark.parametrize(("text", "message"), [
    ("FROM a\nFOO bar\n", "line 2: unknown instruction: FOO"),
    ("", "cannot be empty"),
    ("# only a comment\n", "cannot be empty"),
    ("FROM a\nONBUILD FROM b\n", "line 2: FROM isn't allowed as an ONBUILD trigger"),
])
def test_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse(text)


def test_unknown_flag_names_the_line() -> None:
    copy = parse("FROM a\n\nCOPY --frm=x a b\n").instructions[1]
    with pytest.raises(InvalidArgument, match="line 3: unknown flag: --frm"):
        copy.check_flags(frozenset({"from"}))
