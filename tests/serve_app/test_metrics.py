"""Application metrics land on Ray's Prometheus endpoint: HTTP requests, scheduler grants and
queues, workflow and node outcomes."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import METRICS_PORT, make_token

pytestmark = pytest.mark.ray

EXPECTED = [
    "ray_labubu_http_requests_total{",
    "ray_labubu_http_request_seconds_bucket{",
    "ray_labubu_scheduler_grants_total{",
    "ray_labubu_scheduler_granted_cost_total{",
    "ray_labubu_scheduler_wait_seconds_bucket{",
    "ray_labubu_scheduler_queued{",
    "ray_labubu_workflows_total{",
    "ray_labubu_workflow_nodes_total{",
]


def test_metrics_are_scraped_after_a_few_requests(platform_url: str) -> None:
    headers = {"Authorization": f"Bearer {make_token(tenant='metered')}"}
    with httpx.Client(base_url=platform_url, headers=headers, timeout=120) as client:
        assert client.post("/v1/audio/speech", json={"model": "tts", "input": "Counted."}).status_code == 200
        workflow = client.post("/v1/workflows", json={"nodes": {"a": {"service": "tts", "prompt": "Hi."}}}).json()
        deadline = time.monotonic() + 120
        while client.get(f"/v1/workflows/{workflow['workflow_id']}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.2)

    # Ray exports metrics every few seconds: wait until this test's own requests show up.
    def missing(text: str) -> list[str]:
        lines = text.splitlines()
        gaps = [name for name in EXPECTED if name not in text]
        requests = [line for line in lines if "http_requests_total" in line]
        if not any('route="/v1/audio/speech"' in line and 'status="200"' in line for line in requests):
            gaps.append("the speech request")
        if not any('tenant="metered"' in line for line in lines if "scheduler_grants_total" in line):
            gaps.append("the tenant's grants")
        return gaps

    deadline = time.monotonic() + 90
    while gaps := missing(httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text):
        assert time.monotonic() < deadline, f"not on the metrics endpoint: {gaps}"
        time.sleep(1)


def test_grafana_dashboard_charts_only_metrics_we_export() -> None:
    """Every panel of kuberay/grafana-dashboard.json queries a metric the platform exports."""
    import json
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "kuberay" / "grafana-dashboard.json").read_text())
    exported = {name.split("{")[0] for name in EXPECTED} | {"ray_labubu_scheduler_in_flight"}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used = set(re.findall(r"ray_labubu_\w+", target["expr"]))
            assert used and used <= exported, (panel["title"], used - exported)
