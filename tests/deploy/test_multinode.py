"""The multi-node proof: scripts/multinode.py starts two Ray nodes on this machine, deploys the platform
with `serve deploy` in cluster mode (Redis state, S3 artifacts on moto), pins text2pic to the second
node and pic2text to the head, and runs a workflow through both. Minutes, not seconds: `multinode`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dag.records import output_key

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "multinode.py"
REDIS = ("127.0.0.1", 6379)
TIMEOUT_S = 900

pytestmark = pytest.mark.multinode


def redis_answers() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def evidence() -> dict[str, Any]:
    if not (Path(sys.executable).parent / "ray").exists():
        pytest.skip("no `ray` CLI in this environment (pip install 'ray[serve]')")
    if not redis_answers():
        pytest.skip("no Redis on 127.0.0.1:6379 for the platform's state store")
    process = subprocess.Popen([sys.executable, str(SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.terminate()  # the script stops its cluster on SIGTERM
        stdout, stderr = process.communicate(timeout=120)
        pytest.fail(f"scripts/multinode.py took more than {TIMEOUT_S} s\n{stderr[-6000:]}")
    lines = stdout.strip().splitlines()
    found: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    assert process.returncode == 0, f"{json.dumps(found, indent=1)}\n--- stderr ---\n{stderr[-6000:]}"
    return found


def test_the_cluster_has_two_nodes(evidence: dict[str, Any]) -> None:
    assert len(evidence["nodes"]) == 2
    assert evidence["head_node"] != evidence["second_node"]
    assert {node["ip"] for node in evidence["nodes"].values()} == {"127.0.0.2", "127.0.0.3"}


def test_pinned_deployments_run_where_they_were_pinned(evidence: dict[str, Any]) -> None:
    assert set(evidence["replicas"]["text2pic"]) == {evidence["second_node"]}
    assert set(evidence["replicas"]["pic2text"]) == {evidence["head_node"]}


def test_the_workflow_crossed_both_nodes_and_completed(evidence: dict[str, Any]) -> None:
    workflow = evidence["workflow"]
    assert workflow["status"] == "completed"
    assert {node["status"] for node in workflow["nodes"].values()} == {"completed"}
    assert workflow["paint_output"]["content_type"] == "image/png"


def test_state_is_in_redis_and_outputs_in_s3_not_on_a_node(evidence: dict[str, Any]) -> None:
    assert evidence["redis_documents"]
    workflow_id = evidence["workflow"]["id"]
    assert {output_key(evidence["tenant"], workflow_id, node) for node in ("paint", "caption")} <= set(
        evidence["s3_keys"]
    )
