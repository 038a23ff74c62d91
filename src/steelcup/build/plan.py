"""What a Dockerfile asks, before anything runs: its stages, the build arguments in scope,
and the image config each metadata instruction makes. Pure; `builder.py` does the effects.

An image config here is docker's `config` object as a dict (Env, Cmd, Entrypoint, WorkingDir,
User, ExposedPorts, Volumes, Labels, StopSignal, Healthcheck, Shell, OnBuild).
"""

from __future__ import annotations

import copy
import hashlib
import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from steelcup.build.dockerfile import Dockerfile, Instruction
from steelcup.build.words import expand_word, expand_words
from steelcup.errors import InvalidArgument
from steelcup.image.manifest import host_arch
from steelcup.runtime.spec import parse_signal

# Build arguments every Dockerfile may use without declaring them (and that stay out of the
# image's history unless declared), as docker's.
PREDEFINED_ARGS = frozenset({
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
    "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
})
DEFAULT_SHELL = ("/bin/sh", "-c")
SUPPORTED_PLATFORMS = ("linux/amd64", "linux/x86_64", "linux", "amd64")
_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.-]*$")
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                "m": 60_000_000_000, "h": 3_600_000_000_000}


def fail(instr: Instruction, message: str) -> InvalidArgument:
    """docker's kind of message for a bad instruction: it names the line."""
    return InvalidArgument(f"Dockerfile line {instr.line}: {instr.cmd}: {message}")


@dataclass(frozen=True)
class Stage:
    index: int
    name: str  # "" when unnamed (AS is lower-cased, as docker)
    base: str  # the FROM image, expanded ("scratch" for none)
    line: int
    from_instruction: Instruction
    instructions: tuple[Instruction, ...]


@dataclass(frozen=True)
class Plan:
    stages: tuple[Stage, ...]  # up to and including the target
    global_args: Mapping[str, str | None]  # ARGs before the first FROM (None: no default)
    escape: str
    steps_total: int  # what "Step N/M" counts

    def stage_by_ref(self, ref: str, before: int, *, by_index: bool = True) -> Stage | None:
        """The earlier stage `--from=` (by name or index) or `FROM` (by name: `FROM 0` is an
        image) names; None for an image."""
        for stage in self.stages[:before]:
            if stage.name and stage.name == ref.lower():
                return stage
        if by_index and ref.isdigit():
            index = int(ref)
            if index < before:
                return self.stages[index]
            raise InvalidArgument(f"invalid from flag value {ref}: refers to current build "
                                  "stage or a later one")
        return None


def plan(df: Dockerfile, build_args: Mapping[str, str], target: str = "") -> Plan:
    """Stages up to `target` (all when empty); InvalidArgument naming the line if bad."""
    global_args: dict[str, str | None] = {}
    instrs = list(df.instructions)
    i = 0
    while i < len(instrs) and instrs[i].cmd == "ARG":
        for name, default in parse_arg(instrs[i], {**_given(global_args, build_args)}, df.escape):
            global_args[name] = default
        i += 1
    if i == len(instrs) or instrs[i].cmd != "FROM":
        line = instrs[i].line if i < len(instrs) else instrs[-1].line
        raise InvalidArgument(f"Dockerfile line {line}: no build stage in current context: "
                              "the first instruction must be FROM (ARG may come before it)")
    scope = _given(global_args, build_args)
    stages: list[Stage] = []
    while i < len(instrs):
        head = instrs[i]
        body: list[Instruction] = []
        i += 1
        while i < len(instrs) and instrs[i].cmd != "FROM":
            body.append(instrs[i])
            i += 1
        base, name = _parse_from(head, scope, df.escape, [s.name for s in stages])
        stages.append(Stage(len(stages), name, base, head.line, head, tuple(body)))
    if target:
        chosen = next((s for s in stages if s.name == target.lower()), None)
        if chosen is None:
            raise InvalidArgument(f"failed to reach build target {target} in Dockerfile")
        stages = stages[:chosen.index + 1]
    total = sum(1 + len(s.instructions) for s in stages)
    return Plan(tuple(stages), global_args, df.escape, total)


