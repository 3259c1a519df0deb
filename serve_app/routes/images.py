"""`/v1/images`: generations (text to image, OpenAI's format) and captions (image to text, ours)."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import Response

from deployments.types import CaptionRequest, ImageRequest
from serve_app.auth import Principal
from serve_app.deps import authenticated, get_platform
from serve_app.errors import ERROR_RESPONSES, ApiError, not_found
from serve_app.openai_format import answered_by, check_media
from serve_app.platform import Platform
from serve_app.schemas import ImageGenerationRequest
from serve_app.signed_urls import URL_TTL_S
from state.artifacts import ArtifactNotFound

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)


@router.post("/images/generations", summary="Text to image (OpenAI format: base64 PNGs or URLs)")
async def image_generations(
    body: ImageGenerationRequest,
    http: Request,
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    await platform.resolve_model(body.model, ("text2pic",))
    if not body.prompt.strip():
        raise ApiError(400, "invalid_input", "the prompt is empty", [{"field": "prompt", "reason": "empty"}])
    width, height = body.dimensions()
    options: dict[str, Any] = {"steps": body.steps} if body.steps else {}
    request = ImageRequest(prompt=body.prompt, width=width, height=height, n=body.n, seed=body.seed, **options)
    result = await platform.call("text2pic", request, principal)
    if body.response_format == "url":
        data = [{"url": await image_url(platform, http, principal.tenant, png)} for png in result.images]
    else:
        data = [{"b64_json": base64.b64encode(png).decode()} for png in result.images]
    return answered_by(
        result.model,
        {"created": int(time.time()), "data": data, "size": f"{result.width}x{result.height}", "model": result.model},
    )


def image_key(tenant: str, image_id: str) -> str:
    # "+" is in no tenant id (serve_app/auth.py), so this prefix never meets a tenant's workflow artifacts.
    return f"+images/{tenant}/{image_id}"


async def image_url(platform: Platform, http: Request, tenant: str, png: bytes) -> str:
    """A URL the client fetches the image from without a token, for `URL_TTL_S`: presigned by S3
    where outputs live there, else signed by the ingress (serve_app/signed_urls.py)."""
    image_id = f"img_{uuid.uuid4().hex}"
    key = image_key(tenant, image_id)
    artifacts = platform.workflows.artifacts
    await asyncio.to_thread(artifacts.put, key, png, "image/png")
    presigned = await asyncio.to_thread(artifacts.url, key, URL_TTL_S)
    if presigned:
        return presigned
    path = f"/v1/images/content/{tenant}/{image_id}"
    return f"{str(http.base_url).rstrip('/')}{path}?{platform.url_signer.query(path)}"


@router.get(
    "/images/content/{tenant}/{image_id}",
    summary="A generated image, by the signed URL `response_format: url` gave (no token: the signature is the key)",
    response_class=Response,
)
async def image_content(
    tenant: Annotated[str, Path(max_length=128)],
    image_id: Annotated[str, Path(pattern=r"^img_[0-9a-f]{32}$")],
    expires: Annotated[int, Query(ge=0)],
    signature: Annotated[str, Query(max_length=64)],
    http: Request,
    platform: Platform = Depends(get_platform),
) -> Response:
    if not platform.url_signer.valid(http.url.path, expires, signature):
        raise ApiError(403, "invalid_signature", "the URL's signature is wrong or it has expired; make the image again")
    try:
        data, content_type = await asyncio.to_thread(platform.workflows.artifacts.get, image_key(tenant, image_id))
    except ArtifactNotFound:
        raise not_found("the image") from None
    return Response(data, media_type=content_type, headers={"Cache-Control": "private, max-age=3600"})


@router.post("/images/captions", summary="Image to text (one or more PNG or JPEG files)")
async def image_captions(
    file: list[UploadFile] = File(..., description="One or more PNG or JPEG images"),
    prompt: str = Form(""),
    model: str = Form("pic2text"),
    principal: Principal = Depends(authenticated),
    platform: Platform = Depends(get_platform),
) -> Response:
    await platform.resolve_model(model, ("pic2text",))
    images = [await upload.read() for upload in file]
    for index, image in enumerate(images):
        check_media(image, f"file.{index}", "image")
    result = await platform.call("pic2text", CaptionRequest(images=images, prompt=prompt), principal)
    return answered_by(result.model, {"text": result.text, "model": result.model})
