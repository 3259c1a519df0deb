"""The web console in a real browser (headless Chromium) against the running platform.

Each test signs in as a fresh tenant, so none sees another's workflows. Screenshots of the main
screens go to test-artifacts/console/.
"""

from __future__ import annotations

import io
import json
import math
import re
import time
import uuid
import wave
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import make_token

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route

pytestmark = pytest.mark.ray

RUN_TIMEOUT_MS = 90_000  # a workflow on the CPU models: seconds, more on a busy machine
MOBILE = {"width": 390, "height": 844}


def fresh_tenant(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def client(platform_url: str, tenant: str, role: str = "user") -> httpx.Client:
    headers = {"Authorization": f"Bearer {make_token(tenant=tenant, role=role)}"}
    return httpx.Client(base_url=platform_url, headers=headers, timeout=60)


def sign_in(page: Page, platform_url: str, tenant: str, role: str = "user") -> None:
    from playwright.sync_api import expect

    page.goto(f"{platform_url}/console")
    page.fill("#token-input", make_token(tenant=tenant, role=role))
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#who-tenant")).to_have_text(tenant)


def shot(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def wav_file(seconds: float = 0.5, rate: int = 16000) -> bytes:
    """A short 440 Hz tone as 16-bit PCM mono WAV."""
    frames = b"".join(
        int(8000 * math.sin(2 * math.pi * 440 * i / rate)).to_bytes(2, "little", signed=True)
        for i in range(int(seconds * rate))
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return buffer.getvalue()


def drag_edge(page: Page, source: str, target: str) -> None:
    """Draw an edge by hand: press on the source's port, move onto the target node, release."""
    port = page.locator(f'#build-graph g[data-node="{source}"] circle.port').bounding_box()
    body = page.locator(f'#build-graph g[data-node="{target}"] rect.body').bounding_box()
    assert port and body
    page.mouse.move(port["x"] + port["width"] / 2, port["y"] + port["height"] / 2)
    page.mouse.down()
    page.mouse.move(body["x"] + body["width"] / 2, body["y"] + body["height"] / 2, steps=8)
    page.mouse.up()


def submit(http: httpx.Client, body: dict[str, Any]) -> str:
    response = http.post("/v1/workflows", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["workflow_id"])


def wait_final(http: httpx.Client, path: str, timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body = http.get(path).json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def llm(prompt: str, max_tokens: int) -> dict[str, Any]:
    return {"service": "llm", "prompt": prompt, "params": {"max_tokens": max_tokens, "temperature": 0}}


# ---------------------------------------------------------------- static files


def test_static_files_are_served_without_auth(platform_url: str) -> None:
    expected = {
        "/console": "text/html",
        "/console/index.html": "text/html",
        "/console/console.js": "text/javascript",
        "/console/console.css": "text/css",
    }
    for path, content_type in expected.items():
        response = httpx.get(f"{platform_url}{path}")
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(content_type)
    for path in [
        "/console/..%2Fapp.py",
        "/console/%2e%2e%2fapp.py",
        "/console/..",
        "/console/.hidden.js",
        "/console/missing.js",
        "/console/__init__.py",
    ]:
        response = httpx.get(f"{platform_url}{path}")
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"


# ---------------------------------------------------------------- sign-in


def test_sign_in_shows_tenant_and_role(page: Page, platform_url: str, artifacts: Path) -> None:
    from playwright.sync_api import expect

    page.goto(f"{platform_url}/console")
    expect(page.locator("#view-signin")).to_be_visible()
    shot(page, artifacts, "01-sign-in")

    page.fill("#token-input", "not-a-token")
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#error")).to_contain_text("unauthorized")  # the API's 401, as it said it
    expect(page.locator("#nav")).to_be_hidden()

    tenant = fresh_tenant("signin")
    sign_in(page, platform_url, tenant)
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#who-role")).to_have_text("user")
    expect(page.locator("#nav-admin")).to_be_hidden()
    page.reload()  # the token is kept in the tab's session storage
    expect(page.locator("#who-tenant")).to_have_text(tenant)

    page.click("#sign-out")
    expect(page.locator("#view-signin")).to_be_visible()
    sign_in(page, platform_url, "ops", role="admin")
    expect(page.locator("#who-role")).to_have_text("admin")
    expect(page.locator("#nav-admin")).to_be_visible()


# ---------------------------------------------------------------- build, run, watch


def test_tts_to_stt_template_runs_live(page: Page, platform_url: str, artifacts: Path) -> None:
    from playwright.sync_api import expect

    sign_in(page, platform_url, fresh_tenant("run"))
    page.select_option("#template", "tts-stt")
    expect(page.locator("#build-graph g.node")).to_have_count(2)
    expect(page.locator('#build-graph g.edge[data-from="speak"][data-to="transcribe"]')).to_have_count(1)
    assert json.loads(page.input_value("#wf-json"))["edges"] == [{"from": "speak", "to": "transcribe", "prompt": ""}]
    page.click('#build-graph g[data-node="speak"]')
    expect(page.locator("#inspector textarea[name=input-text]")).to_have_value(re.compile("quick brown fox"))
    shot(page, artifacts, "02-build")

    page.click("#wf-submit")
    expect(page).to_have_url(re.compile(r"#/watch/workflows/"))
    for node in ("speak", "transcribe"):
        expect(page.locator(f'#watch-graph g[data-node="{node}"]')).to_have_attribute(
            "data-status", "completed", timeout=RUN_TIMEOUT_MS
        )
    expect(page.locator("#watch-status .badge")).to_have_text("completed")
    # The colours came from the stream: it carried each node through running to completed.
    events = page.locator("#watch-events li")
    expect(events.filter(has_text="speak · running")).to_have_count(1)
    expect(events.filter(has_text="transcribe · completed")).to_have_count(1)

    transcript = page.locator('.result[data-node="transcribe"] pre.text-output')
    expect(transcript).to_have_text(re.compile(r"quick|brown|fox|lazy|dog", re.IGNORECASE))
    audio = page.locator('.result[data-node="speak"] audio[controls]')
    expect(audio).to_have_count(1)
    # The player has the audio loaded: the browser decoded the WAV and knows its length.
    page.wait_for_function(
        "() => { const a = document.querySelector('.result[data-node=\"speak\"] audio'); "
        "return a && a.readyState >= 1 && a.duration > 0.5; }"
    )
    expect(page.locator('.result[data-node="speak"] a.download')).to_have_attribute("download", re.compile(r"\.wav$"))
    expect(page.locator('.result[data-node="transcribe"] a.download')).to_have_attribute(
        "download", re.compile(r"\.txt$")
    )
    row = page.locator('#watch-nodes tr[data-node="speak"]')
    expect(row.locator("td").nth(3)).to_have_text("1")  # attempts
    expect(row.locator("td").nth(6)).to_have_text(re.compile(r"\d+\.\d+ s"))  # how long it took
    expect(page.locator("#watch-stream")).to_have_text("stream ended")
    shot(page, artifacts, "03-watch")

    page.set_viewport_size(MOBILE)
    shot(page, artifacts, "04-watch-mobile")
    page.click("#nav a[data-view=build]")
    expect(page.locator("#build-graph g.node")).to_have_count(2)
    shot(page, artifacts, "05-build-mobile")


def test_a_cycle_drawn_by_hand_shows_the_api_error(page: Page, platform_url: str, artifacts: Path) -> None:
    from playwright.sync_api import expect

    sign_in(page, platform_url, fresh_tenant("cycle"))
    page.select_option("#add-service", "llm")
    page.click("#add-node")
    page.click("#add-node")
    expect(page.locator("#build-graph g.node")).to_have_count(2)
    drag_edge(page, "llm", "llm2")
    expect(page.locator("#build-graph g.edge")).to_have_count(1)
    drag_edge(page, "llm2", "llm")
    expect(page.locator("#build-graph g.edge")).to_have_count(2)
    edges = json.loads(page.input_value("#wf-json"))["edges"]
    assert [(e["from"], e["to"]) for e in edges] == [("llm", "llm2"), ("llm2", "llm")]

    page.click("#wf-submit")
    banner = page.locator("#error")
    expect(banner).to_contain_text("the workflow has a cycle")
    expect(banner).to_contain_text("400 invalid_workflow")
    expect(banner.locator("li").first).to_contain_text("part of a cycle")
    expect(page.locator("#build-graph g.node.bad")).to_have_count(2)  # what the details name
    expect(page).to_have_url(re.compile(r"#/build$"))  # nothing ran: still building
    shot(page, artifacts, "06-cycle-error")


def test_inputs_from_a_file_the_microphone_and_the_json(
    page: Page, platform_url: str, tmp_path: Path, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    sign_in(page, platform_url, fresh_tenant("inputs"))
    page.select_option("#template", "voice-assistant")
    expect(page.locator("#template-hint")).to_contain_text("listen")
    page.click('#build-graph g[data-node="listen"]')

    page.check("#inspector input[name=input-listen][value=file]")
    sample = tmp_path / "question.wav"
    sample.write_bytes(wav_file())
    page.set_input_files("#inspector input[type=file]", str(sample))
    expect(page.locator("#inspector .attachment-id")).to_contain_text("upload up_")
    upload = json.loads(page.input_value("#wf-json"))["inputs"]["listen"]["upload_id"]
    expect(page.locator("#inspector .attachment audio")).to_have_count(1)  # a preview to listen to

    page.check("#inspector input[name=input-listen][value=microphone]")
    page.click("#inspector button.record")
    expect(page.locator("#inspector button.record")).to_have_text("■ Stop")
    page.wait_for_timeout(800)
    page.click("#inspector button.record")
    expect(page.locator("#inspector .attachment")).to_contain_text("recording-")
    recorded = json.loads(page.input_value("#wf-json"))["inputs"]["listen"]["upload_id"]
    assert recorded != upload  # the recording, as WAV, accepted by the API's media check

    # From the form to the JSON, and from the JSON to the graph.
    page.fill("#inspector textarea[name=node-prompt]", "Transcribe this.")
    assert json.loads(page.input_value("#wf-json"))["nodes"]["listen"]["prompt"] == "Transcribe this."
    spec = json.loads(page.input_value("#wf-json"))
    spec["nodes"]["extra"] = {"service": "tts", "prompt": "", "params": {}}
    spec["edges"].append({"from": "answer", "to": "extra", "prompt": ""})
    page.fill("#wf-json", json.dumps(spec))
    expect(page.locator('#build-graph g[data-node="extra"]')).to_have_count(1)
    expect(page.locator('#build-graph g.edge[data-from="answer"][data-to="extra"]')).to_have_count(1)
    page.fill("#wf-json", '{"nodes": ')
    expect(page.locator("#json-error")).to_contain_text("Not valid JSON")
    expect(page.locator("#wf-submit")).to_be_disabled()
    page.fill("#wf-json", json.dumps(spec))
    expect(page.locator("#wf-submit")).to_be_enabled()


def test_reconnects_with_last_event_id(page: Page, platform_url: str) -> None:
    from playwright.sync_api import expect

    tenant = fresh_tenant("resume")
    with client(platform_url, tenant) as http:
        workflow_id = submit(http, {"name": "resume", "nodes": {"hello": llm("Say hello.", 4)}})
    seen: list[str | None] = []

    def events(route: Route) -> None:
        seen.append(route.request.headers.get("last-event-id"))
        if len(seen) == 1:
            # The first connection drops after the first event (always a pending workflow).
            body = 'id: 1\ndata: {"type": "workflow", "status": "pending"}\n\n'
            route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)
        else:
            route.continue_()

    page.route("**/events", events)
    sign_in(page, platform_url, tenant)
    page.goto(f"{platform_url}/console#/watch/workflows/{workflow_id}")
    expect(page.locator('#watch-graph g[data-node="hello"]')).to_have_attribute(
        "data-status", "completed", timeout=RUN_TIMEOUT_MS
    )
    expect(page.locator("#watch-stream")).to_have_text("stream ended", timeout=RUN_TIMEOUT_MS)
    assert seen == [None, "1"]
    ids = [int(text.split()[0].lstrip("#")) for text in page.locator("#watch-events li").all_text_contents()]
    assert ids == list(range(1, len(ids) + 1))  # none lost, none twice


def test_a_video_shows_its_progress_and_plays(page: Page, platform_url: str, artifacts: Path) -> None:
    from playwright.sync_api import expect

    tenant = fresh_tenant("video")
    params = {"width": 128, "height": 128, "seconds": 4, "steps": 24}
    with client(platform_url, tenant) as http:
        response = http.post("/v1/tasks", json={"service": "text2video", "prompt": "a kite", "params": params})
        task_id = response.json()["task_id"]
    sign_in(page, platform_url, tenant)
    page.goto(f"{platform_url}/console#/watch/tasks/{task_id}")
    # While it runs, its row shows the denoising steps as they are reported.
    expect(page.locator('#watch-nodes tr[data-node="task"] progress')).to_have_count(1, timeout=RUN_TIMEOUT_MS)
    expect(page.locator('#watch-graph g[data-node="task"]')).to_have_attribute(
        "data-status", "completed", timeout=RUN_TIMEOUT_MS
    )
    video = page.locator('.result[data-node="task"] video[controls]')
    expect(video).to_have_count(1)
    # Chromium decodes the H.264 MP4: it knows its size and length, and it plays to the end.
    page.wait_for_function(
        "() => { const v = document.querySelector('.result[data-node=\"task\"] video'); "
        "return v && v.readyState >= 2 && v.videoWidth === 128 && v.duration > 3; }",
        timeout=RUN_TIMEOUT_MS,
    )
    page.evaluate("() => { const v = document.querySelector('.result video'); v.muted = true; return v.play(); }")
    page.wait_for_function("() => document.querySelector('.result video').ended", timeout=30_000)
    expect(page.locator('.result[data-node="task"] a.download')).to_have_attribute("download", re.compile(r"\.mp4$"))
    shot(page, artifacts, "10-video")


# ---------------------------------------------------------------- history


def wait_row(page: Page, workflow_id: str, status: str, timeout_s: float = 60) -> None:
    """Refresh the list until the row shows `status` (the list is not live)."""
    badge = page.locator(f'#hist-body tr[data-id="{workflow_id}"] .badge')
    deadline = time.monotonic() + timeout_s
    while badge.inner_text() != status:
        assert time.monotonic() < deadline, f"{workflow_id} stayed {badge.inner_text()}"
        page.wait_for_timeout(300)
        page.click("#hist-refresh")


def test_history_filters_pages_and_acts(page: Page, platform_url: str, artifacts: Path) -> None:
    from playwright.sync_api import expect

    tenant = fresh_tenant("history")
    with client(platform_url, tenant) as http:
        done = [submit(http, {"name": f"tiny-{i}", "nodes": {"a": llm("Hi", 1)}}) for i in range(6)]
        task = http.post("/v1/tasks", json={"service": "tts", "prompt": "Hello."}).json()["task_id"]
        for workflow_id in done:
            wait_final(http, f"/v1/workflows/{workflow_id}")
        wait_final(http, f"/v1/tasks/{task}")
        # The tenant suspended (no concurrency), its next workflow waits in the queue: it can be
        # cancelled and retried at leisure, and costs no model time.
        with client(platform_url, "ops", role="admin") as admin:
            admin.put(f"/v1/admin/tenants/{tenant}", json={"max_concurrency": 0}).raise_for_status()
        held = submit(http, {"name": "held", "nodes": {"essay": llm("Write an essay about rivers.", 64)}})

        sign_in(page, platform_url, tenant)
        page.click("#nav a[data-view=history]")
        expect(page.locator("#hist-body tr")).to_have_count(7)
        expect(page.locator("#hist-body tr").first).to_have_attribute("data-id", held)  # newest first

        page.select_option("#hist-status", "completed")
        page.select_option("#hist-limit", "5")
        expect(page.locator("#hist-range")).to_have_text("1–5 of 6")
        page.click("#hist-next")
        expect(page.locator("#hist-range")).to_have_text("6–6 of 6")
        expect(page.locator("#hist-next")).to_be_disabled()
        page.click("#hist-prev")
        expect(page.locator("#hist-body tr")).to_have_count(5)

        page.select_option("#hist-status", "")
        row = page.locator(f'#hist-body tr[data-id="{held}"]')
        row.get_by_role("button", name="Cancel").click()
        wait_row(page, held, "cancelled")
        expect(row.get_by_role("button", name="Retry")).to_be_enabled()
        expect(row.get_by_role("button", name="Cancel")).to_be_disabled()
        shot(page, artifacts, "07-history")
        row.get_by_role("button", name="Retry").click()
        expect(row.locator(".badge")).to_have_text(re.compile("pending|running"))
        row.get_by_role("button", name="Delete").click()
        row.get_by_role("button", name="Really?").click()
        expect(row).to_have_count(0)
        assert http.get(f"/v1/workflows/{held}").status_code == 404

        page.click("#hist-tabs button[data-kind=tasks]")
        page.select_option("#hist-service", "tts")
        task_row = page.locator(f'#hist-body tr[data-id="{task}"]')
        expect(task_row).to_contain_text("tts")
        task_row.locator("a").click()
        expect(page.locator('#watch-graph g[data-node="task"]')).to_have_attribute("data-status", "completed")
        expect(page.locator('.result[data-node="task"] audio[controls]')).to_have_count(1)


# ---------------------------------------------------------------- admin


def test_admin_edits_tenants_and_charts_fair_sharing(page: Page, platform_url: str, artifacts: Path) -> None:
    from playwright.sync_api import expect

    first, second = fresh_tenant("fair-a"), fresh_tenant("fair-b")
    sign_in(page, platform_url, "ops", role="admin")
    page.click("#nav a[data-view=admin]")
    expect(page.locator("#charts .chart-card").first).to_be_visible()  # the first poll is in
    for tenant in (first, second):
        with client(platform_url, tenant) as http:
            http.post("/v1/tasks", json={"service": "tts", "prompt": f"Hello from {tenant}."}).raise_for_status()
    for tenant in (first, second):
        for kind in ("cost", "queued"):
            series = page.locator(f'svg.chart[data-service="tts"][data-kind="{kind}"] polyline[data-tenant="{tenant}"]')
            expect(series).to_have_count(1, timeout=30_000)
    expect(page.locator("#legend")).to_contain_text(first)
    # Each tenant was granted the cost of its call while the page watched: both have a share.
    share = page.locator('.chart-card[data-service="tts"] .share')
    expect(share).to_contain_text(re.compile(rf"{first} \d+%"))
    expect(share).to_contain_text(re.compile(rf"{second} \d+%"))
    cost_line = page.locator(f'svg.chart[data-service="tts"][data-kind="cost"] polyline[data-tenant="{first}"]')
    expect(cost_line).to_have_attribute("points", re.compile(r"\S+ \S+"))  # a line, not a dot

    page.fill("#tenant-new", first)
    page.click("#tenant-add button")
    row = page.locator(f'#tenants-body tr[data-tenant="{first}"]')
    row.locator("input[name=weight]").fill("0")
    row.get_by_role("button", name="Save").click()
    expect(page.locator("#error")).to_contain_text("422 validation_error")  # the API's own words
    expect(page.locator("#error li")).to_contain_text("weight")
    row.locator("input[name=weight]").fill("3")
    row.get_by_role("button", name="Save").click()
    expect(page.locator(f'#tenants-body tr[data-tenant="{first}"]')).to_contain_text("saved")
    with client(platform_url, "ops", role="admin") as admin:
        assert admin.get(f"/v1/admin/tenants/{first}").json()["weight"] == 3
    expect(page.locator("#error")).to_be_hidden()
    shot(page, artifacts, "08-admin")
    page.set_viewport_size(MOBILE)
    page.wait_for_function("() => document.querySelector('svg.chart').viewBox.baseVal.width < 400")  # redrawn
    shot(page, artifacts, "09-admin-mobile")


def test_usage_shows_the_tenants_calls_in_a_table_and_a_chart(page: Page, platform_url: str, artifacts: Path) -> None:
    from playwright.sync_api import expect

    tenant = fresh_tenant("usage")
    with client(platform_url, tenant) as http:
        for text in ("one", "two"):
            http.post("/v1/embeddings", json={"model": "embed", "input": text}).raise_for_status()
        deadline = time.monotonic() + 30  # the statistics are written just after the calls
        while not http.get("/v1/usage").json()["items"]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    sign_in(page, platform_url, tenant)
    page.click("#nav a[data-view=usage]")
    expect(page.locator("#usage-tenant-label")).to_be_hidden()  # a user sees only the own tenant
    row = page.locator(f'#usage-body tr[data-day="{today}"][data-service="embed"]')
    expect(row.locator('td[data-key="requests"]')).to_have_text("2")
    expect(row.locator('td[data-key="errors"]')).to_have_text("0")
    bar = page.locator(f'#usage-chart rect[data-day="{today}"][data-service="embed"]')
    expect(bar).to_have_attribute("data-requests", "2")
    expect(page.locator("#usage-chart text.axis")).to_have_count(3 + 7)  # the y axis and the seven days
    shot(page, artifacts, "10-usage")

    # An admin narrows to that tenant, or sees every tenant with a tenant column.
    page.click("#sign-out")
    sign_in(page, platform_url, "ops", role="admin")
    page.click("#nav a[data-view=usage]")
    expect(page.locator("#usage-scope")).to_have_text("every tenant")
    expect(page.locator(f'#usage-body tr[data-tenant="{tenant}"][data-service="embed"]')).to_have_count(1)
    page.fill("#usage-tenant", tenant)
    page.click("#usage-refresh")
    expect(page.locator("#usage-scope")).to_have_text(f"tenant {tenant}")
    expect(page.locator("#usage-body tr[data-tenant]")).to_have_count(1)
