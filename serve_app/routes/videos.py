"""`/v1/videos`: OpenAI's Videos API over `text2video` tasks.

A video is a task of the `text2video` service (a one-node workflow, durable, run by the executor
under a fair-scheduler grant at `default` priority); its id is the task's. The video object is read
from the task's record: its status, its `progress` (the denoising steps the replica reports), and
once it is done, the size and length the backend really made, which may be the nearest ones it can
make to those asked for. Deleting a running video cancels it within a denoising step.
"""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Path, Query, UploadFile
from fastapi.responses import JSONResponse, Response
from openai.types import Video, VideoDeleteResponse
from pydantic import ValidationError

import modalities
from dag.errors import WorkflowNotFound
from dag.records import Status, WorkflowRecord, output_key
from dag.spec import InputSpec, NodeSpec, TaskSubmission, WorkflowSubmission
from deployments import media
from deployments.types import InvalidInput
from serve_app.auth import Principal
from serve_app.deps import authenticated, get_platform
from serve_app.errors import ERROR_RESPONSES, ApiError
from serve_app.openai_format import invalid
from serve_app.platform import Platform
from serve_app.routes.workflows import load
from serve_app.workflows import submit
from state.artifacts import ArtifactNotFound

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)

SERVICE = "text2video"
NODE = TaskSubmission.TASK_NODE
SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
# How soon the official client's `poll` asks again (it reads this header).
POLL_AFTER_MS = 200
VideoId = Annotated[str, Path(max_length=64)]
Variant = Literal["video", "thumbnail", "spritesheet"]
STILLS = {"thumbnail": media.thumbnail_png, "spritesheet": media.spritesheet_png}


def unix(moment: str | None) -> int | None:
    return int(datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()) if moment else None


def video_status(record: WorkflowRecord) -> str:
    """`completed` as soon as the node's completion is stored: the executor writes it only once the
    video itself is stored, and the workflow's own final record, which lands a moment later, adds
    nothing a client waits for. A node that has run counts as in progress until then, not queued."""
    node = record.node(NODE)
    if record.status is Status.COMPLETED:
        return "completed"
    if record.status.final:
        return "failed"
    if node["status"] == Status.COMPLETED.value and not record.data.get("cancel_requested"):
        return "completed"
    return "queued" if node["status"] in (Status.PENDING.value, Status.QUEUED.value) else "in_progress"


def video_error(record: WorkflowRecord) -> dict[str, str] | None:
    if record.status is Status.CANCELLED:
        return {"code": "cancelled", "message": "the video was cancelled"}
    if record.status is not Status.FAILED:
        return None
    code, _, message = (record.node(NODE)["error"] or "failed: the video failed").partition(": ")
    return {"code": code, "message": message or code}


def video_object(record: WorkflowRecord) -> dict[str, Any]:
    """The OpenAI video object of a text2video task: what was asked, then what was made."""
    node = record.node(NODE)
    spec = record.data["spec"]["nodes"][NODE]
    asked = modalities.get(SERVICE).validate_params(spec["params"])
    made = node.get("result") or {}
    status = video_status(record)
    width, height = made.get("width", asked.width), made.get("height", asked.height)
    return {
        "id": record.workflow_id,
        "object": "video",
        "status": status,
        "progress": 100 if status == "completed" else int(node.get("progress") or 0),
        "created_at": unix(record.data["created_at"]),
        "completed_at": unix(node["finished_at"]) if status == "completed" else None,
        "expires_at": None,
        "model": made.get("model", SERVICE),
        "prompt": spec["prompt"],
        "seconds": f"{made.get('seconds', asked.seconds):g}",
        "size": f"{width}x{height}",
        "remixed_from_video_id": None,
        "error": video_error(record),
    }


async def load_video(platform: Platform, principal: Principal, video_id: str) -> WorkflowRecord:
    """The caller's video; another tenant's, or a task of another service, is exactly as absent."""
    record = await load(platform, principal, video_id, "task")
    if record.node(NODE)["service"] != SERVICE:
        raise WorkflowNotFound(f"video {video_id!r} does not exist")
    return record


def answer(record: WorkflowRecord, status_code: int = 200) -> JSONResponse:
    headers = {"openai-poll-after-ms": str(POLL_AFTER_MS)}
    return JSONResponse(video_object(record), status_code=status_code, headers=headers)


def video_params(seconds: str, size: str, steps: int | None, seed: int | None) -> dict[str, Any]:
    """The task's params from the form: 422 for a value no backend makes, naming the form's field."""
    match = SIZE.match(size)
    if not match:
        raise invalid("size", "size is WIDTHxHEIGHT, e.g. 720x1280", 422)
    try:
        length = float(seconds)
    except ValueError:
        raise invalid("seconds", "seconds is a number, e.g. 4", 422) from None
    params: dict[str, Any] = {"seconds": length, "width": int(match.group(1)), "height": int(match.group(2))}
    params.update({k: v for k, v in (("steps", steps), ("seed", seed)) if v is not None})
    try:
        modalities.get(SERVICE).validate_params(params)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = {"width": "size", "height": "size"}.get(str(error["loc"][0]), str(error["loc"][0]))
        raise invalid(field, error["msg"], 422) from None
    return params