def _given(declared: Mapping[str, str | None], build_args: Mapping[str, str]) -> dict[str, str]:
    """Declared args with a value: the build's if it gives one, else the default."""
    out = {}
    for name, default in declared.items():
        if name in build_args:
            out[name] = build_args[name]
        elif default is not None:
            out[name] = default
    return out


def _parse_from(instr: Instruction, scope: Mapping[str, str], escape: str,
                earlier: Sequence[str]) -> tuple[str, str]:
    instr.check_flags(frozenset({"platform"}))
    platform = instr.flag("platform")
    if platform is not None:
        check_platform(expand_word(platform, scope, escape), instr.line)
    args = instr.args
    if len(args) not in (1, 3) or (len(args) == 3 and args[1].lower() != "as"):
        raise fail(instr, 'FROM requires either one or three arguments ("FROM image '
                   '[AS name]")')
    base = expand_word(args[0], scope, escape)
    if not base:
        raise fail(instr, f"base name ({args[0]}) should not be blank")
    name = args[2].lower() if len(args) == 3 else ""
    if name:
        if not _NAME.fullmatch(name):
            raise fail(instr, f"invalid name for build stage: {args[2]!r}, name can't start "
                       "with a number or contain symbols")
        if name in earlier:
            raise fail(instr, f"duplicate name {name!r}")
    return base, name


def check_platform(platform: str, line: int = 0) -> None:
    if platform and platform.lower() not in SUPPORTED_PLATFORMS:
        where = f"Dockerfile line {line}: " if line else ""
        raise InvalidArgument(f"{where}platform {platform!r} is not supported: steelcup builds "
                              f"for linux/{host_arch()} only")


def parse_arg(instr: Instruction, scope: Mapping[str, str],
              escape: str) -> list[tuple[str, str | None]]:
    """`ARG NAME[=default] ...`: the names with their expanded defaults."""
    if not instr.args or instr.args == ("",):
        raise fail(instr, "ARG requires at least one argument")
    out: list[tuple[str, str | None]] = []
    for word in instr.args:
        name, sep, default = word.partition("=")
        if not name:
            raise fail(instr, f"ARG names can not be blank: {word!r}")
        out.append((name, expand_word(default, scope, escape) if sep else None))
    return out


@dataclass
class StageState:
    """What a stage's next instruction sees: the image config so far and its ARGs."""

    config: dict[str, Any]
    args: dict[str, str] = field(default_factory=dict)  # declared in this stage, with a value
    declared: set[str] = field(default_factory=set)
    cmd_set: bool = False  # a CMD in this stage (an ENTRYPOINT then keeps it)
    author: str = ""  # MAINTAINER

    def env(self) -> dict[str, str]:
        out = {}
        for entry in self.config.get("Env") or []:
            key, _, value = str(entry).partition("=")
            out[key] = value
        return out

    def scope(self) -> dict[str, str]:
        """What `$VAR` expands to: the ARGs, overridden by ENV."""
        return {**self.args, **self.env()}

    def shell(self) -> tuple[str, ...]:
        return tuple(self.config.get("Shell") or DEFAULT_SHELL)


def apply_arg(state: StageState, instr: Instruction, global_args: Mapping[str, str | None],
              build_args: Mapping[str, str], escape: str) -> None:
    for name, default in parse_arg(instr, state.scope(), escape):
        state.declared.add(name)
        if name in build_args:
            state.args[name] = build_args[name]
        elif default is not None:
            state.args[name] = default
        elif global_args.get(name) is not None:  # re-declared global with a default
            state.args[name] = str(global_args[name])


def run_env(state: StageState, build_args: Mapping[str, str]) -> dict[str, str]:
    """The ARGs a RUN sees as environment: declared ones and the predefined proxy args."""
    out = dict(state.args)
    for name in PREDEFINED_ARGS:
        if name in build_args and name not in state.declared:
            out[name] = build_args[name]
    return out


