"""A fake of Google Cloud Speech-to-Text and Text-to-Speech: a real HTTP server on 127.0.0.1.

It answers the REST calls the real SDK clients make on their REST transport,
`POST /v1/speech:recognize` and `POST /v1/text:synthesize`, with the JSON Google sends (camelCase,
bytes in base64), so tests run `google-cloud-speech` and `google-cloud-texttospeech` end to end
with no network. Every request is recorded, so a test can check what the client actually sent.

Attributes set between calls change how it answers: `transcript` is what recognition returns,
`fail_status` makes every call fail with that HTTP status and Google's error body, `delay_s` holds
each answer back (for timeouts), and `wav_header=False` sends synthesized audio as bare samples.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from deployments.media import wav_bytes
from tests.fakes import google_http

# How long the fake's speech lasts per character of text: roughly a person's pace.
SECONDS_PER_CHARACTER = 0.06


class RecordedRequest(google_http.RecordedRequest):
    """One call as the server received it."""

    @property
    def audio(self) -> bytes:
        """The audio a recognition request carried, decoded."""
        return base64.b64decode(self.body["audio"]["content"])


class FakeGoogleCloud:
    """The server and its knobs; use it as a context manager, or `start()` and `stop()`."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.transcript = "hello from the fake speech service"
        self.fail_status: int | None = None
        self.delay_s = 0.0
        self.wav_header = True
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        # A client that timed out leaves its handler sleeping; closing must not wait for it.
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-google-cloud", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> FakeGoogleCloud:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def reset(self) -> None:
        """Forget the recorded requests and answer properly again."""
        with self._lock:
            self.requests.clear()
        self.transcript = "hello from the fake speech service"
        self.fail_status = None
        self.delay_s = 0.0
        self.wav_header = True

    def __enter__(self) -> FakeGoogleCloud:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -------------------------------------------------------------- answers

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def recognize(self, request: RecordedRequest) -> dict[str, Any]:
        language = request.body.get("config", {}).get("languageCode", "en-US")
        alternative = {"transcript": self.transcript, "confidence": 0.93}
        return {
            "results": [{"alternatives": [alternative], "languageCode": language.lower()}],
            "totalBilledTime": "3s",
            "requestId": str(len(self.requests)),
        }

    def synthesize(self, request: RecordedRequest) -> dict[str, Any]:
        """A tone as long as the text would take to say, as LINEAR16 at the requested sample rate."""
        audio_config = request.body.get("audioConfig", {})
        sample_rate = int(audio_config.get("sampleRateHertz") or 24_000)
        speaking_rate = float(audio_config.get("speakingRate") or 1)
        seconds = len(request.body["input"]["text"]) * SECONDS_PER_CHARACTER / speaking_rate
        frames = max(1, int(seconds * sample_rate))
        samples = struct.pack(
            f"<{frames}h", *(int(8000 * math.sin(2 * math.pi * 440 * i / sample_rate)) for i in range(frames))
        )
        audio = wav_bytes(samples, sample_rate) if self.wav_header else samples
        return {"audioContent": base64.b64encode(audio).decode()}


def _handler_for(fake: FakeGoogleCloud) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def do_POST(self) -> None:
            url, request = google_http.read_post(self, RecordedRequest)
            fake.record(request)
            if fake.delay_s:
                time.sleep(fake.delay_s)
            answers = {"/v1/speech:recognize": fake.recognize, "/v1/text:synthesize": fake.synthesize}
            if url.path not in answers:
                self.send_error_json(404, f"no such method: {url.path}")
            elif fake.fail_status is not None:
                self.send_error_json(fake.fail_status, "the fake google cloud was told to fail")
            else:
                self.send_json(200, answers[url.path](request))

        def send_json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test); nothing is left to answer

        def send_error_json(self, status: int, message: str) -> None:
            self.send_json(status, google_http.error_body(status, message))

    return Handler