@router.post(
    "/videos",
    summary="Create a video (text to video, or image to video with `input_reference`); it runs as a task",
    responses={200: {"model": Video}},
)
async def create_video(
    prompt: Annotated[str, Form(max_length=32_000)],
    model: Annotated[str | None, Form()] = None,
    seconds: Annotated[str, Form(max_length=16)] = "4",
    size: Annotated[str, Form(max_length=16)] = "720x1280",
    input_reference: Annotated[UploadFile | None, File(description="A PNG or JPEG: the first frame")] = None,
    steps: Annotated[int | None, Form(description="Denoising steps (this platform's own field)")] = None,
    seed: Annotated[int | None, Form(description="A seed for a repeatable video (this platform's own field)")] = None,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    await platform.resolve_model(model, (SERVICE,))
    params = video_params(seconds, size, steps, seed)
    inputs: dict[str, InputSpec] = {}
    if input_reference is not None:
        data = await input_reference.read()
        try:
            info = await asyncio.to_thread(media.image_info, data)
        except InvalidInput as exc:
            raise invalid("input_reference", exc.message) from exc
        encoded = base64.b64encode(data).decode()
        inputs[NODE] = InputSpec(data_b64=encoded, content_type=info.content_type)  # type: ignore[arg-type]
    elif not prompt.strip():
        raise invalid("prompt", "the prompt is empty")
    submission = WorkflowSubmission(
        name=f"task:{SERVICE}",
        nodes={NODE: NodeSpec(service=SERVICE, prompt=prompt, params=params)},
        inputs=inputs,
        dag_id=f"video_{uuid.uuid4().hex[:24]}",
    )
    record = await submit(platform, submission, principal, "task")
    return answer(record)


@router.get("/videos", summary="The tenant's videos, newest first by default (OpenAI's cursor paging)")
async def list_videos(
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    store = platform.workflows
    tenant = principal.tenant
    if after is None and order == "desc":  # the common case: one page from the index, and one more to tell
        videos, _ = await asyncio.to_thread(store.page, tenant, "task", None, SERVICE, 0, limit + 1)
    else:  # a cursor is an id, not an offset: find it among them all
        _, total = await asyncio.to_thread(store.page, tenant, "task", None, SERVICE, 0, 1)
        videos, _ = await asyncio.to_thread(store.page, tenant, "task", None, SERVICE, 0, max(total, 1))
    if order == "asc":
        videos.reverse()
    if after is not None:
        ids = [r.workflow_id for r in videos]
        videos = videos[ids.index(after) + 1 :] if after in ids else []
    chosen = videos[:limit]
    data = [video_object(r) for r in chosen]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(videos) > limit,
        }
    )


@router.get("/videos/{video_id}", summary="A video: its status and progress", responses={200: {"model": Video}})
async def retrieve_video(
    video_id: VideoId, principal: Principal = Depends(authenticated), platform: Platform = Depends(get_platform)
) -> JSONResponse:
    return answer(await load_video(platform, principal, video_id))


@router.delete(
    "/videos/{video_id}",
    summary="Delete a video; a running one is cancelled within a denoising step",
    responses={200: {"model": VideoDeleteResponse}},
)
async def delete_video(
    video_id: VideoId, principal: Principal = Depends(authenticated), platform: Platform = Depends(get_platform)
) -> JSONResponse:
    record = await load_video(platform, principal, video_id)
    await platform.executor_call("delete", record.key)
    return JSONResponse({"id": record.workflow_id, "object": "video.deleted", "deleted": True})


@router.get(
    "/videos/{video_id}/content",
    summary="A finished video's MP4, or its first frame or a grid of its frames as a PNG",
    response_class=Response,
    responses={200: {"content": {"video/mp4": {}, "image/png": {}}}},
)
async def video_content(
    video_id: VideoId,
    variant: Variant = "video",
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    record = await load_video(platform, principal, video_id)
    status = video_status(record)
    if status != "completed":
        raise ApiError(404, "not_found", f"video {video_id!r} has no content: it is {status}")
    artifacts = platform.workflows.artifacts
    key = output_key(record.tenant, record.workflow_id, NODE)
    if variant == "video":
        data, content_type = await asyncio.to_thread(artifacts.get, key)
        return Response(data, media_type=content_type)
    still_key = f"{key}.{variant}"  # under the task's prefix: deleted with it
    try:
        data, _ = await asyncio.to_thread(artifacts.get, still_key)
    except ArtifactNotFound:
        video, _ = await asyncio.to_thread(artifacts.get, key)
        data = await asyncio.to_thread(STILLS[variant], video)
        await asyncio.to_thread(artifacts.put, still_key, data, "image/png")
    return Response(data, media_type="image/png")