def run_argv(state: StageState, instr: Instruction) -> tuple[str, ...]:
    """The process a RUN runs: the exec form as given, the shell form under SHELL."""
    if instr.json:
        if not instr.args:
            raise fail(instr, "RUN requires at least one argument")
        return instr.args
    text = instr.rest
    if instr.heredocs:
        if len(instr.heredocs) != 1 or instr.rest.strip().splitlines()[0].strip() != \
                f"<<{instr.heredocs[0].name}":
            raise fail(instr, "only a RUN that is one here-document is supported "
                       "(RUN <<EOF ... EOF)")
        text = instr.heredocs[0].content
    if not text.strip():
        raise fail(instr, "RUN requires at least one argument")
    return (*state.shell(), text)


def apply_meta(state: StageState, instr: Instruction, escape: str) -> str:
    """Apply a metadata instruction (no filesystem change) to `state.config`; returns what
    history records it as (docker's `#(nop)` text)."""
    c = state.config
    scope = state.scope()
    cmd = instr.cmd
    if cmd == "ENV" or cmd == "LABEL":
        pairs = _pairs(instr, scope, escape)
        if cmd == "ENV":
            env = state.env()
            env.update(pairs)
            c["Env"] = [f"{k}={v}" for k, v in env.items()]
        else:
            c["Labels"] = {**(c.get("Labels") or {}), **dict(pairs)}
        shown = " ".join(f"{k}={_quote(v)}" if cmd == "LABEL" else f"{k}={v}" for k, v in pairs)
        return f"{cmd} {shown}"
    if cmd in ("CMD", "ENTRYPOINT"):
        value: list[str] | None
        if instr.json:
            value = list(instr.args)
        elif instr.rest.strip():
            value = [*state.shell(), instr.rest]
        else:
            value = None if cmd == "ENTRYPOINT" else []
        c["Cmd" if cmd == "CMD" else "Entrypoint"] = value
        if cmd == "ENTRYPOINT" and not state.cmd_set:
            c["Cmd"] = None  # an ENTRYPOINT resets the base image's CMD
        if cmd == "CMD":
            state.cmd_set = True
        return f"{cmd} {json.dumps(value)}"
    if cmd == "WORKDIR":
        path = expand_word(instr.rest, scope, escape)
        if not path:
            raise fail(instr, "WORKDIR requires exactly one argument")
        c["WorkingDir"] = posixpath.normpath(posixpath.join(c.get("WorkingDir") or "/", path))
        return f"WORKDIR {c['WorkingDir']}"
    if cmd == "USER":
        user = expand_word(instr.rest, scope, escape)
        if not user:
            raise fail(instr, "USER requires exactly one argument")
        c["User"] = user
        return f"USER {user}"
    if cmd == "EXPOSE":
        ports = dict(c.get("ExposedPorts") or {})
        words = expand_words(instr.rest, scope, escape)
        if not words:
            raise fail(instr, "EXPOSE requires at least one argument")
        for word in words:
            ports.update({p: {} for p in _ports(instr, word)})
        c["ExposedPorts"] = ports
        return f"EXPOSE {' '.join(sorted(ports))}"
    if cmd == "VOLUME":
        vols = dict(c.get("Volumes") or {})
        words = list(instr.args) if instr.json else expand_words(instr.rest, scope, escape)
        if not [w for w in words if w.strip()]:
            raise fail(instr, "VOLUME specified can not be an empty string")
        vols.update({w: {} for w in words if w.strip()})
        c["Volumes"] = vols
        return f"VOLUME {json.dumps(words)}"
    if cmd == "STOPSIGNAL":
        sig = expand_word(instr.rest, scope, escape)
        parse_signal(sig)
        c["StopSignal"] = sig
        return f"STOPSIGNAL {sig}"
    if cmd == "SHELL":
        if not instr.json or not instr.args:
            raise fail(instr, "SHELL requires the arguments to be in JSON form")
        c["Shell"] = list(instr.args)
        return f"SHELL {json.dumps(list(instr.args))}"
    if cmd == "HEALTHCHECK":
        c["Healthcheck"] = _healthcheck(state, instr)
        return f"HEALTHCHECK {json.dumps(c['Healthcheck'])}"
    if cmd == "ONBUILD":
        c["OnBuild"] = [*(c.get("OnBuild") or []), instr.trigger]
        return f"ONBUILD {instr.trigger}"
    if cmd == "MAINTAINER":
        state.author = instr.rest
        return f"MAINTAINER {instr.rest}"
    raise fail(instr, "not a metadata instruction")  # pragma: no cover - dispatch bug


