"""Errors of workflows, each with a stable `code` and the HTTP status the ingress answers with."""

from __future__ import annotations

from typing import Any


class DagError(Exception):
    code = "workflow_error"
    status = 400

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidWorkflow(DagError):
    """The graph or its inputs break a rule of API.md (a cycle, an unknown node, a bad input, ...)."""

    code = "invalid_workflow"
    status = 400


class InvalidParams(DagError):
    """A node's params fail their schema (a value out of range, an unknown field)."""

    code = "validation_error"
    status = 422


class WorkflowNotFound(DagError):
    code = "not_found"
    status = 404


class WorkflowConflict(DagError):
    """The workflow's state forbids the action (retrying a running workflow, cancelling a finished one)."""

    code = "conflict"
    status = 409
