"""Docker's word rules for Dockerfile arguments: quotes, the escape character and variable
expansion ($VAR, ${VAR}, ${VAR:-word}, ${VAR-word}, ${VAR:+word}, ${VAR+word}, ${VAR:?msg}).

`expand_word` gives one word (ENV values, WORKDIR, USER, ...); `expand_words` splits on
unquoted blanks, expansions included (COPY sources, EXPOSE, VOLUME). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping

from steelcup.errors import InvalidArgument


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], escape: str, split: bool) -> None:
        self.text = text
        self.split = split  # blanks outside quotes separate words
        self.pos = 0
        self.env = env
        self.escape = escape
        self.words: list[str] = []
        self.current: list[str] = []
        self.in_word = False  # quotes make a word even when empty

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        ch = self.peek()
        self.pos += 1
        return ch

    def add(self, text: str, split: bool) -> None:
        for ch in text:
            if split and self.split and ch in " \t\n\r":
                self.blank()
            else:
                self.current.append(ch)
                self.in_word = True

    def blank(self) -> None:
        if self.in_word:
            self.words.append("".join(self.current))
        self.current, self.in_word = [], False

    def run(self, stop: str = "") -> str:
        """Process until `stop` (inside ${...:-word}) or the end; returns the raw text."""
        while self.pos < len(self.text):
            ch = self.peek()
            if stop and ch == stop:
                break
            if ch == "'":
                self.take()
                self._single_quoted()
            elif ch == '"':
                self.take()
                self._double_quoted()
            elif ch == "$":
                self.take()
                self.add(self._dollar(), split=True)
            elif ch == self.escape:
                self.take()
                if self.pos < len(self.text):
                    self.add(self.take(), split=False)
            else:
                self.add(self.take(), split=True)
        return "".join(self.current)

    def _single_quoted(self) -> None:
        self.in_word = True
        while True:
            if self.pos >= len(self.text):
                raise InvalidArgument(f"unexpected end of statement while looking for matching "
                                      f"single-quote in {self.text!r}")
            ch = self.take()
            if ch == "'":
                return
            self.add(ch, split=False)

    def _double_quoted(self) -> None:
        self.in_word = True
        while True:
            if self.pos >= len(self.text):
                raise InvalidArgument(f"unexpected end of statement while looking for matching "
                                      f"double-quote in {self.text!r}")
            ch = self.take()
            if ch == '"':
                return
            if ch == "$":
                self.add(self._dollar(), split=False)
            elif ch == self.escape and self.peek() in ('"', "$", self.escape):
                self.add(self.take(), split=False)
            else:
                self.add(ch, split=False)

    def _name(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and (self.text[self.pos].isalnum()
                                             or self.text[self.pos] == "_"):
            self.pos += 1
        return self.text[start:self.pos]

    def _dollar(self) -> str:
        if self.peek() != "{":
            name = self._name()
            if not name:
                return "$"
            return self.env.get(name, "")
        self.take()
        name = self._name()
        if not name:
            raise InvalidArgument(f"bad substitution in {self.text!r}")
        ch = self.take()
        if ch == "}":
            return self.env.get(name, "")
        colon = ch == ":"
        if colon:
            ch = self.take()
        if ch not in ("-", "+", "?"):
            raise InvalidArgument(f"unsupported modifier ({ch or 'end'}) in substitution "
                                  f"of {self.text!r}")
        word = self._nested_word()
        value = self.env.get(name)
        is_set = value is not None and (value != "" or not colon)
        if ch == "-":
            return value if is_set and value is not None else word
        if ch == "+":
            return word if is_set else ""
        if not is_set:
            raise InvalidArgument(f"{name}: {word or 'is not allowed to be unset'}")
        return value or ""

    def _nested_word(self) -> str:
        inner = _Lexer(self.text, self.env, self.escape, split=False)
        inner.pos = self.pos
        word = inner.run(stop="}")
        if inner.peek() != "}":
            raise InvalidArgument(f"missing '}}' in {self.text!r}")
        self.pos = inner.pos + 1
        return word


def expand_word(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """One word with quotes removed and variables expanded (no splitting)."""
    return _Lexer(text, env, escape, split=False).run()


def expand_words(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """Words split on unquoted blanks, each with quotes removed and variables expanded."""
    lexer = _Lexer(text, env, escape, split=True)
    lexer.run()
    lexer.blank()
    return lexer.words
