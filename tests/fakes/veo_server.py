"""A fake of Veo on Vertex AI (express mode: an API key, no project): a real HTTP server on 127.0.0.1
that speaks the REST calls google-genai makes for `models.generate_videos` and `operations.get`.

`POST /v1beta1/publishers/google/models/{model}:predictLongRunning` starts an operation;
`POST .../{model}:fetchPredictOperation` says it is done after `polls` polls, with the video inline
(base64, as Vertex answers when no Cloud Storage bucket is named): a small real MP4. `mode` changes
the outcome: `"fail"` (the operation ends with an error), `"hang"` (it never ends); `fail_status`
makes the start fail with that HTTP status and Google's error body (429: quota).
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from deployments.media import encode_mp4
from tests.fakes import google_http


def sample_mp4(width: int = 64, height: int = 36, frames: int = 24, fps: int = 24) -> bytes:
    """A small real MP4: a colour ramp over the frames."""
    ramp = [np.full((height, width, 3), (i * 10) % 256, dtype=np.uint8) for i in range(frames)]
    return encode_mp4(ramp, fps)


class FakeVeo:
    """The server and its knobs; use it as a context manager."""

    def __init__(self) -> None:
        self.requests: list[google_http.RecordedRequest] = []
        self.mode = "ok"  # "ok", "fail" or "hang"
        self.polls = 2
        self.fail_status: int | None = None
        self.video = sample_mp4()
        self.operations: dict[str, int] = {}  # operation id -> polls so far
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-veo", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> FakeVeo:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def operation(self, name: str) -> dict[str, Any]:
        op_id = name.rsplit("/", 1)[1]
        self.operations[op_id] += 1
        if self.mode == "hang" or self.operations[op_id] <= self.polls:
            return {"name": name, "done": False}
        if self.mode == "fail":
            return {"name": name, "done": True, "error": {"code": 13, "message": "the fake veo failed"}}
        video = {"bytesBase64Encoded": base64.b64encode(self.video).decode(), "mimeType": "video/mp4"}
        return {"name": name, "done": True, "response": {"videos": [video]}}


def _handler_for(fake: FakeVeo) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            url, request = google_http.read_post(self, google_http.RecordedRequest)
            fake.requests.append(request)
            model = url.path.split("/models/", 1)[-1].split(":", 1)[0]
            if url.path.endswith(":predictLongRunning"):
                if fake.fail_status is not None:
                    body = google_http.error_body(fake.fail_status, "the fake veo refused")
                    self.send_json(fake.fail_status, body)
                    return
                op_id = uuid.uuid4().hex[:12]
                fake.operations[op_id] = 0
                self.send_json(200, {"name": f"publishers/google/models/{model}/operations/{op_id}"})
            elif url.path.endswith(":fetchPredictOperation"):
                name = str(request.body.get("operationName", ""))
                if name.rsplit("/", 1)[-1] not in fake.operations:
                    self.send_json(404, google_http.error_body(404, "no such operation"))
                else:
                    self.send_json(200, fake.operation(name))
            else:
                self.send_json(404, google_http.error_body(404, f"no such method: {url.path}"))

        def send_json(self, status: int, body: dict[str, Any]) -> None:
            self.send_bytes(status, json.dumps(body).encode(), "application/json; charset=UTF-8")

        def send_bytes(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
