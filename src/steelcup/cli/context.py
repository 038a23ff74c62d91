"""What every command gets: where the daemon is, and a client that auto-starts one if needed.

A daemon is started for the default socket, or for another address (-H, $STEELCUP_HOST) when
the user also named its state root (--root, $STEELCUP_ROOT): starting one at another address
with the default root would share (and log into) another daemon's state.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from steelcup import defaults
from steelcup.cli.client import ApiClient, Query
from steelcup.cli.endpoint import Endpoint
from steelcup.errors import DaemonUnavailable, SteelcupError


class Context:
    def __init__(self, socket: str | os.PathLike[str], root: str | os.PathLike[str], *,
                 autostart: bool = True, root_given: bool = False,
                 endpoint: Endpoint | None = None) -> None:
        self.socket = os.fspath(socket)  # plain strings: pathlib is not needed on every start
        # where the daemon is: this socket unless the user named a tcp:// address
        self.endpoint = endpoint or Endpoint(unix_path=self.socket)
        self.root = os.fspath(root)
        self.autostart = autostart
        self.root_given = root_given  # the user named the state root (not the default)
        self._client: ApiClient | None = None

    def client(self) -> ApiClient:
        if self._client is None:
            hook = self._start_daemon if self.endpoint.is_unix else None
            self._client = ApiClient(self.endpoint, on_unreachable=hook)
        return self._client

    def _start_daemon(self) -> bool:
        if not self.autostart or os.environ.get("STEELCUP_NO_AUTOSTART") == "1":
            return False
        default = os.path.normpath(self.socket) == os.path.normpath(defaults.DEFAULT_SOCKET)
        if not default and not self.root_given:
            raise DaemonUnavailable(
                f"no daemon answers at unix://{self.socket}. A daemon is started automatically "
                f"only for the default socket ({defaults.DEFAULT_SOCKET}) or with a state root "
                "you name ($STEELCUP_ROOT or --root); for this address start one yourself: "
                f"`steelcup daemon --socket {self.socket} --root DIR` "
                "(see `steelcup daemon --help`)")
        from steelcup.cli.autostart import start_daemon

        start_daemon(self.socket, self.root)
        return True


def daemon_error(exc: SteelcupError) -> bool:
    """True if `exc` is an error response from the daemon (not a client-side failure)."""
    return "http_status" in vars(exc)


def report(exc: SteelcupError, prefix: str = "") -> None:
    """Print an error the docker way: 'Error response from daemon: ...' for daemon errors.

    DaemonUnavailable is not a per-item error: it is re-raised so the command ends with 125.
    """
    if isinstance(exc, DaemonUnavailable) and not daemon_error(exc):
        raise exc
    text = f"Error response from daemon: {exc}" if daemon_error(exc) else str(exc)
    print(f"{prefix}{text}", file=sys.stderr)


def inspect_each(ctx: Context, urls: list[str], template: str) -> int:
    """`inspect` of named objects: GET each URL, print them as a JSON list (or through a
    template); a missing one is reported and makes the exit status 1, the rest still print."""
    import json

    from steelcup.cli.format import render_template

    found: list[object] = []
    status = 0
    for url in urls:
        try:
            found.append(ctx.client().get_json(url))
        except SteelcupError as exc:
            report(exc)
            status = 1
    if template:
        for obj in found:
            print(render_template(template, obj))
    else:
        print(json.dumps(found, indent=4))
    return status


def post_and_print(ctx: Context, url: str, body: dict[str, object], key: str = "Name") -> int:
    """POST `body` as JSON and print the answer's `key` (a create); a daemon error is
    reported and makes the status 1."""
    try:
        out = ctx.client().post_json(url, json_body=body)
    except SteelcupError as exc:
        report(exc)
        return 1
    print(out[key])
    return 0


def delete_each(ctx: Context, names: list[str], url_of: Callable[[str], str],
                query: Query = None) -> int:
    """DELETE each named object, printing its name; a failure is reported, the rest go on,
    and the status is 1 if any failed (docker's rm)."""
    status = 0
    for name in names:
        try:
            ctx.client().delete(url_of(name), query)
            print(name)
        except SteelcupError as exc:
            report(exc)
            status = 1
    return status
