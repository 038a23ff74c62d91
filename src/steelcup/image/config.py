"""`ImageConfig`: the run-time defaults of an image, parsed and validated from its config JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from steelcup.errors import ImageError

HEALTH_KINDS = ("NONE", "CMD", "CMD-SHELL")


@dataclass(frozen=True)
class HealthConfig:
    """Docker's HealthConfig, as images and create bodies carry it. Durations in ns; 0 (and
    an empty `test`) means "not set": the image's value, else dockerd's default."""

    test: tuple[str, ...] = ()  # () inherit | ("NONE",) | ("CMD", argv...) | ("CMD-SHELL", cmd)
    interval_ns: int = 0
    timeout_ns: int = 0
    start_period_ns: int = 0
    start_interval_ns: int = 0
    retries: int = 0

    @property
    def disabled(self) -> bool:
        """No probe runs: none was set, or NONE turned off the image's."""
        return not self.test or self.test[0] == "NONE"

    @classmethod
    def from_dict(cls, obj: Any) -> HealthConfig:
        """Docker's `Healthcheck` object; ValueError naming the bad field."""
        if not isinstance(obj, dict):
            raise ValueError("Healthcheck must be an object")
        test = obj.get("Test")
        if test is None:
            test = []
        if not isinstance(test, list) or not all(isinstance(t, str) for t in test):
            raise ValueError("Healthcheck.Test must be a list of strings")
        if test and test[0] not in HEALTH_KINDS:
            raise ValueError(f"Healthcheck.Test: unknown kind {test[0]!r} (expected NONE, CMD "
                             "or CMD-SHELL)")
        if test and test[0] != "NONE" and len(test) < 2:
            raise ValueError(f"Healthcheck.Test: {test[0]} needs a command")

        def number(key: str) -> int:
            value = obj.get(key)
            if value is None:
                return 0
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"Healthcheck.{key} must be an integer")
            return value

        return cls(test=tuple(test), interval_ns=number("Interval"),
                   timeout_ns=number("Timeout"), start_period_ns=number("StartPeriod"),
                   start_interval_ns=number("StartInterval"), retries=number("Retries"))

    def to_dict(self) -> dict[str, Any]:
        """Docker's shape (zero durations and retries left out, as its omitempty does)."""
        out: dict[str, Any] = {"Test": list(self.test)}
        for key, value in (("Interval", self.interval_ns), ("Timeout", self.timeout_ns),
                           ("StartPeriod", self.start_period_ns),
                           ("StartInterval", self.start_interval_ns),
                           ("Retries", self.retries)):
            if value:
                out[key] = value
        return out

    def to_json(self) -> dict[str, Any]:
        return {"test": list(self.test), "interval_ns": self.interval_ns,
                "timeout_ns": self.timeout_ns, "start_period_ns": self.start_period_ns,
                "start_interval_ns": self.start_interval_ns, "retries": self.retries}

    @staticmethod
    def from_json(data: dict[str, Any]) -> HealthConfig:
        return HealthConfig(**{**data, "test": tuple(str(t) for t in data.get("test", ()))})


@dataclass(frozen=True)
class ImageConfig:
    """The `config` object of an OCI/Docker image config. `None` means "not set"."""

    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()  # "80/tcp"
    volumes: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    stop_signal: str = ""
    healthcheck: HealthConfig | None = None  # HEALTHCHECK

    @classmethod
    def from_image_json(cls, doc: Any) -> ImageConfig:
        """Parse a whole image config document (the one whose digest is the image id)."""
        if not isinstance(doc, dict):
            raise ImageError("image config must be a JSON object")
        inner = doc.get("config")
        if inner is None:
            return cls()
        return cls.from_dict(inner)

    @classmethod
    def from_dict(cls, obj: Any) -> ImageConfig:
        """Parse the inner `config` object (Docker CamelCase keys, as in OCI image-spec)."""
        if obj is None:
            return cls()
        if not isinstance(obj, dict):
            raise ImageError("image config: 'config' must be a JSON object")
        return cls(
            entrypoint=_opt_str_list(obj, "Entrypoint"),
            cmd=_opt_str_list(obj, "Cmd"),
            env=_env(obj),
            working_dir=_str(obj, "WorkingDir"),
            user=_str(obj, "User"),
            exposed_ports=_ports(obj),
            volumes=_key_set(obj, "Volumes"),
            labels=_labels(obj),
            stop_signal=_str(obj, "StopSignal"),
            healthcheck=_healthcheck(obj),
        )

    def to_dict(self) -> dict[str, Any]:
        """The inverse of `from_dict` (only keys that are set)."""
        out: dict[str, Any] = {}
        if self.user:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.env:
            out["Env"] = list(self.env)
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        if self.volumes:
            out["Volumes"] = {v: {} for v in self.volumes}
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.labels:
            out["Labels"] = dict(self.labels)
        if self.stop_signal:
            out["StopSignal"] = self.stop_signal
        if self.healthcheck is not None:
            out["Healthcheck"] = self.healthcheck.to_dict()
        return out

    def env_dict(self) -> dict[str, str]:
        """Env as a mapping (later entries win, `KEY` without `=` maps to "")."""
        result: dict[str, str] = {}
        for item in self.env:
            key, _, value = item.partition("=")
            result[key] = value
        return result


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ImageError(f"image config: {key} must be a string, got {type(value).__name__}")
    return value


def _opt_str_list(obj: dict[str, Any], key: str) -> tuple[str, ...] | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, str):  # some old images store a shell string
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageError(f"image config: {key} must be a list of strings")
    return tuple(value)


def _env(obj: dict[str, Any]) -> tuple[str, ...]:
    value = obj.get("Env")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageError("image config: Env must be a list of strings")
    for item in value:
        if not item or item.startswith("=") or "\0" in item:
            raise ImageError(f"image config: invalid Env entry {item!r}")
    return tuple(value)


def _key_set(obj: dict[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ImageError(f"image config: {key} must be an object")
    return tuple(sorted(str(k) for k in value))


def _ports(obj: dict[str, Any]) -> tuple[str, ...]:
    ports = _key_set(obj, "ExposedPorts")
    normalised = []
    for port in ports:
        number, _, proto = port.partition("/")
        proto = proto or "tcp"
        valid_number = number.isdigit() and 0 < int(number) < 65536
        if not valid_number or proto not in ("tcp", "udp", "sctp"):
            raise ImageError(f"image config: invalid exposed port {port!r}")
        normalised.append(f"{int(number)}/{proto}")
    return tuple(sorted(set(normalised)))


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    value = obj.get("Labels")
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ImageError("image config: Labels must map strings to strings")
    return dict(value)


def _healthcheck(obj: dict[str, Any]) -> HealthConfig | None:
    value = obj.get("Healthcheck")
    if value is None:
        return None
    try:
        return HealthConfig.from_dict(value)
    except ValueError as exc:
        raise ImageError(f"image config: {exc}") from None
