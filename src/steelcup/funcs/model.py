"""Funcs and their calls (pure: no I/O): the records, their validation, and how an HTTP
request's headers and query parameters become a call's environment (docs/funcs.md)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from steelcup.errors import InvalidArgument

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
MIB = 1024 * 1024
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_CONCURRENCY = 4
DEFAULT_MAX_BYTES = MIB  # of a call's input and of its output, each
DEFAULT_QUEUE = 100  # calls waiting for a slot, per func
MAX_LIMIT_BYTES = 64 * MIB  # the most a func may allow its input or output to be
MAX_TIMEOUT_S = 24 * 3600.0
FUNC_LABEL = "sh.steelcup.func"  # on each call's container: the func's name
CALL_LABEL = "sh.steelcup.func-call"  # ... and the call's id


class Auth(Enum):
    """Who may call a func at the gateway."""

    SECRET = "secret"  # whoever knows its secret (in the URL)
    TOKEN = "token"  # a bearer token of its tenant's keys


class CallStatus(Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"  # exited 0
    FAILED = "failed"  # a non-zero exit, output over its cap, or the container failed
    TIMED_OUT = "timed-out"

    @property
    def finished(self) -> bool:
        return self not in (CallStatus.QUEUED, CallStatus.RUNNING)


@dataclass(frozen=True)
class Limits:
    """What one func's calls may do."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    concurrency: int = DEFAULT_CONCURRENCY
    max_input_bytes: int = DEFAULT_MAX_BYTES
    max_output_bytes: int = DEFAULT_MAX_BYTES
    queue: int = DEFAULT_QUEUE

    def checked(self) -> Limits:
        if not 0 < self.timeout_s <= MAX_TIMEOUT_S:
            raise InvalidArgument(f"func timeout must be above 0 and at most "
                                  f"{MAX_TIMEOUT_S:g}s, not {self.timeout_s:g}s")
        if not 1 <= self.concurrency <= 1000:
            raise InvalidArgument(f"func concurrency must be 1 to 1000, not {self.concurrency}")
        for what, value in (("max-input", self.max_input_bytes),
                            ("max-output", self.max_output_bytes)):
            if not 0 < value <= MAX_LIMIT_BYTES:
                raise InvalidArgument(f"func {what} must be above 0 and at most "
                                      f"{MAX_LIMIT_BYTES // MIB} MiB, not {value} bytes")
        if not 0 <= self.queue <= 10000:
            raise InvalidArgument(f"func queue must be 0 to 10000, not {self.queue}")
        return self


@dataclass(frozen=True)
class Func:
    """One func: a container spec (the body of a docker create, as `run`'s flags make it)
    started once per call."""

    name: str
    tenant: str  # "" = the operator's
    spec: Mapping[str, Any]  # POST /containers/create body
    auth: Auth
    secret: str  # for Auth.SECRET; "" otherwise
    created: str  # RFC 3339
    limits: Limits = Limits()

    @property
    def key(self) -> str:
        """Its name daemon-wide: NAME for the operator's, TENANT/NAME for a tenant's."""
        return f"{self.tenant}/{self.name}" if self.tenant else self.name

    def to_json(self) -> dict[str, Any]:
        """As stored (the secret included)."""
        return {"Name": self.name, "Tenant": self.tenant, "Spec": dict(self.spec),
                "Auth": self.auth.value, "Secret": self.secret, "Created": self.created,
                "Timeout": self.limits.timeout_s, "Concurrency": self.limits.concurrency,
                "MaxInput": self.limits.max_input_bytes,
                "MaxOutput": self.limits.max_output_bytes, "Queue": self.limits.queue}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Func:
        return cls(name=data["Name"], tenant=data["Tenant"], spec=data["Spec"],
                   auth=Auth(data["Auth"]), secret=data["Secret"], created=data["Created"],
                   limits=Limits(float(data["Timeout"]), int(data["Concurrency"]),
                                 int(data["MaxInput"]), int(data["MaxOutput"]),
                                 int(data["Queue"])))


def check_func_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise InvalidArgument(f"invalid func name {name!r}: 1-63 of [a-zA-Z0-9_.-], starting "
                              "with a letter or digit")
    return name


def new_secret() -> str:
    return secrets.token_hex(16)


def new_call_id() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Call:
    """One call of a func, as `func logs` and `GET /calls/ID` show it."""

    id: str
    func: str  # the func's name
    tenant: str
    created: str
    status: CallStatus = CallStatus.QUEUED
    started: str = ""
    finished: str = ""
    exit_code: int | None = None
    error: str = ""
    input_bytes: int = 0
    container_id: str = ""
    stdout: bytes = b""  # whole (within the func's output cap)
    stderr: bytes = b""  # its last STDERR_KEEP bytes
    stdout_truncated: bool = False  # the output went over the cap (the call failed)

    def advanced(self, **changes: Any) -> Call:
        return replace(self, **changes)

    def summary_json(self) -> dict[str, Any]:
        return {"Id": self.id, "Func": self.func, "Status": self.status.value,
                "Created": self.created, "Started": self.started, "Finished": self.finished,
                "ExitCode": self.exit_code, "Error": self.error, "InputBytes": self.input_bytes,
                "OutputBytes": len(self.stdout), "ContainerId": self.container_id}


STDERR_KEEP = 64 * 1024
MAX_REQUEST_ENV = 128  # variables from one request's headers and query
MAX_REQUEST_ENV_BYTES = 64 * 1024
_NOT_PASSED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization",
                                 "proxy", "content-length", "transfer-encoding", "connection",
                                 "host"})
_NOT_PASSED_QUERY = frozenset({"secret", "async", "wait"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def request_env(headers: Iterable[tuple[str, str]], query: Mapping[str, list[str]],
                taken: Iterable[str] = ()) -> list[str]:
    """KEY=VALUE words for a call's container: each header as HTTP_<NAME> (upper case, every
    character other than a letter, digit or _ as _), each query parameter as QUERY_<name> (its
    last value; the name's case kept). Credentials (Authorization, Cookie, the `secret`
    parameter), hop-by-hop headers and `Proxy` (httpoxy) are not passed; nor is a name the
    func's own environment sets (`taken`), which wins. Values with NUL or a line break are
    dropped. InvalidArgument past MAX_REQUEST_ENV variables or MAX_REQUEST_ENV_BYTES."""
    own = {word.partition("=")[0] for word in taken}
    env: dict[str, str] = {}
    for name, value in headers:
        if name.lower() in _NOT_PASSED_HEADERS:
            continue
        key = "HTTP_" + _UNSAFE.sub("_", name).upper()
        env[key] = f"{env[key]}, {value}" if key in env else value
    for name, values in query.items():
        if name in _NOT_PASSED_QUERY or not values:
            continue
        env["QUERY_" + _UNSAFE.sub("_", name)] = values[-1]
    words = [f"{k}={v}" for k, v in env.items()
             if k not in own and not any(c in v for c in "\0\r\n")]
    if len(words) > MAX_REQUEST_ENV:
        raise InvalidArgument(f"too many headers and query parameters for a func call "
                              f"({len(words)}; at most {MAX_REQUEST_ENV})")
    if sum(len(w) for w in words) > MAX_REQUEST_ENV_BYTES:
        raise InvalidArgument(f"headers and query parameters of a func call larger than "
                              f"{MAX_REQUEST_ENV_BYTES} bytes")
    return words

