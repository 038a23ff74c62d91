"""Stages, ARG scoping, metadata instructions and cache keys, before anything runs."""

from typing import Any

import pytest

from steelcup.build.dockerfile import parse
from steelcup.build.plan import (
    StageState,
    apply_arg,
    apply_meta,
    cache_key,
    plan,
    run_argv,
    run_env,
)
from steelcup.errors import InvalidArgument

MULTI = """\
ARG BASE=busybox
ARG TAG
FROM $BASE:${TAG:-latest} AS Build
RUN echo hi
FROM scratch
COPY --from=build /x /x
"""


def test_stages_and_global_args() -> None:
    p = plan(parse(MULTI), {})
    assert [(s.name, s.base, s.line) for s in p.stages] == [
        ("build", "busybox:latest", 3), ("", "scratch", 5)]
    assert p.steps_total == 4
    assert plan(parse(MULTI), {"TAG": "1.36"}).stages[0].base == "busybox:1.36"
    assert p.stage_by_ref("build", 1) is p.stages[0]
    assert p.stage_by_ref("0", 1) is p.stages[0]
    assert p.stage_by_ref("alpine", 1) is None
    assert p.stage_by_ref("0", 1, by_index=False) is None  # FROM 0 names an image
    with pytest.raises(InvalidArgument, match="current build stage or a later one"):
        p.stage_by_ref("1", 1)


def test_target_stops_at_its_stage() -> None:
    assert len(plan(parse(MULTI), {}, target="build").stages) == 1
    with pytest.raises(InvalidArgument, match="failed to reach build target nope"):
        plan(parse(MULTI), {}, target="nope")


@pytest.mark.parametrize(("text", "message"), [
    ("RUN x\n", "line 1: no build stage"),
    ("FROM a AS b\nFROM c AS b\n", "line 2: FROM: duplicate name 'b'"),
    ("FROM a b\n", "line 1: FROM: FROM requires either one or three"),
    ("FROM --platform=linux/arm64 a\n", "platform 'linux/arm64' is not supported"),
])
def test_bad_stages(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        plan(parse(text), {})


def test_platform_amd64_accepted() -> None:
    assert plan(parse("FROM --platform=linux/amd64 a\n"), {}).stages[0].base == "a"


def meta(lines: str, config: dict[str, Any] | None = None) -> tuple[StageState, list[str]]:
    df = parse("FROM a\n" + lines)
    state = StageState(config=dict(config or {}))
    shown = []
    for instr in df.instructions[1:]:
        if instr.cmd == "ARG":
            apply_arg(state, instr, {}, {"B": "from-cli"}, df.escape)
        else:
            shown.append(apply_meta(state, instr, df.escape))
    return state, shown


def test_env_and_substitution() -> None:
    state, shown = meta('ENV A=1 B="two words"\nENV C=$A${B:+!} A=2\nENV D $C x\n')
    assert state.config["Env"] == ["A=2", "B=two words", "C=1!", "D=1! x"]
    assert shown[0] == "ENV A=1 B=two words"


def test_args_from_cli_and_defaults_and_proxy() -> None:
    state, _ = meta("ARG A=dflt\nARG B=ignored\nARG C\nENV E=$A-$B-$C\n")
    assert state.env()["E"] == "dflt-from-cli-"
    assert run_env(state, {"HTTP_PROXY": "p", "UNDECLARED": "u"}) == {
        "A": "dflt", "B": "from-cli", "HTTP_PROXY": "p"}


def test_cmd_entrypoint_shell() -> None:
    state, _ = meta('SHELL ["/bin/ash", "-eo"]\nCMD echo hi\n', {"Cmd": ["sh"]})
    assert state.config["Cmd"] == ["/bin/ash", "-eo", "echo hi"]
    state, _ = meta('ENTRYPOINT ["/e"]\n', {"Cmd": ["sh"]})
    assert state.config["Entrypoint"] == ["/e"] and state.config["Cmd"] is None
    state, _ = meta('CMD ["x"]\nENTRYPOINT ["/e"]\n', {"Cmd": ["sh"]})
    assert state.config["Cmd"] == ["x"]


def test_workdir_user_expose_volume_label_stopsignal() -> None:
    state, _ = meta("WORKDIR /a\nWORKDIR b/../c\nUSER 1:2\nEXPOSE 80 53/udp 1-2\n"
                    'VOLUME /v /w\nVOLUME ["/j"]\nLABEL "x y"=z a=\'b c\'\nSTOPSIGNAL KILL\n')
    c = state.config
    assert c["WorkingDir"] == "/a/c" and c["User"] == "1:2"
    assert set(c["ExposedPorts"]) == {"80/tcp", "53/udp", "1/tcp", "2/tcp"}
    assert set(c["Volumes"]) == {"/v", "/w", "/j"}
    assert c["Labels"] == {"x y": "z", "a": "b c"} and c["StopSignal"] == "KILL"


def test_healthcheck_and_onbuild() -> None:
    state, _ = meta("HEALTHCHECK --interval=1m30s --retries=2 CMD true\nONBUILD RUN echo x\n")
    assert state.config["Healthcheck"] == {
        "Test": ["CMD-SHELL", "true"], "Interval": 90_000_000_000, "Retries": 2}
    assert state.config["OnBuild"] == ["RUN echo x"]
    state, _ = meta("HEALTHCHECK NONE\n")
    assert state.config["Healthcheck"] == {"Test": ["NONE"]}


@pytest.mark.parametrize(("text", "message"), [
    ("EXPOSE 80/xyz\n", "line 2: EXPOSE: invalid proto: xyz"),
    ("EXPOSE abc\n", "invalid containerPort"),
    ("STOPSIGNAL NOPE\n", "invalid signal"),
    ("SHELL /bin/sh\n", "line 2: SHELL: SHELL requires the arguments to be in JSON form"),
    ("HEALTHCHECK --interval=soon CMD x\n", "invalid duration"),
    ("HEALTHCHECK --bogus=1 CMD x\n", "unknown flag: --bogus"),
    ("ENV A\n", "ENV must have two arguments"),
])
def test_meta_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        meta(text)


def test_run_argv() -> None:
    df = parse('FROM a\nRUN echo $HOME\nRUN ["/bin/true", "x"]\nRUN <<EOF\necho hi\nEOF\n')
    state = StageState(config={})
    assert run_argv(state, df.instructions[1]) == ("/bin/sh", "-c", "echo $HOME")
    assert run_argv(state, df.instructions[2]) == ("/bin/true", "x")
    assert run_argv(state, df.instructions[3]) == ("/bin/sh", "-c", "echo hi\n")


def test_cache_key_changes_with_each_input() -> None:
    base = cache_key("sha256:p", "RUN x", {"args": {"A": "1"}})
    assert base == cache_key("sha256:p", "RUN x", {"args": {"A": "1"}})
    assert len({base, cache_key("sha256:q", "RUN x", {"args": {"A": "1"}}),
                cache_key("sha256:p", "RUN y", {"args": {"A": "1"}}),
                cache_key("sha256:p", "RUN x", {"args": {"A": "2"}})}) == 4
