"""Parse a Dockerfile into instructions with their line numbers.

The lexical part (line continuations, comments, the escape and syntax directives, JSON versus
shell forms, here-documents) is moby's own parser, through the `dockerfile` package; what the
instructions mean is steelcup's (see `plan.py`). Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import dockerfile as _moby

from steelcup.errors import InvalidArgument

KNOWN = frozenset({
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
})
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")


@dataclass(frozen=True)
class Heredoc:
    name: str
    content: str


@dataclass(frozen=True)
class Instruction:
    """One instruction. `args` are the parser's words (JSON form: the list), `rest` the text
    after the keyword and flags (what the shell form runs), `flags` the `--name=value`s."""

    cmd: str  # upper case
    args: tuple[str, ...]
    flags: tuple[str, ...]
    json: bool
    original: str
    line: int
    rest: str
    heredocs: tuple[Heredoc, ...] = ()
    trigger: str = ""  # ONBUILD: the instruction text it stores

    def flag(self, name: str) -> str | None:
        """The value of `--name=value` (the last one given), None if absent."""
        value = None
        for f in self.flags:
            key, sep, val = f.removeprefix("--").partition("=")
            if key == name:
                value = val if sep else "true"
        return value

    def check_flags(self, allowed: frozenset[str]) -> None:
        for f in self.flags:
            key = f.removeprefix("--").partition("=")[0]
            if key not in allowed:
                raise InvalidArgument(
                    f"Dockerfile parse error line {self.line}: unknown flag: --{key}")


@dataclass(frozen=True)
class Dockerfile:
    instructions: tuple[Instruction, ...]
    escape: str
    notes: tuple[str, ...]  # what the build stream says about directives it ignores


def parse(text: str, name: str = "Dockerfile") -> Dockerfile:
    """The instructions of a Dockerfile; InvalidArgument in docker's words, with the line."""
    if not text.strip():
        raise InvalidArgument(f"the Dockerfile ({name}) cannot be empty")
    escape, notes = _directives(text)
    try:
        commands = _moby.parse_string(text)
    except _moby.GoParseError as exc:
        if "no instructions" in str(exc):
            raise InvalidArgument(f"the Dockerfile ({name}) cannot be empty") from None
        raise InvalidArgument(f"Dockerfile parse error: {exc}") from None
    out = []
    for c in commands:
        cmd = c.cmd.upper()
        if cmd not in KNOWN:
            raise InvalidArgument(
                f"Dockerfile parse error line {c.start_line}: unknown instruction: {cmd}")
        trigger = ""
        if cmd == "ONBUILD":
            trigger = _after_keyword(c.original, ())
            sub = (c.sub_cmd or "").upper()
            if sub in ("ONBUILD", "FROM", "MAINTAINER"):
                raise InvalidArgument(f"Dockerfile parse error line {c.start_line}: "
                                      f"{sub} isn't allowed as an ONBUILD trigger")
            if sub not in KNOWN:
                raise InvalidArgument(f"Dockerfile parse error line {c.start_line}: "
                                      f"unknown instruction: {sub}")
        out.append(Instruction(
            cmd=cmd, args=tuple(c.value), flags=tuple(c.flags), json=c.json,
            original=c.original, line=c.start_line, rest=_after_keyword(c.original, c.flags),
            heredocs=tuple(Heredoc(h.name, h.content) for h in c.heredocs), trigger=trigger))
    if not out:
        raise InvalidArgument(f"the Dockerfile ({name}) cannot be empty")
    return Dockerfile(tuple(out), escape, tuple(notes))


def parse_trigger(text: str, line: int) -> Instruction:
    """An ONBUILD trigger as the instruction it runs (errors name the FROM's line)."""
    try:
        parsed = parse(text)
    except InvalidArgument as exc:
        raise InvalidArgument(f"line {line}: ONBUILD trigger {text!r}: {exc}") from None
    first = parsed.instructions[0]
    return Instruction(first.cmd, first.args, first.flags, first.json, first.original, line,
                       first.rest, first.heredocs)


def _directives(text: str) -> tuple[str, list[str]]:
    """The escape character and notes on other parser directives (the leading comments)."""
    escape, notes = "\\", []
    for raw in text.splitlines():
        m = _DIRECTIVE.match(raw.strip())
        if not m:
            break
        key, value = m.group(1).lower(), m.group(2)
        if key == "escape":
            escape = value
        elif key == "syntax":
            notes.append(f"the syntax directive ({value}) is ignored: steelcup's classic "
                         "builder parses the Dockerfile itself")
    return escape, notes


def _after_keyword(original: str, flags: tuple[str, ...]) -> str:
    """The instruction's text after its keyword and flags."""
    rest = original.strip()
    rest = rest[len(rest.split(None, 1)[0]):].lstrip() if rest else ""
    for f in flags:
        if rest.startswith(f):
            rest = rest[len(f):].lstrip()
    return rest
