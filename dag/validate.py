"""Every rule a workflow must pass before anything runs, checked in one place.

`plan_workflow` turns a `WorkflowSubmission` into a `WorkflowPlan` (services normalised, inputs
decoded and checked, a topological order) or raises `InvalidWorkflow` / `InvalidParams` with every
offending node, edge or field in the details.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

import modalities
from dag.errors import InvalidParams, InvalidWorkflow
from dag.spec import InputSpec, WorkflowSubmission
from deployments import media
from deployments.types import InvalidInput
from modalities.base import TEXT, VECTOR, Output, compose

NODE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULT_MAX_NODES = 64
DEFAULT_MAX_EDGES = 1024

# Resolves an upload id of the caller's tenant to its bytes and content type, or None.
UploadResolver = Callable[[str], Output | None]


@dataclass
class PlannedNode:
    id: str
    service: str
    prompt: str
    params: dict[str, Any]
    input: str | Output | None = None  # the node's own `inputs` entry, decoded


@dataclass(frozen=True)
class PlannedEdge:
    source: str
    target: str
    prompt: str = ""


@dataclass
class WorkflowPlan:
    """A validated workflow: what the executor runs."""

    nodes: dict[str, PlannedNode]
    edges: list[PlannedEdge]
    order: list[str]  # a topological order
    incoming: dict[str, list[PlannedEdge]] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.incoming = {node_id: [] for node_id in self.nodes}
        self.children = {node_id: [] for node_id in self.nodes}
        for edge in self.edges:
            self.incoming[edge.target].append(edge)
            self.children[edge.source].append(edge.target)


def node_detail(node: str, reason: str) -> dict[str, Any]:
    return {"node": node, "reason": reason}


def edge_detail(source: str, target: str, reason: str) -> dict[str, Any]:
    return {"edge": {"from": source, "to": target}, "reason": reason}


def decode_input(spec: InputSpec, resolve_upload: UploadResolver | None) -> str | Output:
    """The input's text or checked media; raises `InvalidInput` with a reason."""
    if spec.text is not None:
        return spec.text
    if spec.upload_id is not None:
        found = resolve_upload(spec.upload_id) if resolve_upload else None
        if found is None:
            raise InvalidInput(f"upload {spec.upload_id!r} does not exist")
        item = found
    else:
        try:
            data = base64.b64decode(spec.data_b64 or "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput("`data_b64` is not valid base64") from exc
        content_type = "audio/wav" if spec.content_type == "audio/x-wav" else str(spec.content_type)
        item = Output(data, content_type)
    if item.kind == TEXT:
        return item.text
    check_media(item)
    return item


def check_media(item: Output) -> None:
    """The bytes really are what the content type says, and well formed."""
    if item.kind == "audio":
        media.wav_info(item.data)
    else:
        info = media.image_info(item.data)
        if info.content_type != item.content_type:
            raise InvalidInput(f"the data is {info.content_type}, not {item.content_type}")


def plan_workflow(
    submission: WorkflowSubmission,
    resolve_upload: UploadResolver | None = None,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_edges: int = DEFAULT_MAX_EDGES,
    params_context: dict[str, Any] | None = None,
) -> WorkflowPlan:
    """The validated plan of a submission, or `InvalidWorkflow` / `InvalidParams` naming what is wrong.

    `params_context`: the deployment's limits, with which the nodes' params are validated (the
    interactive routes use the same, so a node and a call have the same bounds).
    """
    problems: list[dict[str, Any]] = []
    param_problems: list[dict[str, Any]] = []

    if not submission.nodes:
        raise InvalidWorkflow("the workflow has no nodes", [{"field": "nodes", "reason": "empty"}])
    if len(submission.nodes) > max_nodes:
        raise InvalidWorkflow(
            f"the workflow has {len(submission.nodes)} nodes; at most {max_nodes} are allowed",
            [{"field": "nodes", "reason": f"more than {max_nodes} nodes"}],
        )
    if len(submission.edges) > max_edges:
        raise InvalidWorkflow(
            f"the workflow has {len(submission.edges)} edges; at most {max_edges} are allowed",
            [{"field": "edges", "reason": f"more than {max_edges} edges"}],
        )

    nodes: dict[str, PlannedNode] = {}
    for node_id, spec in submission.nodes.items():
        if not NODE_ID.match(node_id):
            problems.append(node_detail(node_id, "a node id is 1 to 64 letters, digits, `_`, `.` or `-`"))
            continue
        modality = modalities.find(spec.service)
        if modality is None:
            known = sorted(modalities.MODALITIES)
            problems.append(node_detail(node_id, f"unknown service {spec.service!r}; known: {known}"))
            continue
        service = modality.name
        try:
            params = modality.params.model_validate(spec.params, context=params_context).model_dump(exclude_unset=True)
        except ValidationError as exc:
            for error in exc.errors():
                where = ".".join(str(p) for p in error["loc"])
                param_problems.append({"field": f"nodes.{node_id}.params.{where}", "reason": error["msg"]})
            continue
        nodes[node_id] = PlannedNode(node_id, service, spec.prompt, params)

    for node_id, input_spec in submission.inputs.items():
        if node_id not in submission.nodes:
            problems.append({"field": f"inputs.{node_id}", "reason": f"no node {node_id!r}"})
        elif node_id in nodes:
            try:
                nodes[node_id].input = decode_input(input_spec, resolve_upload)
            except InvalidInput as exc:
                problems.append({"field": f"inputs.{node_id}", "reason": exc.message})

    edges: list[PlannedEdge] = []
    seen: set[tuple[str, str]] = set()
    for edge in submission.edges:
        source, target = edge.source, edge.target
        unknown = [n for n in (source, target) if n not in submission.nodes]
        if unknown:
            problems.append(edge_detail(source, target, f"unknown node {unknown[0]!r}"))
        elif source == target:
            problems.append(edge_detail(source, target, "an edge from a node to itself"))
        elif (source, target) in seen:
            problems.append(edge_detail(source, target, "a duplicate edge"))
        else:
            seen.add((source, target))
            if source in nodes and target in nodes:
                edges.append(PlannedEdge(source, target, edge.prompt))

    if param_problems and not problems:
        raise InvalidParams(f"{param_problems[0]['field']}: {param_problems[0]['reason']}", param_problems)
    if problems or param_problems:
        raise InvalidWorkflow(_summary(problems), problems + param_problems)

    order = topological_order(list(nodes), edges)
    plan = WorkflowPlan(nodes, edges, order)
    problems = type_problems(plan)
    if problems:
        raise InvalidWorkflow(_summary(problems), problems)
    return plan


def topological_order(node_ids: list[str], edges: list[PlannedEdge]) -> list[str]:
    """Kahn's algorithm, keeping the submission's node order among ready nodes; a cycle is a 400."""
    indegree = {n: 0 for n in node_ids}
    children: dict[str, list[str]] = {n: [] for n in node_ids}
    for edge in edges:
        indegree[edge.target] += 1
        children[edge.source].append(edge.target)
    ready = [n for n in node_ids if indegree[n] == 0]
    order: list[str] = []
    while ready:
        current = ready.pop(0)
        order.append(current)
        for child in children[current]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if len(order) < len(node_ids):
        in_cycle = [n for n in node_ids if indegree[n] > 0]
        details = [node_detail(n, "part of a cycle") for n in in_cycle]
        details += [
            edge_detail(e.source, e.target, "part of a cycle")
            for e in edges
            if e.source in in_cycle and e.target in in_cycle
        ]
        raise InvalidWorkflow(f"the workflow has a cycle through {', '.join(in_cycle)}", details)
    return order


def type_problems(plan: WorkflowPlan) -> list[dict[str, Any]]:
    """Edges whose upstream output the downstream service cannot consume, and media counts."""
    problems: list[dict[str, Any]] = []
    for node_id, node in plan.nodes.items():
        io = modalities.get(node.service)
        media_count = 0
        own = node.input
        if isinstance(own, Output):
            if not io.takes(own.kind):
                problems.append({"field": f"inputs.{node_id}", "reason": f"{node.service} does not take {own.kind}"})
            media_count += 1
        for edge in plan.incoming[node_id]:
            produced = modalities.get(plan.nodes[edge.source].service).produces
            if produced == VECTOR:
                reason = f"{edge.source} makes a vector, which no service consumes: an embed node must be a sink"
                problems.append(edge_detail(edge.source, edge.target, reason))
            elif not io.takes(produced):
                problems.append(
                    edge_detail(
                        edge.source, edge.target, f"{node.service} cannot consume {produced} from {edge.source}"
                    )
                )
            elif produced != TEXT:
                media_count += 1
        at_least, at_most = io.media_inputs
        media_kind = io.media_kind or io.consumes
        if media_count < at_least:
            problems.append(node_detail(node_id, f"{node.service} needs {_count(at_least)} {media_kind} input"))
        elif at_most is not None and media_count > at_most:
            taken = "exactly" if at_least == at_most else "at most"
            problems.append(node_detail(node_id, f"{node.service} takes {taken} {_count(at_most)} {media_kind} input"))
        if io.consumes == TEXT and not plan.incoming[node_id] and not (node.prompt or own):
            problems.append(node_detail(node_id, "the node has no prompt, input or incoming edge"))
        own_text, _ = compose([node.prompt, own] if own is not None else [node.prompt])
        if io.max_text is not None and len(own_text) > io.max_text:
            problems.append(
                node_detail(
                    node_id, f"{node.service} takes at most {io.max_text} characters; this node has {len(own_text)}"
                )
            )
    return problems


def _count(n: int) -> str:
    return {1: "one"}.get(n, str(n))


def _summary(problems: list[dict[str, Any]]) -> str:
    first = problems[0]
    # A node id may be anything, the empty string included: ask whether the key is there, not its truth.
    if "node" in first:
        where = first["node"] or "''"
    elif "field" in first:
        where = first["field"]
    else:
        where = "{from} -> {to}".format(**first["edge"])
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"invalid workflow: {where}: {first['reason']}{more}"
