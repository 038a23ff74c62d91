"""The one exception tree of steelcup.

Every error raised across a layer boundary is a `SteelcupError`. The API layer maps the
subclasses to HTTP status codes (and only it does); the CLI maps them to exit codes.
"""

from __future__ import annotations


class SteelcupError(Exception):
    """Root of all steelcup errors. `str(err)` is a message a person can act on."""


class NotFound(SteelcupError):
    """A named thing (container, image, exec, file) does not exist."""


class Unauthorized(SteelcupError):
    """The request does not say who it speaks for (no or an unknown credential)."""


class Forbidden(SteelcupError):
    """Who the request speaks for may not do this (an operator-only endpoint, a quota)."""


class Conflict(SteelcupError):
    """The request clashes with current state (name in use, container running, ...)."""


class InvalidArgument(SteelcupError):
    """The caller sent something malformed or out of range."""


class Unsupported(SteelcupError):
    """A feature steelcup does not implement (yet)."""


class Unavailable(SteelcupError):
    """The daemon cannot do this in its present role (dockerd's 503), e.g. swarm calls on a
    node that is not in a swarm."""


class NotInSwarm(Unavailable):
    """A swarm operation on a node that is not part of a swarm."""


class ImageError(SteelcupError):
    """An image or layer archive is malformed, unsafe or over a limit."""


class VmLaunchError(SteelcupError):
    """QEMU failed to start or the guest never became ready."""

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None = None,
        argv: list[str] | None = None,
        log_tail: str = "",
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.argv = argv or []
        self.log_tail = log_tail

    def __str__(self) -> str:
        text = super().__str__()
        if self.exit_code is not None:
            text += f" (qemu exit code {self.exit_code})"
        if self.log_tail:
            text += "\n--- guest console (tail) ---\n" + self.log_tail
        return text


class GuestProtocolError(SteelcupError):
    """The guest sent something that violates docs/guest-protocol.md, or went away."""


class ProcessStartError(SteelcupError):
    """The guest could not start a process; `exit_code` follows docker (126/127)."""

    def __init__(self, message: str, *, errno_value: int, exit_code: int) -> None:
        super().__init__(message)
        self.errno_value = errno_value
        self.exit_code = exit_code


class DaemonUnavailable(SteelcupError):
    """The CLI could not reach or start a daemon."""


class TooBusy(SteelcupError):
    """Too many requests of one kind wait already (a func's full call queue): retry later."""