def clean_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as stored in the image (keys set to nothing left out)."""
    return {k: copy.deepcopy(v) for k, v in config.items() if v is not None}


def _pairs(instr: Instruction, scope: Mapping[str, str], escape: str) -> list[tuple[str, str]]:
    args = instr.args
    if not args or args == ("",):
        raise fail(instr, f"{instr.cmd} requires at least one argument")
    if len(args) % 2:
        raise fail(instr, f"{instr.cmd} must have two arguments")
    out = []
    for key, value in zip(args[::2], args[1::2], strict=True):
        name = expand_word(key, scope, escape)
        if not name:
            raise fail(instr, f"{instr.cmd} names can not be blank")
        out.append((name, expand_word(value, scope, escape)))
    return out


def _quote(value: str) -> str:
    return json.dumps(value) if (not value or any(ch in value for ch in ' "\\\t')) else value


def _ports(instr: Instruction, word: str) -> list[str]:
    port, _, proto = word.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise fail(instr, f"invalid proto: {proto}")
    low, dash, high = port.partition("-")
    if not low.isdigit() or (dash and not high.isdigit()):
        raise fail(instr, f"invalid containerPort: {port}")
    first, last = int(low), int(high) if dash else int(low)
    if not 0 < first <= last <= 65535:
        raise fail(instr, f"invalid range of ports: {port}")
    return [f"{p}/{proto}" for p in range(first, last + 1)]


def _duration_ns(instr: Instruction, name: str, default: int = 0) -> int:
    raw = instr.flag(name)
    if raw is None:
        return default
    if raw in ("0", ""):
        return 0
    if not _DURATION.fullmatch(raw):
        raise fail(instr, f"--{name}: time: invalid duration {raw!r}")
    return int(sum(float(n) * _DURATION_NS[u] for n, u in _DURATION_PART.findall(raw)))


def _healthcheck(state: StageState, instr: Instruction) -> dict[str, Any]:
    args = instr.args
    if not args:
        raise fail(instr, "HEALTHCHECK requires at least one argument")
    kind = args[0].upper()
    if kind == "NONE":
        if len(args) > 1 or instr.flags:
            raise fail(instr, "HEALTHCHECK NONE takes no arguments")
        return {"Test": ["NONE"]}
    if kind != "CMD":
        raise fail(instr, f'Unknown type "{args[0]}" in HEALTHCHECK (try CMD)')
    instr.check_flags(frozenset({"interval", "timeout", "start-period", "start-interval",
                                 "retries"}))
    if instr.json:
        test = ["CMD", *args[1:]]
    else:
        command = instr.rest.split(None, 1)[1] if len(instr.rest.split(None, 1)) > 1 else ""
        if not command.strip():
            raise fail(instr, "HEALTHCHECK CMD requires a command")
        test = ["CMD-SHELL", command]
    out: dict[str, Any] = {"Test": test}
    for flag, key in (("interval", "Interval"), ("timeout", "Timeout"),
                      ("start-period", "StartPeriod"), ("start-interval", "StartInterval")):
        ns = _duration_ns(instr, flag)
        if ns:
            out[key] = ns
    retries = instr.flag("retries")
    if retries is not None:
        if not retries.isdigit() or int(retries) < 1:
            raise fail(instr, "--retries must be at least 1")
        out["Retries"] = int(retries)
    return out


def cache_key(parent: str, instruction: str, extra: Mapping[str, Any] | None = None) -> str:
    """The build cache key of one step: its parent image, its instruction as it will run,
    and what else decides its result (file checksums for COPY, ARG values for RUN)."""
    doc = json.dumps([parent, instruction, dict(extra or {})], sort_keys=True)
    return "sha256:" + hashlib.sha256(doc.encode()).hexdigest()
