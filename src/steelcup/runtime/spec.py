"""Pure rules that turn an image config plus a create request into what runs: argv, env, cwd.

They follow docker's: an Entrypoint given at create time drops the image's Cmd; a Cmd given at
create time replaces the image's Cmd; env entries override the image's by key.
"""

from __future__ import annotations

import signal as signal_module
from collections.abc import Sequence

from steelcup.errors import InvalidArgument

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def resolve_argv(
    image_entrypoint: Sequence[str] | None,
    image_cmd: Sequence[str] | None,
    entrypoint: Sequence[str] | None,
    cmd: Sequence[str] | None,
) -> list[str]:
    """The process argv docker would run; InvalidArgument when it comes out empty."""
    if entrypoint is not None:
        # `--entrypoint ""` resets the image's entrypoint; either way the image Cmd is dropped.
        chosen_entry = [e for e in entrypoint if e != ""] if list(entrypoint) == [""] else list(
            entrypoint
        )
        argv = chosen_entry + list(cmd or [])
    else:
        argv = list(image_entrypoint or []) + list(cmd if cmd else (image_cmd or []))
    if not argv:
        raise InvalidArgument("no command specified")
    return argv


def merge_env(image_env: Sequence[str], env: Sequence[str]) -> list[str]:
    """Image env overridden by request env (by key), PATH defaulted; order kept stable.

    A request entry without `=` unsets the variable, as dockerd: filling in its value from
    the client's environment is the client's job (the docker CLI's `-e NAME`)."""
    merged: dict[str, str] = {}
    for entry in list(image_env) + list(env):
        key, sep, value = entry.partition("=")
        if not key:
            raise InvalidArgument(f"invalid environment variable: {entry!r}")
        if sep:
            merged[key] = value
        else:
            merged.pop(key, None)
    merged.setdefault("PATH", DEFAULT_PATH)
    return [f"{k}={v}" for k, v in merged.items()]


def process_env(env: Sequence[str], *, home: str, hostname: str, tty: bool,
                dockerd: bool = True) -> tuple[str, ...]:
    """What a container's process starts with. As dockerd gives it (`dockerd`): PATH,
    HOSTNAME and (with a tty) TERM=xterm, each overridden by the container's merged `env`,
    which follows; an OCI bundle's container (not `dockerd`) gets its `env` as the engine
    that wrote the bundle gave it. Either way, as runc: HOME, when still unset, the user's
    home directory (`users.User.home`). The container's Config.Env stays without these, as
    docker's."""
    base = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}", *(["TERM=xterm"] if tty else [])]
    merged = merge_env(base if dockerd else [], env)
    if not any(entry.startswith("HOME=") for entry in merged):
        merged.append(f"HOME={home}")
    return tuple(merged)


def parse_signal(value: str | int, default: int = signal_module.SIGKILL) -> int:
    """A signal given as a number, `KILL` or `SIGKILL` (docker accepts all three)."""
    if isinstance(value, int):
        signo = value
    else:
        text = value.strip().upper()
        if not text:
            return default
        if text.isdigit():
            signo = int(text)
        else:
            name = text if text.startswith("SIG") else "SIG" + text
            try:
                signo = int(signal_module.Signals[name])
            except KeyError:
                raise InvalidArgument(f"invalid signal: {value}") from None
    if not 1 <= signo <= 64:
        raise InvalidArgument(f"invalid signal: {value}")
    return signo


def parse_mem_bytes(value: int) -> int:
    """Docker's HostConfig.Memory (bytes) -> MiB for the VM; 0 means the daemon default."""
    if value < 0:
        raise InvalidArgument("memory limit must not be negative")
    if value == 0:
        return 0
    mib = (value + (1 << 20) - 1) >> 20
    if mib < 64:
        raise InvalidArgument("minimum memory limit for a steelcup VM is 64MiB")
    return mib


def start_failure_text(argv0: str, exit_code: int, detail: str) -> str:
    """Why a container's process could not start, in dockerd's words, which clients read the
    exit status from (the docker CLI: 127 not found, 126 not executable, else 125)."""
    if exit_code == 127:
        why = "no such file or directory" if "/" in argv0 else "executable file not found in $PATH"
    elif exit_code == 126:
        why = "permission denied"
    else:
        return detail
    return f'exec: "{argv0}": {why} ({detail})'
