"""The executor's log lines are JSON objects carrying the workflow's ids."""

from __future__ import annotations

import json
import logging

from dag.executor import JsonLines


def test_json_line_has_message_and_extra_fields() -> None:
    record = logging.LogRecord("dag.executor", logging.INFO, __file__, 1, "node %s", ("running",), None)
    record.__dict__.update(tenant="acme", workflow_id="wf_1", node_id="write")
    line = json.loads(JsonLines().format(record))
    assert line["message"] == "node running" and line["level"] == "INFO"
    assert (line["tenant"], line["workflow_id"], line["node_id"]) == ("acme", "wf_1", "write")
    assert "args" not in line and "msg" not in line
