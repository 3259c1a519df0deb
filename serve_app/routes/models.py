"""`GET /v1/models`: the served models in OpenAI's format, with each service's failover list and
capabilities (`tools`, `json_schema`, `json_object`, `logprobs`, `vision`, `streaming`).

A model entry's capabilities are its backend's; a service entry's are those of any of its ready
backends (a request that needs one goes to a backend that has it), except `vision`: images go to
the first ready backend when it sees them. The chat route captions images
with `pic2text` for an LLM that does not see them: `vision` then says `"cascade:pic2text"`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from deployments.types import JSON_OBJECT, JSON_SCHEMA, LOGPROBS, STREAMING, TOOLS, VISION
from modalities import SERVICES
from serve_app.auth import Principal
from serve_app.deps import authenticated, get_platform
from serve_app.errors import ERROR_RESPONSES
from serve_app.openai_format import STARTED_AT
from serve_app.platform import Platform

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)

REPORTED = (TOOLS, JSON_SCHEMA, JSON_OBJECT, LOGPROBS, VISION, STREAMING)
# The service whose images another captions when none of its backends sees them (routes/chat.py).
IMAGE_CASCADE = ("llm", "pic2text")


def capabilities(names: Iterable[str], cascade: bool) -> dict[str, bool | str]:
    """The reported capabilities of a backend (or a service) that declares `names`; none for a
    backend that declares nothing (the other modalities)."""
    declared = set(names)
    if not declared:
        return {}
    reported: dict[str, bool | str] = {name: name in declared for name in REPORTED}
    if not reported[VISION] and cascade:
        reported[VISION] = f"cascade:{IMAGE_CASCADE[1]}"
    return reported


@router.get("/models", summary="The served models (OpenAI format)")
async def models(
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    data: list[dict[str, Any]] = []
    statuses = await platform.all_status()
    captions_ready = bool(statuses.get(IMAGE_CASCADE[1], {}).get("ready"))
    for service in SERVICES:
        status = statuses[service]
        backends = status.get("backends", [])
        serving = next((b for b in backends if b.get("ready")), None)
        cascade = service == IMAGE_CASCADE[0] and captions_ready
        # Images go to the serving backend when it sees them, else through the cascade (routes/chat.py).
        serving_sees = serving is not None and VISION in serving.get("capabilities", [])
        ready_capabilities = [
            c for b in backends if b.get("ready") for c in b.get("capabilities", []) if c != VISION or serving_sees
        ]
        data.append(
            {
                "id": service,
                "object": "model",
                "created": STARTED_AT,
                "owned_by": "labubu",
                "service": service,
                "ready": bool(status.get("ready")),
                "backend": serving["name"] if serving else None,
                "model": serving["model"] if serving else None,
                "backends": [{k: b[k] for k in ("name", "model", "ready", "reason")} for b in backends],
                "capabilities": capabilities(ready_capabilities, cascade),
            }
        )
        for backend in backends:
            data.append(
                {
                    "id": backend["model"],
                    "object": "model",
                    "created": STARTED_AT,
                    "owned_by": backend["name"],
                    "service": service,
                    "backend": backend["name"],
                    "ready": backend["ready"],
                    "voices": backend.get("voices", []),
                    "capabilities": capabilities(backend.get("capabilities", []), cascade),
                }
            )
    return JSONResponse({"object": "list", "data": data})
