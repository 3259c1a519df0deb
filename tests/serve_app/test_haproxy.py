"""The platform behind HAProxy, as the RayService and `cluster.yaml` run it (`RAY_SERVE_ENABLE_HA_PROXY=1`):
HAProxy sends each request straight to the ingress replica's own HTTP port (Serve's direct ingress),
without Serve's proxy. Serve's own HAProxy mode binds its stats and metrics ports on every interface,
so the session's cluster runs direct ingress alone (tests/conftest.py) and the test starts the same
HAProxy binary on 127.0.0.1 in front of it, with the options of Serve's HAProxy config that touch a
request (`common.serve_env.haproxy_config`). What a proxy could break is called through it with the
official client and plain HTTP: a chat and its stream (server-sent events), the realtime WebSocket,
a multipart upload, a workflow's event stream and an error's body."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from common.serve_env import direct_ingress_url, local_haproxy
from serve_app.openai_format import MODEL_HEADER
from tests.conftest import free_port, make_token
from tests.helpers import realtime_text_turn

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def haproxy_url(platform_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with local_haproxy(free_port(), direct_ingress_url("labubu"), tmp_path_factory.mktemp("haproxy")) as url:
        yield url


@pytest.fixture(scope="module")
def client(haproxy_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{haproxy_url}/v1", api_key=make_token(tenant="haproxy"), timeout=120)


def test_the_ingress_replica_serves_on_a_port_of_its_own_beside_the_proxy(platform_url: str) -> None:
    direct = direct_ingress_url("labubu")
    assert urlsplit(direct).hostname == "127.0.0.1"
    assert urlsplit(direct).port != urlsplit(platform_url).port  # not Serve's proxy
    assert httpx.get(f"{direct}/readyz", timeout=30).status_code == 200


def test_a_chat_and_its_stream_through_haproxy(client: openai.OpenAI) -> None:
    request: dict[str, Any] = {
        "model": "llm",
        "messages": [{"role": "user", "content": "Name a color."}],
        "max_tokens": 8,
        "temperature": 0,
    }
    raw = client.chat.completions.with_raw_response.create(**request)
    answer = raw.parse()
    assert raw.headers[MODEL_HEADER] and raw.headers["x-request-id"]
    chunks = list(client.chat.completions.create(**request, stream=True))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) > 1  # a stream of events, not one answer
    assert "".join(deltas) == answer.choices[0].message.content


def test_the_realtime_websocket_through_haproxy(client: openai.OpenAI) -> None:
    assert realtime_text_turn(client, "Say hello.").strip()


def test_an_upload_and_a_refusal_through_haproxy(client: openai.OpenAI, haproxy_url: str) -> None:
    uploaded = client.files.create(file=("requests.jsonl", b'{"a": 1}\n'), purpose="batch")
    assert client.files.content(uploaded.id).content == b'{"a": 1}\n'
    refused = httpx.get(f"{haproxy_url}/v1/models", headers={"Authorization": "Bearer not-a-token"}, timeout=30)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"]


def test_a_workflows_event_stream_through_haproxy(haproxy_url: str) -> None:
    headers = {"Authorization": f"Bearer {make_token(tenant='haproxy')}"}
    with httpx.Client(base_url=haproxy_url, headers=headers, timeout=120) as http:
        node = {"service": "llm", "prompt": "Say hi.", "params": {"max_tokens": 4}}
        created = http.post("/v1/workflows", json={"name": "behind-haproxy", "nodes": {"hi": node}})
        assert created.status_code == 202, created.text
        with http.stream("GET", f"/v1/workflows/{created.json()['workflow_id']}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = list(stream.iter_lines())  # the stream ends after the workflow's final event
    ids = [int(line.removeprefix("id:")) for line in lines if line.startswith("id:")]
    events = [json.loads(line.removeprefix("data:")) for line in lines if line.startswith("data:")]
    assert ids == list(range(1, len(ids) + 1)) and len(ids) == len(events)
    assert events[-1] == {"type": "workflow", "status": "completed"}
