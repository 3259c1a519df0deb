"""Errors of workflows, each with a stable `code` and the HTTP status the ingress answers with."""

from __future__ import annotations

from common.errors import PlatformError


class DagError(PlatformError):
    """Base of the workflow errors: the client's graph or action is wrong, so a retry cannot help."""

    code = "workflow_error"
    status = 400


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
