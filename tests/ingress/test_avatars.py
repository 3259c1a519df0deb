"""`/v1/avatars`: create, get, list, update, delete, portraits, voices, and tenant isolation."""

from __future__ import annotations

import base64

from fastapi.testclient import TestClient

from tests.conftest import make_token
from tests.ingress.conftest import bearer
from tests.ingress.standins import tiny_png


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def test_avatar_lifecycle(http: TestClient, user: dict[str, str]) -> None:
    body = {
        "name": "Ms. Frizzle",
        "instructions": "You are a cheerful science teacher.",
        "voice": "alloy",
        "greeting": "Hello, class!",
        "portrait": data_url(tiny_png()),
    }
    created = http.post("/v1/avatars", json=body, headers=user)
    assert created.status_code == 200, created.text
    avatar = created.json()
    assert avatar["id"].startswith("avatar_") and avatar["object"] == "avatar"
    assert avatar["portrait"]["content_type"] == "image/png"
    avatar_id = avatar["id"]

    assert http.get(f"/v1/avatars/{avatar_id}", headers=user).json()["instructions"] == body["instructions"]
    portrait = http.get(f"/v1/avatars/{avatar_id}/portrait", headers=user)
    assert portrait.status_code == 200 and portrait.content == tiny_png()
    assert portrait.headers["content-type"] == "image/png"

    updated = http.post(f"/v1/avatars/{avatar_id}", json={"greeting": "Good morning!"}, headers=user)
    assert updated.status_code == 200
    assert updated.json()["greeting"] == "Good morning!" and updated.json()["name"] == "Ms. Frizzle"
    patched = http.patch(f"/v1/avatars/{avatar_id}", json={"name": "Frizz"}, headers=user)
    assert patched.json()["name"] == "Frizz" and patched.json()["greeting"] == "Good morning!"

    second = http.post("/v1/avatars", json={"name": "Second"}, headers=user).json()
    listed = http.get("/v1/avatars", headers=user).json()
    assert [a["id"] for a in listed["data"]] == [second["id"], avatar_id]
    page = http.get("/v1/avatars", params={"limit": 1}, headers=user).json()
    assert page["has_more"] is True and len(page["data"]) == 1

    deleted = http.delete(f"/v1/avatars/{avatar_id}", headers=user)
    assert deleted.json() == {"id": avatar_id, "object": "avatar.deleted", "deleted": True}
    assert http.get(f"/v1/avatars/{avatar_id}", headers=user).status_code == 404
    assert http.get(f"/v1/avatars/{avatar_id}/portrait", headers=user).status_code == 404


def test_portrait_from_a_prompt(http: TestClient, user: dict[str, str]) -> None:
    created = http.post("/v1/avatars", json={"name": "Owl", "portrait_prompt": "a wise owl"}, headers=user)
    assert created.status_code == 200, created.text
    portrait = created.json()["portrait"]
    assert portrait["prompt"] == "a wise owl" and portrait["content_type"] == "image/png"
    image = http.get(portrait["url"], headers=user)
    assert image.content.startswith(b"\x89PNG")


def test_bad_portraits_and_fields(http: TestClient, user: dict[str, str]) -> None:
    assert http.post("/v1/avatars", json={"name": "x", "portrait": "not base64!"}, headers=user).status_code == 400
    gif = base64.b64encode(b"GIF89a" + b"\x00" * 32).decode()
    assert http.post("/v1/avatars", json={"name": "x", "portrait": gif}, headers=user).status_code == 415
    both = {"name": "x", "portrait": data_url(tiny_png()), "portrait_prompt": "owl"}
    assert http.post("/v1/avatars", json=both, headers=user).status_code == 422
    assert http.post("/v1/avatars", json={"instructions": "no name"}, headers=user).status_code == 422


def test_voices_are_those_of_the_tts_backends(http: TestClient, user: dict[str, str], real_voice: None) -> None:
    assert http.post("/v1/avatars", json={"name": "a", "voice": "joe"}, headers=user).status_code == 200
    assert http.post("/v1/avatars", json={"name": "b", "voice": "alloy"}, headers=user).status_code == 200
    refused = http.post("/v1/avatars", json={"name": "c", "voice": "no-such-voice"}, headers=user)
    assert refused.status_code == 422 and refused.json()["error"]["details"][0]["field"] == "voice"


def test_another_tenants_avatar_is_not_found(http: TestClient, user: dict[str, str]) -> None:
    avatar_id = http.post("/v1/avatars", json={"name": "Mine"}, headers=user).json()["id"]
    other = bearer(make_token(tenant="someone-else", sub="mallory"))
    assert http.get(f"/v1/avatars/{avatar_id}", headers=other).status_code == 404
    assert http.post(f"/v1/avatars/{avatar_id}", json={"name": "x"}, headers=other).status_code == 404
    assert http.delete(f"/v1/avatars/{avatar_id}", headers=other).status_code == 404
    assert avatar_id not in [a["id"] for a in http.get("/v1/avatars", headers=other).json()["data"]]
    assert http.get(f"/v1/avatars/{avatar_id}", headers=user).status_code == 200


def test_a_chat_names_an_avatar(http: TestClient, user: dict[str, str]) -> None:
    persona = "You are Captain Nemo, commander of the Nautilus. " * 4
    avatar_id = http.post("/v1/avatars", json={"name": "Nemo", "instructions": persona}, headers=user).json()["id"]
    chat = {"model": "llm", "messages": [{"role": "user", "content": "Who are you?"}], "max_tokens": 4}
    plain = http.post("/v1/chat/completions", json=chat, headers=user)
    with_avatar = http.post("/v1/chat/completions", json={**chat, "metadata": {"avatar": avatar_id}}, headers=user)
    assert plain.status_code == with_avatar.status_code == 200, with_avatar.text
    # The persona went in as the system prompt: the prompt grew by its tokens.
    assert with_avatar.json()["usage"]["prompt_tokens"] > plain.json()["usage"]["prompt_tokens"] + 20
    other = bearer(make_token(tenant="not-the-owner", sub="mallory"))
    refused = http.post("/v1/chat/completions", json={**chat, "metadata": {"avatar": avatar_id}}, headers=other)
    assert refused.status_code == 404
