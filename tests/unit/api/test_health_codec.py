"""Health checks through the codec: Config.Healthcheck decoded and refused as dockerd refuses
it, merged with the image's HEALTHCHECK at create, and shown by inspect, `ps` and the
`health` filter as dockerd shows them."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest

from steelcup.api import docker_codec as codec
from steelcup.errors import ImageError, InvalidArgument
from steelcup.image.config import HealthConfig, ImageConfig
from steelcup.runtime import healthcheck
from steelcup.runtime.healthcheck import HealthResult, HealthState, HealthStatus
from steelcup.runtime.model import ContainerConfig, ContainerRecord, ContainerState, Status
from steelcup.state.db import open_db
from tests.unit.image.tarutil import make_tar
from tests.unit.runtime.support import make_runtime

S = 1_000_000_000


def _decode(health: Any) -> HealthConfig | None:
    return codec.decode_create({"Image": "busybox", "Healthcheck": health}).healthcheck


def test_the_docker_clis_body_is_decoded() -> None:
    got = _decode({"Test": ["CMD-SHELL", "test -f /tmp/ok"], "Interval": S, "Timeout": 2 * S,
                   "StartPeriod": 3 * S, "StartInterval": S // 2, "Retries": 4})
    assert got == HealthConfig(("CMD-SHELL", "test -f /tmp/ok"), S, 2 * S, 3 * S, S // 2, 4)
    assert _decode(None) is None
    assert _decode({"Test": ["NONE"]}) == HealthConfig(test=("NONE",))


@pytest.mark.parametrize(("health", "message"), [
    ({"Test": ["CMD", "true"], "Interval": 999}, "Interval in Healthcheck cannot be less than 1ms"),
    ({"Test": ["CMD", "true"], "Timeout": 1}, "Timeout in Healthcheck cannot be less than 1ms"),
    ({"StartPeriod": -5}, "StartPeriod in Healthcheck cannot be less than 1ms"),
    ({"StartInterval": 10}, "StartInterval in Healthcheck cannot be less than 1ms"),
    ({"Retries": -1}, "Retries in Healthcheck cannot be negative"),
    ({"Test": ["SHELL", "x"]}, "unknown kind 'SHELL'"),
    ({"Test": ["CMD"]}, "CMD needs a command"),
    ({"Test": "true"}, "Test must be a list of strings"),
    ({"Interval": "1s"}, "Interval must be an integer"),
    ("CMD true", "Healthcheck must be an object"),
])
def test_bad_values_are_refused_as_dockerd_does(health: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        _decode(health)


def test_merge_the_containers_non_zero_fields_win() -> None:
    image = HealthConfig(("CMD", "check"), interval_ns=10 * S, timeout_ns=5 * S, retries=2)
    own = HealthConfig(interval_ns=S, retries=7)
    assert healthcheck.merge(own, image) == HealthConfig(("CMD", "check"), S, 5 * S, 0, 0, 7)
    assert healthcheck.merge(None, image) == image
    assert healthcheck.merge(own, None) == own
    off = healthcheck.merge(HealthConfig(test=("NONE",)), image)
    assert off is not None and off.disabled and healthcheck.probe(off) is None


def test_the_probe_has_dockerds_defaults() -> None:
    probe = healthcheck.probe(HealthConfig(("CMD-SHELL", "curl -f x")))
    assert probe == healthcheck.Probe(("/bin/sh", "-c", "curl -f x"), 30.0, 30.0, 0.0, 5.0, 3)
    assert healthcheck.probe(HealthConfig(("CMD", "a", "b"))).argv == ("a", "b")  # type: ignore[union-attr]


def test_an_images_healthcheck_is_parsed_and_written_back() -> None:
    doc = {"Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 5 * S}}
    config = ImageConfig.from_dict(doc)
    assert config.healthcheck == HealthConfig(("CMD-SHELL", "true"), interval_ns=5 * S)
    assert config.to_dict()["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5 * S}
    with pytest.raises(ImageError, match="Healthcheck.Test"):
        ImageConfig.from_dict({"Healthcheck": {"Test": [1]}})


def test_create_merges_the_request_with_the_images_healthcheck(tmp_path: Path) -> None:
    async def main() -> None:
        runtime = make_runtime(tmp_path, open_db(tmp_path))
        image_check = HealthConfig(("CMD", "probe"), interval_ns=10 * S, retries=2)
        runtime.images.import_rootfs(io.BytesIO(make_tar([("dir", "bin")])), "checked:1",
                                     ImageConfig(cmd=("serve",), healthcheck=image_check))
        body = {"Image": "checked:1", "Healthcheck": {"Interval": S, "Timeout": 2 * S}}
        record = runtime.create(codec.decode_create(body), "web")
        assert record.config.healthcheck == HealthConfig(("CMD", "probe"), S, 2 * S, 0, 0, 2)
        shown = codec.encode_inspect(record, "")["Config"]["Healthcheck"]
        assert shown == {"Test": ["CMD", "probe"], "Interval": S, "Timeout": 2 * S,
                         "Retries": 2}
        plain = runtime.create(codec.decode_create({"Image": "checked:1"}), "plain")
        assert plain.config.healthcheck == image_check
        off = runtime.create(codec.decode_create(
            {"Image": "checked:1", "Healthcheck": {"Test": ["NONE"]}}), "off")
        assert codec.encode_inspect(off, "")["Config"]["Healthcheck"]["Test"] == ["NONE"]
        none = runtime.create(codec.decode_create({"Image": "base:1", "Cmd": ["x"]}), "none")
        assert "Healthcheck" not in codec.encode_inspect(none, "")["Config"]
        await runtime.shutdown()

    asyncio.run(main())


def _record(status: Status, health: HealthState | None) -> ContainerRecord:
    return ContainerRecord(
        id="c" * 64, name="web", created="2024-01-01T00:00:00Z",
        config=ContainerConfig(image="busybox", image_id="sha256:" + "a" * 64), path="sleep",
        args=(), state=ContainerState(status=status, started_at="2024-01-01T00:00:00Z",
                                      health=health))


def test_inspect_shows_state_health() -> None:
    result = HealthResult("2024-01-01T00:00:01Z", "2024-01-01T00:00:02Z", 1, "no\n")
    record = _record(Status.RUNNING, HealthState(HealthStatus.UNHEALTHY, 3, (result,)))
    assert codec.encode_inspect(record, "")["State"]["Health"] == {
        "Status": "unhealthy", "FailingStreak": 3,
        "Log": [{"Start": "2024-01-01T00:00:01Z", "End": "2024-01-01T00:00:02Z",
                 "ExitCode": 1, "Output": "no\n"}]}
    assert "Health" not in codec.encode_inspect(_record(Status.RUNNING, None), "")["State"]


@pytest.mark.parametrize(("health", "suffix"), [
    (None, ""),
    (HealthState(HealthStatus.STARTING), " (health: starting)"),
    (HealthState(HealthStatus.HEALTHY), " (healthy)"),
    (HealthState(HealthStatus.UNHEALTHY), " (unhealthy)"),
])
def test_ps_status_says_the_health(health: HealthState | None, suffix: str) -> None:
    start = 1704067200.0  # 2024-01-01T00:00:00Z
    text = codec.status_text(_record(Status.RUNNING, health), now=start + 10)
    assert text == "Up 10 seconds" + suffix


def test_the_health_filter() -> None:
    healthy = _record(Status.RUNNING, HealthState(HealthStatus.HEALTHY))
    plain = ContainerRecord(**{**healthy.__dict__, "id": "d" * 64,
                               "state": ContainerState(status=Status.RUNNING)})
    records = [healthy, plain]

    def names(value: str) -> list[str]:
        filters = codec.decode_filters(f'{{"health": ["{value}"]}}')
        return [r.id[0] for r in codec.select_containers(records, filters, all_=False)]

    assert names("healthy") == ["c"]
    assert names("none") == ["d"]
    assert names("unhealthy") == []
    with pytest.raises(InvalidArgument, match="health=sick"):
        names("sick")


def test_record_result_is_dockerds_state_machine() -> None:
    ok = HealthResult("s", "e", 0, "")
    bad = HealthResult("s", "e", 1, "")
    state = HealthState()
    state = healthcheck.record_result(state, bad, retries=1, in_start_period=True)
    assert state.status is HealthStatus.STARTING and state.failing_streak == 0
    state = healthcheck.record_result(state, bad, retries=2, in_start_period=False)
    assert state.status is HealthStatus.STARTING and state.failing_streak == 1
    state = healthcheck.record_result(state, bad, retries=2, in_start_period=False)
    assert state.status is HealthStatus.UNHEALTHY and state.failing_streak == 2
    state = healthcheck.record_result(state, ok, retries=2, in_start_period=False)
    assert state == HealthState(HealthStatus.HEALTHY, 0, (bad, bad, bad, ok))
    # a healthy container in its start period still counts its failures (dockerd)
    state = healthcheck.record_result(state, bad, retries=1, in_start_period=True)
    assert state.status is HealthStatus.UNHEALTHY and len(state.log) == 5


@pytest.mark.parametrize(("seconds", "text"), [
    (30, "30s"), (1.5, "1.5s"), (0.05, "50ms"), (90, "1m30s"), (3600, "1h0m0s"), (0, "0s"),
])
def test_go_duration(seconds: float, text: str) -> None:
    assert healthcheck.go_duration(seconds) == text


def test_output_clipped_at_4096_bytes() -> None:
    assert healthcheck.clip_output(b"x" * 4096) == "x" * 4096
    assert healthcheck.clip_output(b"x" * 4097) == "x" * 4096 + "..."
