""".dockerignore: which context paths a build leaves out, with docker's rules.

Patterns are anchored at the context root (a leading `/` is dropped, the pattern cleaned), `*`
and `?` stay within one path component, `**` spans any number of them, `!` re-includes, the
last matching pattern decides, and a pattern that matches a directory matches everything
under it. Pure.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from steelcup.errors import InvalidArgument


@dataclass(frozen=True)
class _Pattern:
    text: str
    regex: re.Pattern[str]
    exclusion: bool
    depth: int  # components of the pattern


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A regex for one cleaned pattern (docker's filepath.Match with `**`)."""
    out, i = ["^"], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1:i + 2] == "*":
                i += 1
                if i + 1 == len(pattern):
                    out.append(".*")
                elif pattern[i + 1] == "/":
                    out.append("(.*/)?")
                    i += 1
                else:
                    out.append(".*")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise InvalidArgument(f"invalid .dockerignore pattern {pattern!r}: "
                                      "missing ']'")
            body = pattern[i + 1:end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    out.append("$")
    return re.compile("".join(out), re.DOTALL)


class IgnoreRules:
    """The patterns of one .dockerignore."""

    def __init__(self, lines: list[str]) -> None:
        self.patterns: list[_Pattern] = []
        for raw in lines:
            text = raw.strip()
            if not text or text.startswith("#"):
                continue
            exclusion = text.startswith("!")
            if exclusion:
                text = text[1:].strip()
            if not text:
                continue
            text = posixpath.normpath(text)
            if len(text) > 1 and text.startswith("/"):
                text = text.lstrip("/") or "/"
            if text == ".":
                continue
            self.patterns.append(_Pattern(text, compile_pattern(text), exclusion,
                                          len(text.split("/"))))

    @classmethod
    def parse(cls, content: str) -> IgnoreRules:
        return cls(content.splitlines())

    def ignored(self, path: str) -> bool:
        """Whether the context-relative `path` (`a/b/c`) is left out."""
        path = posixpath.normpath(path).lstrip("/")
        parts = path.split("/")
        matched = False
        for p in self.patterns:
            hit = bool(p.regex.match(path))
            if not hit and len(parts) > 1 and p.depth < len(parts):
                hit = bool(p.regex.match("/".join(parts[:p.depth])))
            if hit:
                matched = not p.exclusion
        return matched

    @property
    def has_exclusions(self) -> bool:
        """An ignored directory may still hold re-included files (walk it anyway)."""
        return any(p.exclusion for p in self.patterns)
