"""The console's Talk page in headless Chromium, with a fake microphone fed from a WAV file of a
question spoken by the platform's own tts: the call goes over WebRTC, the transcript shows the
question and an answer, and the answer's audio played (the portrait moved with its level)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.conftest import make_token
from tests.console.conftest import CHROMIUM, CHROMIUM_ARGS, DESKTOP

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.ray

QUESTION = "What color is the sky on a sunny day?"
# Loopback candidates (the platform offers 127.0.0.1 only in tests), no mDNS names aiortc cannot
# resolve, and the answer plays without a click.
TALK_ARGS = [
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def tenant() -> str:
    return f"talk-{int(time.time() * 1000) % 10**8}"


@pytest.fixture(scope="module")
def question_wav(platform_url: str, tenant: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The question at 48 kHz with silence around it (Chromium loops the file)."""
    from serve_app.realtime.audio import pcm_of, wav_of

    headers = {"Authorization": f"Bearer {make_token(tenant=tenant)}"}
    speech = httpx.post(
        f"{platform_url}/v1/audio/speech",
        json={"model": "tts", "input": QUESTION, "response_format": "wav"},
        headers=headers,
        timeout=120,
    )
    speech.raise_for_status()
    silence = b"\x00\x00" * 48_000
    path = tmp_path_factory.mktemp("talk") / "question.wav"
    path.write_bytes(wav_of(silence + pcm_of(speech.content, 48_000) + silence * 4, 48_000))
    return path


@pytest.fixture(scope="module")
def talking_browser(question_wav: Path) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    args = [*CHROMIUM_ARGS, *TALK_ARGS, f"--use-file-for-fake-audio-capture={question_wav}"]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield browser
        browser.close()


def test_talk_to_an_avatar(talking_browser: Browser, platform_url: str, tenant: str, artifacts: Path) -> None:
    from playwright.sync_api import expect

    token = make_token(tenant=tenant)
    avatar = httpx.post(
        f"{platform_url}/v1/avatars",
        json={"name": "Sky", "instructions": "You answer in one short English sentence.", "greeting": "Hi there!"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    ).json()
    page = talking_browser.new_page(viewport=DESKTOP)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{platform_url}/console")
    page.fill("#token-input", token)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#who-tenant")).to_have_text(tenant)
    page.goto(f"{platform_url}/console#/talk")
    page.wait_for_selector(f"#talk-avatar option[value='{avatar['id']}']", state="attached")
    page.select_option("#talk-avatar", avatar["id"])
    page.click("#talk-start")
    expect(page.locator("#talk-stop")).to_be_visible(timeout=30_000)
    expect(page.locator(".talk-avatar span").first).to_have_text("Hi there!")
    # Hold to talk through one playing of the question, then let go.
    page.locator("#talk-hold").hover()
    page.mouse.down()
    time.sleep(5.5)
    page.mouse.up()
    heard = re.compile(r"sky|sunny|colou?r", re.IGNORECASE)  # tiny Whisper may hear "the sky" as "this guy"
    expect(page.locator(".talk-user span").first).to_contain_text(heard, timeout=60_000)
    page.wait_for_function(
        "document.querySelectorAll('.talk-avatar span').length >= 2"
        " && document.querySelectorAll('.talk-avatar span')[1].textContent.trim().length > 5",
        timeout=90_000,
    )
    page.wait_for_function("Number(document.querySelector('#talk-stage').dataset.peak || 0) > 0.05", timeout=60_000)
    page.screenshot(path=str(artifacts / "talk.png"), full_page=True)
    page.click("#talk-stop")
    page.close()
    assert not errors, errors
