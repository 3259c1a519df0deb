"""A fake Volcengine Ark: a real HTTP server on 127.0.0.1 that speaks the REST calls of the Ark SDK
(`volcenginesdkarkruntime`) under `/api/v3`: chat completions (whole and streamed), image
generations, and content-generation tasks (Seedance), whose finished video is served from `/videos/`.

Knobs: `fail_status` makes every API call fail with that HTTP status and Ark's error body (429:
quota); `task_mode` is `"ok"`, `"fail"` (the task ends failed) or `"hang"` (it stays running);
`polls` is how many polls a task stays `running` first.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

from tests.fakes import google_http
from tests.fakes.veo_server import sample_mp4

PREFIX = "/api/v3"


class FakeArk:
    """The server and its knobs; use it as a context manager."""

    def __init__(self) -> None:
        self.requests: list[google_http.RecordedRequest] = []
        self.reply = "a small fake answer from the fake ark"
        self.fail_status: int | None = None
        self.task_mode = "ok"
        self.polls = 1
        self.video = sample_mp4()
        self.tasks: dict[str, int] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-ark", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}{PREFIX}"

    def __enter__(self) -> FakeArk:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def task(self, task_id: str) -> dict[str, Any]:
        self.tasks[task_id] += 1
        status = "running" if self.task_mode == "hang" or self.tasks[task_id] <= self.polls else "succeeded"
        body: dict[str, Any] = {"id": task_id, "model": "doubao-seedance", "status": status}
        if status == "succeeded" and self.task_mode == "fail":
            body.update(status="failed", error={"code": "InternalError", "message": "the fake ark failed"})
        elif status == "succeeded":
            body["content"] = {"video_url": f"{self.url}/videos/{task_id}.mp4"}
        return body


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (20, 160, 90)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _handler_for(fake: FakeArk) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            url, request = google_http.read_post(self, google_http.RecordedRequest)
            fake.requests.append(request)
            path = url.path.removeprefix(PREFIX)
            if fake.fail_status is not None:
                self.send_error_json(fake.fail_status, "the fake ark was told to fail")
            elif path == "/chat/completions":
                self.chat(request.body)
            elif path == "/images/generations":
                width, height = (int(side) for side in request.body["size"].split("x"))
                data = [{"b64_json": base64.b64encode(jpeg(width, height)).decode(), "size": request.body["size"]}]
                self.send_json(200, {"model": request.body["model"], "created": 1, "data": data})
            elif path == "/contents/generations/tasks":
                task_id = f"cgt-{uuid.uuid4().hex[:12]}"
                fake.tasks[task_id] = 0
                self.send_json(200, {"id": task_id})
            else:
                self.send_error_json(404, f"no such path: {url.path}")

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path.startswith("/videos/"):
                self.send_bytes(200, fake.video, "video/mp4")
                return
            task_id = path.removeprefix(f"{PREFIX}/contents/generations/tasks/")
            if fake.fail_status is not None:
                self.send_error_json(fake.fail_status, "the fake ark was told to fail")
            elif task_id in fake.tasks:
                self.send_json(200, fake.task(task_id))
            else:
                self.send_error_json(404, f"no such path: {path}")

        def chat(self, body: dict[str, Any]) -> None:
            words = fake.reply.split()[: body.get("max_tokens") or None]
            prompt = sum(len(m["content"].split()) for m in body["messages"])
            usage = {"prompt_tokens": prompt, "completion_tokens": len(words), "total_tokens": prompt + len(words)}
            base = {"id": "chat-1", "created": 1, "model": body["model"]}
            if not body.get("stream"):
                message = {"role": "assistant", "content": " ".join(words)}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
                self.send_json(200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for index, word in enumerate(words):
                last = index == len(words) - 1
                delta = {"index": 0, "delta": {"content": word + ("" if last else " ")}, "finish_reason": None}
                if last:
                    delta["finish_reason"] = "stop"
                self.write_chunk({**base, "object": "chat.completion.chunk", "choices": [delta]})
            self.write_chunk({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
            self.write_raw(b"data: [DONE]\n\n")
            self.write_raw(b"")

        def write_chunk(self, event: dict[str, Any]) -> None:
            self.write_raw(f"data: {json.dumps(event)}\n\n".encode())

        def write_raw(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def send_json(self, status: int, body: dict[str, Any]) -> None:
            self.send_bytes(status, json.dumps(body).encode(), "application/json")

        def send_error_json(self, status: int, message: str) -> None:
            self.send_json(status, {"error": {"code": "FakeError", "message": message, "type": "fake"}})

        def send_bytes(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
