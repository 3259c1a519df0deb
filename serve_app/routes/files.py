"""`/v1/files`: upload, list, retrieve, download and delete a tenant's files (OpenAI's format)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Path, Query, UploadFile
from fastapi.responses import Response

from serve_app import files
from serve_app.auth import Principal
from serve_app.deps import authenticated, get_platform
from serve_app.errors import ERROR_RESPONSES
from serve_app.openai_format import invalid
from serve_app.platform import Platform

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)

FileIdPath = Annotated[str, Path(max_length=100)]
# What a client may upload: a batch's input, or data of its own. The others of OpenAI's purposes
# (fine-tuning, assistants, vision) name features this platform does not have.
PURPOSES = ("batch", "user_data")


@router.post("/files", summary="Upload a file (purpose `batch` or `user_data`)")
async def upload_file(
    file: UploadFile = File(..., description="A JSONL file of batch lines, for purpose `batch`."),
    purpose: str = Form(..., description="`batch` or `user_data`"),
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> dict[str, Any]:
    if purpose not in PURPOSES:
        raise invalid("purpose", f"must be one of {', '.join(PURPOSES)}", 422)
    data = await file.read()
    if not data:
        raise invalid("file", "the file is empty")
    name = file.filename or "upload"
    return await asyncio.to_thread(files.save, platform, principal.tenant, data, name, purpose)


@router.get("/files", summary="The tenant's files, newest first (OpenAI's cursor paging)")
async def list_files(
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    after: Annotated[str | None, Query(max_length=100)] = None,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> dict[str, Any]:
    return await asyncio.to_thread(files.page, platform, principal.tenant, purpose, limit, after, order == "desc")


@router.get("/files/{file_id}", summary="A file's object")
async def get_file(
    file_id: FileIdPath,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> dict[str, Any]:
    return files.public(await asyncio.to_thread(files.get, platform, principal.tenant, file_id))


@router.get("/files/{file_id}/content", summary="A file's bytes", response_class=Response)
async def get_file_content(
    file_id: FileIdPath,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    data, content_type = await asyncio.to_thread(files.content, platform, principal.tenant, file_id)
    return Response(data, media_type=content_type)


@router.delete("/files/{file_id}", summary="Delete a file")
async def delete_file(
    file_id: FileIdPath,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> dict[str, Any]:
    await asyncio.to_thread(files.delete, platform, principal.tenant, file_id)
    return {"id": file_id, "object": "file", "deleted": True}
