"""Request routing: method + path pattern (`{name}` / `{name:path}` params) to a handler."""

from __future__ import annotations

import re
from urllib.parse import unquote

from steelcup.api.http_types import Handler


class Router:
    """Method + path pattern -> handler. `{name}` is one segment, `{name:path}` one or more."""

    _PARAM = re.compile(r"\{(\w+)(?::(path))?\}")

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        if not pattern.startswith("/"):
            raise ValueError(f"route pattern must start with '/': {pattern!r}")
        regex = ""
        pos = 0
        for match in self._PARAM.finditer(pattern):
            regex += re.escape(pattern[pos : match.start()])
            body = ".+" if match.group(2) else "[^/]+"
            regex += f"(?P<{match.group(1)}>{body})"
            pos = match.end()
        regex += re.escape(pattern[pos:])
        self._routes.append((method.upper(), re.compile(regex + r"/?\Z"), handler))

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
        """The handler and decoded params; None if no path matches; NotAllowed on wrong method."""
        path_matched = False
        fallback: tuple[Handler, dict[str, str]] | None = None
        for route_method, regex, handler in self._routes:
            match = regex.match(path)
            if match is None:
                continue
            path_matched = True
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            if route_method == method:
                return handler, params
            if method == "HEAD" and route_method == "GET" and fallback is None:
                fallback = (handler, params)
        if fallback is not None:
            return fallback
        if path_matched:
            raise MethodNotAllowed(method)
        return None


class MethodNotAllowed(Exception):
    pass
