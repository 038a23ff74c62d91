"""RollbackConfig with the real docker CLI (docs/services.md): an update whose tasks fail is
rolled back per the RollbackConfig of the spec it returns to (`--rollback-parallelism 1
--rollback-delay 3s`: the two slots come back one batch at a time, 3 s apart), while the
update itself replaced both slots at once (`--update-parallelism 0`)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from steelcup.runtime.logs import parse_time_ns
from tests.compat.conftest import IMG, Docker
from tests.vm.support import wait_until

pytestmark = pytest.mark.vm
NS = 1_000_000_000


@pytest.fixture(scope="module")
def swarm(dockerd: Docker) -> Iterator[Docker]:
    dockerd.out("swarm", "init")
    yield dockerd
    dockerd.run("swarm", "leave", "--force")


def update_state(d: Docker, service: str) -> str:
    return d.out("service", "inspect", "-f",
                 "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}", service).strip()


def test_a_rollback_follows_its_rollback_config(swarm: Docker) -> None:
    swarm.out("service", "create", "--detach", "--name", "rb", "--replicas", "2",
              "--restart-delay", "0s", "--stop-grace-period", "1s",
              "--update-parallelism", "0", "--update-failure-action", "rollback",
              "--update-monitor", "2s", "--rollback-parallelism", "1",
              "--rollback-delay", "3s", "--rollback-monitor", "1s", IMG, "sleep", "100000",
              timeout=120)
    spec = json.loads(swarm.out("service", "inspect", "-f", "{{json .Spec.RollbackConfig}}",
                                "rb"))
    assert spec["Parallelism"] == 1 and spec["Delay"] == 3 * NS
    wait_until(lambda: len(swarm.out("ps", "-q", "--filter",
                                     "label=com.docker.swarm.service.name=rb").split()) == 2,
               "two replicas", 180)
    swarm.out("service", "update", "--detach", "--args", "sh -c 'exit 3'", "rb", timeout=120)
    wait_until(lambda: update_state(swarm, "rb") == "rollback_completed",
               "the failed update rolled back", 240)
    running = swarm.out("service", "ps", "--no-trunc", "-q", "--filter",
                        "desired-state=running", "rb").split()
    tasks = json.loads(swarm.out("inspect", *running))
    assert [t["Spec"]["ContainerSpec"]["Args"] for t in tasks] == [["sleep", "100000"]] * 2
    created = sorted(parse_time_ns(t["CreatedAt"]) for t in tasks)
    # one slot at a time, the next batch 3 s after the first one ran
    assert created[1] - created[0] >= 3 * NS, tasks
    message = swarm.out("service", "inspect", "-f", "{{.UpdateStatus.Message}}", "rb")
    assert "rollback completed" in message
    swarm.out("service", "rm", "rb")
