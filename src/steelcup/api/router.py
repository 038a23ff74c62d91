"""Request routing: method + path pattern (`{name}` / `{name:path}` params) to a handler."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from steelcup.api.http_types import Handler, Principal, Request
from steelcup.errors import Forbidden

# (who asks, the reference in the path) -> the object's full id if they may see it; NotFound
# exactly as for a missing object if not (no existence oracle across tenants).
Resolver = Callable[[Principal, str], str]

OPERATOR = "operator"  # the table's kind of a route only the operator may use
ANY = "any"  # ... of a route that answers alike whatever its path names (e.g. "unsupported")


def operator_only(handler: Handler) -> Handler:
    """A route only the operator may use: a tenant gets 403, whatever it names."""
    async def guarded(req: Request) -> Any:
        if not req.principal.is_operator:
            raise Forbidden(f"{req.method} {req.path} is for the operator only")
        return await handler(req)
    return guarded


@dataclass(frozen=True)
class Scope:
    """Routes whose pattern starts with `prefix` name an object of `kind` in `param`."""

    prefix: str
    param: str
    kind: str
    resolve: Resolver


class Router:
    """Method + path pattern -> handler. `{name}` is one segment, `{name:path}` one or more.

    Object scopes (`scope`) are the spine of tenancy: a route added under a scoped prefix gets
    its object reference resolved for the request's principal before its handler runs, so a
    handler only ever sees the full id of an object the caller owns."""

    _PARAM = re.compile(r"\{(\w+)(?::(path))?\}")

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler, str]] = []
        self._scopes: list[Scope] = []
        # (method, pattern, scope kind, OPERATOR, or "" for a route naming no object)
        self.table: list[tuple[str, str, str]] = []

    def scope(self, prefix: str, param: str, kind: str, resolve: Resolver) -> None:
        """Scope every route added from now on whose pattern starts with `prefix`."""
        self._scopes.append(Scope(prefix, param, kind, resolve))

    def add(self, method: str, pattern: str, handler: Handler, *,
            operator: bool = False, names_nothing: bool = False) -> None:
        """Route `method pattern` to `handler`; `operator`: for the operator only (a tenant
        gets 403 whatever it names); `names_nothing`: its answer does not depend on what its
        path names, so it needs no scope."""
        if not pattern.startswith("/"):
            raise ValueError(f"route pattern must start with '/': {pattern!r}")
        kind = ""
        if operator:
            handler, kind = operator_only(handler), OPERATOR
        elif names_nothing:
            kind = ANY
        for scope in self._scopes if not kind else ():
            if pattern.startswith(scope.prefix):
                handler = _scoped(handler, scope)
                kind = scope.kind
                break
        self.table.append((method.upper(), pattern, kind))
        regex = ""
        pos = 0
        for match in self._PARAM.finditer(pattern):
            regex += re.escape(pattern[pos : match.start()])
            body = ".+" if match.group(2) else "[^/]+"
            regex += f"(?P<{match.group(1)}>{body})"
            pos = match.end()
        regex += re.escape(pattern[pos:])
        self._routes.append((method.upper(), re.compile(regex + r"/?\Z"), handler, pattern))

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str], str] | None:
        """The handler, decoded params and the route's pattern (what metrics are labelled
        with); None if no path matches; NotAllowed on wrong method."""
        path_matched = False
        fallback: tuple[Handler, dict[str, str], str] | None = None
        for route_method, regex, handler, pattern in self._routes:
            match = regex.match(path)
            if match is None:
                continue
            path_matched = True
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            if route_method == method:
                return handler, params, pattern
            if method == "HEAD" and route_method == "GET" and fallback is None:
                fallback = (handler, params, pattern)
        if fallback is not None:
            return fallback
        if path_matched:
            raise MethodNotAllowed(method)
        return None


class MethodNotAllowed(Exception):
    pass


def _scoped(handler: Handler, scope: Scope) -> Handler:
    async def scoped(req: Request) -> Any:
        req.params[scope.param] = scope.resolve(req.principal, req.params[scope.param])
        return await handler(req)
    return scoped


def unscoped(table: list[tuple[str, str, str]]) -> list[str]:
    """Routes of `table` that name an object in their path but neither resolve it for the
    caller's tenant nor are the operator's: a tenant listener must not serve while any exists."""
    return [f"{method} {pattern}" for method, pattern, kind in table
            if "{" in pattern and not kind]

