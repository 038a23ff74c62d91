"""GET /metrics through the tenant cloud: the operator's alone, with each tenant's quotas, use
and container-seconds; the per-container series of running containers."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.tenancy.conftest import Cloud


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _get(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], sample: str,
         **labels: str) -> float | None:
    return samples.get((sample, tuple(sorted(labels.items()))))


def _scrape(operator: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = operator.get("/metrics")
    assert answer.status_code == 200, answer.text
    return _samples(answer.text)


def test_metrics_are_the_operators_and_count_each_tenant(cloud: Cloud) -> None:
    with cloud.client("alice") as alice, cloud.operator() as operator:
        refused = alice.get("/metrics")
        assert refused.status_code == 403 and "operator" in refused.json()["message"]

        made = alice.post("/containers/create", params={"name": "web"},
                          json={"Image": "base:1", "Cmd": ["serve"],
                                "Labels": {"sh.steelcup.size": "m1"}})
        assert made.status_code == 201, made.text
        cid = made.json()["Id"]
        assert alice.post(f"/containers/{cid}/start").status_code == 204
        scraped = _scrape(operator)
        assert _get(scraped, "steelcup_tenant_quota", tenant="alice", quota="containers") == 10
        assert _get(scraped, "steelcup_tenant_used", tenant="alice", quota="containers") == 1
        assert _get(scraped, "steelcup_tenant_used", tenant="bob", quota="containers") == 0
        assert (_get(scraped, "steelcup_tenant_container_seconds_total", tenant="alice",
                     size="m1") or 0) >= 0
        ours = {"id": cid[:12], "name": "web", "image": "base:1", "tenant": "alice"}
        assert _get(scraped, "steelcup_container_memory_limit_bytes", **ours) == 1024 << 20
        assert _get(scraped, "steelcup_containers", state="running") == 1
        assert _get(scraped, "steelcup_container_restarts_total", **ours) == 0

        assert alice.delete(f"/containers/{cid}", params={"force": "1"}).status_code == 204
        scraped = _scrape(operator)
        assert _get(scraped, "steelcup_container_memory_limit_bytes", **ours) is None
        assert _get(scraped, "steelcup_tenant_used", tenant="alice", quota="containers") == 0
        assert (_get(scraped, "steelcup_tenant_container_seconds_total", tenant="alice",
                     size="m1") or 0) >= 1
