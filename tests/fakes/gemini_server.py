"""A fake Gemini API: a real HTTP server on 127.0.0.1 that speaks the REST calls google-genai makes.

It answers `POST /v1beta/models/{model}:generateContent` and
`POST /v1beta/models/{model}:streamGenerateContent?alt=sse` the way the Gemini API does (camelCase
JSON, server-sent events), so tests run the real SDK end to end with no network. Every request is
recorded, so a test can check what the client actually sent. Attributes set between calls change
how it answers: `fail_status` makes every call fail with that HTTP status and Google's error
body, `delay_s` holds each answer back (for timeouts).

Tokens are counted as whitespace-separated words: enough for usage accounting to be checked.

With function declarations (and a calling mode other than NONE) it answers a `functionCall` of
the first allowed function, its arguments made from the declared schema (`example_of`), unless
the last turn is a function's response: then it answers text, as a model would. With a
`responseJsonSchema` it answers a JSON example of the schema.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

from tests.fakes import google_http

API_VERSION = "v1beta"


class RecordedRequest(google_http.RecordedRequest):
    """One call as the server received it."""

    @property
    def model(self) -> str:
        return self.path.rsplit("/", 1)[-1].split(":", 1)[0]

    @property
    def action(self) -> str:
        return self.path.rsplit(":", 1)[-1]

    @property
    def parts(self) -> list[dict[str, Any]]:
        return [part for content in self.body.get("contents", []) for part in content.get("parts", [])]

    @property
    def images(self) -> list[tuple[str, bytes]]:
        """The inline images sent, as (MIME type, bytes); the API accepts both JSON spellings of the keys."""
        blobs = [part.get("inlineData") or part.get("inline_data") for part in self.parts]
        return [
            (
                blob.get("mimeType") or blob.get("mime_type"),
                base64.urlsafe_b64decode(blob["data"].replace("+", "-").replace("/", "_")),
            )
            for blob in blobs
            if blob
        ]

    @property
    def generation_config(self) -> dict[str, Any]:
        return dict(self.body.get("generationConfig", {}))


class FakeGemini:
    """The server and its knobs; use it as a context manager, or `start()` and `stop()`."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.reply = "a small fake answer from the fake gemini server"
        self.fail_status: int | None = None
        self.delay_s = 0.0
        self.image_size = (64, 48)
        self.image_format = "PNG"
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-gemini", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> FakeGemini:
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
        self.fail_status = None
        self.delay_s = 0.0

    def __enter__(self) -> FakeGemini:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -------------------------------------------------------------- answers

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def answer_words(self, request: RecordedRequest) -> tuple[list[str], str]:
        """The words of the reply, cut by `stopSequences` and `maxOutputTokens`, and the finish reason."""
        config = request.generation_config
        text = self.reply
        for stop in config.get("stopSequences", []):
            text = text.split(stop, 1)[0]
        words = text.split()
        limit = config.get("maxOutputTokens")
        if limit is not None and len(words) > limit:
            return words[:limit], "MAX_TOKENS"
        return words, "STOP"

    def image_part(self) -> dict[str, Any]:
        image = Image.new("RGB", self.image_size, (200, 80, 40))
        buffer = io.BytesIO()
        image.save(buffer, format=self.image_format)
        mime = Image.MIME[self.image_format]
        return {"inlineData": {"mimeType": mime, "data": base64.b64encode(buffer.getvalue()).decode()}}


def example_of(schema: dict[str, Any]) -> Any:
    """A value that follows a (simple) JSON Schema: every property, the first enum value, one item."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return example_of(schema[key][0])
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        return {name: example_of(sub) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [example_of(schema.get("items", {"type": "string"}))] * max(1, schema.get("minItems", 1))
    return {"integer": 1, "number": 1.5, "boolean": True, "null": None}.get(kind, "fake")


def json_schema_of(fields: dict[str, Any], prefix: str) -> Any:
    """A `...JsonSchema` field; the SDK sends these JSON passthroughs in snake case, as the API accepts."""
    return fields.get(f"{prefix}JsonSchema", fields.get(f"{prefix}_json_schema"))


def function_call(request: RecordedRequest) -> dict[str, Any] | None:
    """The `functionCall` part the request's tools ask for, or None for a text answer."""
    declarations = [d for tool in request.body.get("tools", []) for d in tool.get("functionDeclarations", [])]
    config = request.body.get("toolConfig", {}).get("functionCallingConfig", {})
    if not declarations or config.get("mode") == "NONE":
        return None
    contents = request.body.get("contents", [])
    if contents and any("functionResponse" in part for part in contents[-1].get("parts", [])):
        return None
    allowed = config.get("allowedFunctionNames") or [d["name"] for d in declarations]
    declaration = next(d for d in declarations if d["name"] == allowed[0])
    schema = json_schema_of(declaration, "parameters") or declaration.get("parameters") or {}
    return {"functionCall": {"name": declaration["name"], "args": example_of(schema)}}


