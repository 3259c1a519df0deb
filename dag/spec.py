"""What a client submits: workflows (agent DAGs) and tasks, as pydantic models of API.md.

Shape errors (a missing field, a wrong type, a value out of range) are pydantic's, so the ingress
answers 422; the rules about the graph itself are in `dag.validate` and answer 400.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Priority = Literal["critical", "default", "low"]


class InputSpec(BaseModel):
    """A node's own input: text, media inline as base64, or an earlier upload."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    data_b64: str | None = None
    content_type: Literal["audio/wav", "audio/x-wav", "image/png", "image/jpeg"] | None = None
    upload_id: Annotated[str | None, Field(max_length=128)] = None

    @model_validator(mode="after")
    def _exactly_one(self) -> InputSpec:
        given = [name for name in ("text", "data_b64", "upload_id") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("an input is exactly one of `text`, `data_b64` (with `content_type`) or `upload_id`")
        if self.data_b64 is not None and self.content_type is None:
            raise ValueError("`data_b64` needs a `content_type`")
        return self


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service: Annotated[str, Field(min_length=1, max_length=32)]
    prompt: Annotated[str, Field(max_length=100_000)] = ""
    params: dict[str, Any] = Field(default_factory=dict)


class EdgeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: Annotated[str, Field(alias="from", max_length=256)]
    target: Annotated[str, Field(alias="to", max_length=256)]
    prompt: Annotated[str, Field(max_length=100_000)] = ""


class WorkflowSubmission(BaseModel):
    """`POST /v1/workflows`, in this platform's format or the original platform's (`dag_id`, `tenant_id`)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str | None, Field(max_length=200)] = None
    priority: Priority = "default"
    nodes: dict[str, NodeSpec]
    edges: Annotated[list[EdgeSpec], Field(max_length=10_000)] = Field(default_factory=list)
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    dag_id: Annotated[str | None, Field(max_length=64)] = None
    tenant_id: Annotated[str | None, Field(max_length=256)] = None


class TaskSubmission(BaseModel):
    """`POST /v1/tasks`: one model call, run as a one-node workflow."""

    model_config = ConfigDict(extra="forbid")

    service: Annotated[str, Field(min_length=1, max_length=32)]
    prompt: Annotated[str, Field(max_length=100_000)] = ""
    input: InputSpec | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = "default"
    tenant_id: Annotated[str | None, Field(max_length=256)] = None

    TASK_NODE: ClassVar[str] = "task"

    def as_workflow(self) -> WorkflowSubmission:
        node = NodeSpec(service=self.service, prompt=self.prompt, params=self.params)
        inputs = {self.TASK_NODE: self.input} if self.input is not None else {}
        return WorkflowSubmission(
            name=f"task:{self.service}",
            priority=self.priority,
            nodes={self.TASK_NODE: node},
            inputs=inputs,
            tenant_id=self.tenant_id,
        )
