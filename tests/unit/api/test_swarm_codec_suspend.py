"""--checkpointable and --auto-suspend for services: ContainerSpec's SteelcupCheckpointable
and SteelcupAutoSuspend, or the service labels steelcup.checkpointable / steelcup.auto-suspend
(what the docker CLI and stack files can send), reach every replica's container; what cannot
be suspended is refused when the service is made."""

from __future__ import annotations

from typing import Any

import pytest

from steelcup.api import swarm_codec as codec
from steelcup.errors import InvalidArgument
from steelcup.services.model import SwarmState

NODE = codec.encode_node(SwarmState(node_id="n" * 25, advertise_addr="127.0.0.1:2377"),
                         hostname="box", ncpu=2, mem_bytes=1 << 30, engine_version="0.1")


def spec(container: dict[str, Any] | None = None, labels: dict[str, str] | None = None
         ) -> dict[str, Any]:
    return {"Name": "web", "Labels": labels or {},
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox", **(container or {})}}}


def test_the_container_spec_fields_reach_the_template() -> None:
    plan = codec.decode_service(spec({"SteelcupCheckpointable": True,
                                      "SteelcupAutoSuspend": "2m"}), NODE).plan
    assert plan.template.checkpointable and plan.template.auto_suspend_s == 120
    plain = codec.decode_service(spec(), NODE).plan.template
    assert not plain.checkpointable and plain.auto_suspend_s == 0


def test_service_labels_say_the_same_for_docker_clients() -> None:
    decoded = codec.decode_service(spec(labels={"steelcup.checkpointable": "true",
                                                "steelcup.auto-suspend": "30s"}), NODE)
    assert decoded.plan.template.checkpointable
    assert decoded.plan.template.auto_suspend_s == 30
    # the spec is kept as sent (the labels stay labels)
    assert "SteelcupAutoSuspend" not in decoded.spec_doc["TaskTemplate"]["ContainerSpec"]
    # a label that agrees with the field is fine, one that does not is refused
    same = codec.decode_service(spec({"SteelcupAutoSuspend": 30},
                                     {"steelcup.auto-suspend": "30s",
                                      "steelcup.checkpointable": "1"}), NODE)
    assert same.plan.template.auto_suspend_s == 30
    with pytest.raises(InvalidArgument, match="says otherwise"):
        codec.decode_service(spec({"SteelcupAutoSuspend": 10, "SteelcupCheckpointable": True},
                                  {"steelcup.auto-suspend": "30s"}), NODE)
    with pytest.raises(InvalidArgument, match="true or false"):
        codec.decode_service(spec(labels={"steelcup.checkpointable": "maybe"}), NODE)
    with pytest.raises(InvalidArgument, match="steelcup.auto-suspend"):
        codec.decode_service(spec(labels={"steelcup.checkpointable": "true",
                                          "steelcup.auto-suspend": "soon"}), NODE)


@pytest.mark.parametrize(("container", "labels", "why"), [
    ({"SteelcupAutoSuspend": 30}, None, "needs --checkpointable"),
    (None, {"steelcup.auto-suspend": "30s"}, "needs --checkpointable"),
    ({"SteelcupCheckpointable": True,
      "Mounts": [{"Type": "volume", "Source": "data", "Target": "/d"}]}, None,
     "cannot have volumes"),
])
def test_what_cannot_be_suspended_is_refused_at_create(
        container: dict[str, Any] | None, labels: dict[str, str] | None, why: str) -> None:
    with pytest.raises(InvalidArgument, match=why):
        codec.decode_service(spec(container, labels), NODE)