def prompt_tokens(request: RecordedRequest) -> int:
    texts = [part.get("text", "") for part in request.parts]
    texts += [part.get("text", "") for part in request.body.get("systemInstruction", {}).get("parts", [])]
    return sum(len(text.split()) for text in texts)


def usage(request: RecordedRequest, completion_tokens: int) -> dict[str, int]:
    prompt = prompt_tokens(request)
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": completion_tokens,
        "totalTokenCount": prompt + completion_tokens,
    }


def candidate(parts: list[dict[str, Any]], finish_reason: str | None) -> dict[str, Any]:
    answer: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish_reason:
        answer["finishReason"] = finish_reason
    return answer


def _handler_for(fake: FakeGemini) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def do_POST(self) -> None:
            url, request = google_http.read_post(self, RecordedRequest)
            fake.record(request)
            if fake.delay_s:
                time.sleep(fake.delay_s)
            if not url.path.startswith(f"/{API_VERSION}/models/") or request.action not in (
                "generateContent",
                "streamGenerateContent",
            ):
                self.send_error_json(404, f"no such method: {url.path}")
            elif fake.fail_status is not None:
                self.send_error_json(fake.fail_status, "the fake gemini was told to fail")
            elif request.action == "generateContent":
                self.send_json(200, self.whole_answer(request))
            else:
                self.send_events(self.streamed_answer(request))

        def whole_answer(self, request: RecordedRequest) -> dict[str, Any]:
            if "IMAGE" in request.generation_config.get("responseModalities", []):
                parts = [fake.image_part()]
                return {"candidates": [candidate(parts, "STOP")], "usageMetadata": usage(request, 1290)}
            call = function_call(request)
            if call is not None:
                return {"candidates": [candidate([call], "STOP")], "usageMetadata": usage(request, 8)}
            schema = json_schema_of(request.generation_config, "response")
            if schema is not None:
                text = json.dumps(example_of(schema))
                return {"candidates": [candidate([{"text": text}], "STOP")], "usageMetadata": usage(request, 8)}
            words, finish_reason = fake.answer_words(request)
            parts = [{"text": " ".join(words)}]
            return {"candidates": [candidate(parts, finish_reason)], "usageMetadata": usage(request, len(words))}

        def streamed_answer(self, request: RecordedRequest) -> list[dict[str, Any]]:
            """One event per word, each with the usage so far, the last with the finish reason (a
            function call is one event)."""
            call = function_call(request)
            if call is not None:
                return [{"candidates": [candidate([call], "STOP")], "usageMetadata": usage(request, 8)}]
            words, finish_reason = fake.answer_words(request)
            events = []
            for i, word in enumerate(words):
                last = i == len(words) - 1
                text = word if last else word + " "
                events.append(
                    {
                        "candidates": [candidate([{"text": text}], finish_reason if last else None)],
                        "usageMetadata": usage(request, i + 1),
                    }
                )
            if not events:
                events.append(
                    {"candidates": [candidate([{"text": ""}], finish_reason)], "usageMetadata": usage(request, 0)}
                )
            return events

        def send_json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def send_error_json(self, status: int, message: str) -> None:
            self.send_json(status, google_http.error_body(status, message))

        def send_events(self, events: list[dict[str, Any]]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for event in events:
                self.write_chunk(f"data: {json.dumps(event)}\r\n\r\n".encode())
            self.write_chunk(b"")

        def write_chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    return Handler
