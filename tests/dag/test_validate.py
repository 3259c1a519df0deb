"""Every validation rule of API.md's workflows, on the pure validator."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image
from pydantic import ValidationError

from dag.errors import InvalidParams, InvalidWorkflow
from dag.spec import TaskSubmission, WorkflowSubmission
from dag.validate import plan_workflow
from deployments import media
from deployments.types import LLMRequest
from modalities import build_request
from modalities.base import Output, compose


def wav() -> bytes:
    return media.wav_bytes(b"\x00\x01" * 16000, 16000)


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def submit(body: dict[str, Any], **kwargs: Any):  # type: ignore[no-untyped-def]
    return plan_workflow(WorkflowSubmission.model_validate(body), **kwargs)


def invalid(body: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    with pytest.raises(InvalidWorkflow) as caught:
        submit(body, **kwargs)
    assert caught.value.status == 400 and caught.value.details
    return caught.value.details


STORY = {
    "name": "story-to-speech",
    "nodes": {
        "write": {"service": "llm", "prompt": "Write a poem.", "params": {"max_tokens": 64}},
        "speak": {"service": "tts", "prompt": ""},
        "paint": {"service": "text2pic", "prompt": "An illustration of: "},
        "caption": {"service": "pic2text"},
    },
    "edges": [
        {"from": "write", "to": "speak", "prompt": ""},
        {"from": "write", "to": "paint", "prompt": ""},
        {"from": "paint", "to": "caption"},
    ],
    "inputs": {"write": {"text": "Use simple words."}},
}


def test_the_api_example_plans_in_topological_order() -> None:
    plan = submit(STORY)
    assert plan.order.index("write") < plan.order.index("speak") < len(plan.order)
    assert plan.order.index("paint") < plan.order.index("caption")
    assert plan.nodes["write"].input == "Use simple words."
    assert [e.source for e in plan.incoming["caption"]] == ["paint"]


def test_original_platform_body_with_upper_case_services() -> None:
    body = {
        "dag_id": "dag-2023",
        "tenant_id": "tenant-abc",
        "nodes": {"node1": {"service": "TTS"}, "node2": {"service": "STT"}, "node3": {"service": "LLM"}},
        "edges": [
            {"from": "node1", "to": "node2", "prompt": "x"},
            {"from": "node2", "to": "node3", "prompt": "Answer:"},
        ],
        "inputs": {"node1": {"text": "hello"}},
    }
    plan = submit(body)
    assert [plan.nodes[n].service for n in ("node1", "node2", "node3")] == ["tts", "stt", "llm"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"nodes": {}}, {"field": "nodes"}),
        (
            {
                "nodes": {"a": {"service": "llm", "prompt": "x"}, "b": {"service": "llm"}},
                "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}],
            },
            {"node": "a"},
        ),
        (
            {"nodes": {"a": {"service": "llm", "prompt": "x"}}, "edges": [{"from": "a", "to": "a"}]},
            {"edge": {"from": "a", "to": "a"}},
        ),
        (
            {
                "nodes": {"a": {"service": "llm", "prompt": "x"}, "b": {"service": "llm"}},
                "edges": [{"from": "a", "to": "b"}, {"from": "a", "to": "b"}],
            },
            {"edge": {"from": "a", "to": "b"}},
        ),
        (
            {"nodes": {"a": {"service": "llm", "prompt": "x"}}, "edges": [{"from": "a", "to": "ghost"}]},
            {"edge": {"from": "a", "to": "ghost"}},
        ),
        ({"nodes": {"a": {"service": "video", "prompt": "x"}}}, {"node": "a"}),
        ({"nodes": {"bad id!": {"service": "llm", "prompt": "x"}}}, {"node": "bad id!"}),
        ({"nodes": {"a" * 65: {"service": "llm", "prompt": "x"}}}, {"node": "a" * 65}),
        (
            {"nodes": {"a": {"service": "llm", "prompt": "x"}}, "inputs": {"ghost": {"text": "x"}}},
            {"field": "inputs.ghost"},
        ),
        ({"nodes": {"a": {"service": "stt"}}}, {"node": "a"}),
        ({"nodes": {"a": {"service": "pic2text", "prompt": "describe"}}}, {"node": "a"}),
        (
            {
                "nodes": {"a": {"service": "llm", "prompt": "x"}, "b": {"service": "stt"}},
                "edges": [{"from": "a", "to": "b"}],
            },
            {"edge": {"from": "a", "to": "b"}},
        ),
        (
            {
                "nodes": {"a": {"service": "text2pic", "prompt": "x"}, "b": {"service": "tts"}},
                "edges": [{"from": "a", "to": "b"}],
            },
            {"edge": {"from": "a", "to": "b"}},
        ),
        (
            {
                "nodes": {"a": {"service": "tts", "prompt": "x"}, "b": {"service": "stt"}},
                "edges": [{"from": "a", "to": "b"}],
                "inputs": {"b": {"data_b64": b64(wav()), "content_type": "audio/wav"}},
            },
            {"node": "b"},
        ),
        ({"nodes": {"a": {"service": "llm"}}}, {"node": "a"}),
        (
            {
                "nodes": {"a": {"service": "llm", "prompt": "x"}},
                "inputs": {"a": {"data_b64": b64(png()), "content_type": "image/png"}},
            },
            {"field": "inputs.a"},
        ),
        (
            {"nodes": {"a": {"service": "stt"}}, "inputs": {"a": {"data_b64": "!!!", "content_type": "audio/wav"}}},
            {"field": "inputs.a"},
        ),
        (
            {
                "nodes": {"a": {"service": "stt"}},
                "inputs": {"a": {"data_b64": b64(b"RIFFnope"), "content_type": "audio/wav"}},
            },
            {"field": "inputs.a"},
        ),
        (
            {
                "nodes": {"a": {"service": "pic2text"}},
                "inputs": {"a": {"data_b64": b64(png()), "content_type": "image/jpeg"}},
            },
            {"field": "inputs.a"},
        ),
        ({"nodes": {"a": {"service": "stt"}}, "inputs": {"a": {"upload_id": "up_missing"}}}, {"field": "inputs.a"}),
    ],
    ids=[
        "empty",
        "cycle",
        "self-loop",
        "duplicate-edge",
        "edge-to-unknown-node",
        "unknown-service",
        "bad-node-id",
        "long-node-id",
        "input-for-unknown-node",
        "root-stt-without-audio",
        "root-pic2text-without-image",
        "text-into-stt",
        "image-into-tts",
        "two-audio-inputs-into-stt",
        "llm-with-no-input",
        "image-input-into-llm",
        "bad-base64",
        "malformed-wav",
        "content-type-mismatch",
        "unknown-upload",
    ],
)
def test_rule(body: dict[str, Any], expected: dict[str, Any]) -> None:
    details = invalid(body)
    assert any(all(d.get(k) == v for k, v in expected.items()) for d in details), details


def test_too_many_nodes_and_edges() -> None:
    nodes = {f"n{i}": {"service": "llm", "prompt": "x"} for i in range(65)}
    assert invalid({"nodes": nodes})[0]["field"] == "nodes"
    few = {f"n{i}": {"service": "llm", "prompt": "x"} for i in range(3)}
    edges = [{"from": "n0", "to": "n1"}] * 2000
    assert invalid({"nodes": few, "edges": edges})[0]["field"] == "edges"


def test_at_the_node_limit_is_accepted() -> None:
    nodes = {f"n{i}": {"service": "llm", "prompt": "x"} for i in range(64)}
    edges = [{"from": f"n{i}", "to": f"n{i + 1}"} for i in range(63)]
    assert len(submit({"nodes": nodes, "edges": edges}).order) == 64


def test_bad_params_are_422_with_the_field() -> None:
    with pytest.raises(InvalidParams) as caught:
        submit({"nodes": {"a": {"service": "llm", "prompt": "x", "params": {"max_tokens": 0}}}})
    assert caught.value.status == 422
    assert caught.value.details[0]["field"] == "nodes.a.params.max_tokens"


def test_unknown_param_is_422() -> None:
    with pytest.raises(InvalidParams):
        submit({"nodes": {"a": {"service": "tts", "prompt": "x", "params": {"voise": "joe"}}}})


def test_schema_errors_are_pydantic_errors() -> None:
    with pytest.raises(ValidationError):
        WorkflowSubmission.model_validate({"nodes": {"a": {"service": "llm"}}, "priority": "urgent"})
    with pytest.raises(ValidationError):
        WorkflowSubmission.model_validate({"nodes": {"a": {"prompt": "no service"}}})
    with pytest.raises(ValidationError):
        WorkflowSubmission.model_validate({"nodes": {"a": {"service": "llm"}}, "inputs": {"a": {}}})


def test_uploads_are_resolved() -> None:
    uploads = {"up_1": Output(wav(), "audio/wav")}
    plan = submit(
        {"nodes": {"a": {"service": "stt"}}, "inputs": {"a": {"upload_id": "up_1"}}}, resolve_upload=uploads.get
    )
    assert isinstance(plan.nodes["a"].input, Output) and plan.nodes["a"].input.content_type == "audio/wav"


def test_composition_order_and_joining() -> None:
    text, media_parts = compose(["Node prompt.", "Own input.", "", "Edge prompt:", Output.of_text("upstream")])
    assert text == "Node prompt.\nOwn input.\nEdge prompt:\nupstream" and media_parts == []
    request = build_request("llm", {"max_tokens": 5}, text, [])
    assert isinstance(request, LLMRequest) and request.messages[-1].content == text and request.max_tokens == 5


def test_task_is_a_one_node_workflow() -> None:
    task = TaskSubmission.model_validate({"service": "text2pic", "prompt": "a cat", "params": {"width": 64}})
    plan = plan_workflow(task.as_workflow())
    assert list(plan.nodes) == ["task"] and plan.nodes["task"].params == {"width": 64}


@pytest.mark.parametrize("node_id", ["", " ", "a/b", "x" * 65, "é"])
def test_every_malformed_node_id_is_a_400_naming_it(node_id: str) -> None:
    body = {"nodes": {node_id: {"service": "llm", "prompt": "Hi"}}}
    with pytest.raises(InvalidWorkflow) as caught:
        submit(body)
    assert caught.value.details[0]["node"] == node_id
    assert "node id" in caught.value.message


def test_an_edge_from_an_empty_node_id_is_named_too() -> None:
    body = {"nodes": {"a": {"service": "llm", "prompt": "Hi"}}, "edges": [{"from": "", "to": "a"}]}
    details = invalid(body)
    assert details[0]["edge"] == {"from": "", "to": "a"}


def test_max_tokens_is_bounded_by_the_deployments_limit_as_interactive_calls_are() -> None:
    body = {"nodes": {"a": {"service": "llm", "prompt": "Hi", "params": {"max_tokens": 600}}}}
    assert submit(body).nodes["a"].params["max_tokens"] == 600  # no limit in the context
    with pytest.raises(InvalidParams) as caught:
        submit(body, params_context={"llm_max_tokens": 512})
    assert caught.value.status == 422
    assert caught.value.details == [
        {"field": "nodes.a.params.max_tokens", "reason": "Value error, must be at most 512, the model's limit"}
    ]
