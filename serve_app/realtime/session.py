"""One realtime session: its config, its conversation, its audio buffer, and the voice pipeline.

The session speaks OpenAI's Realtime (GA) events over whatever carries them (a WebSocket, a
WebRTC data channel): `handle` takes one client event as text, and `send` is given every server
event as a dict. The pipeline: pcm16 at 24 kHz in → silero-vad (with `server_vad`) → `stt` at the
end of speech → `llm` streamed → `tts` by sentence while the tokens arrive → pcm16 at 24 kHz out.
Every model call is an ordinary `Platform` call at the tenant's `critical` priority. The
conversation is the session's own: nothing outlives the connection.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import functools
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from common.errors import PlatformError, unwrap
from deployments.types import ChatMessage, LLMRequest, SpeechRequest, TranscribeRequest, TranscribeResult
from serve_app import avatars
from serve_app.auth import Principal
from serve_app.platform import Platform
from serve_app.realtime.audio import VAD_RATE, WIRE_RATE, Vad, duration_ms, pcm_of, resample, wav_of

log = logging.getLogger(__name__)

PRIORITY = "critical"
AUDIO_FORMAT = {"type": "audio/pcm", "rate": WIRE_RATE}
DEFAULT_TURN_DETECTION: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
}
DEFAULT_MAX_OUTPUT_TOKENS = 256
# While nobody speaks, the buffer keeps only this much audio (the prefix padding comes from it).
IDLE_BUFFER_MS = 2_000
MIN_COMMIT_MS = 100
# The answer is prepared once the user has been silent this long, while the VAD waits out the rest
# of `silence_duration_ms` (the pauses between words are shorter).
PREPARE_AFTER_MS = 64
MAX_CONTEXT_ITEMS = 24
# One audio delta carries at most this much speech (OpenAI's are of the same order).
AUDIO_DELTA_MS = 200
# A sentence ends at . ! ? or a newline followed by a space; a long run without one is cut at a space.
SENTENCE_END = re.compile(r"[.!?;:]+[\"')\]]*\s|\n+")
MAX_SENTENCE_CHARS = 200
# A turn is transcribed in a 20 s window rather than Whisper's 30 s: less than half the time, for
# a little accuracy (see `FasterWhisperBackend._transcribe_in_window`). Longer turns take 30 s.
STT_WINDOW_S = 20.0
# The first piece of an answer is spoken at its first comma (after this many words at least) or
# once this many words are written, whichever comes first. Short, because the first audio waits
# for its words and their synthesis (piper: 115 ms for three words, 190 ms for six, measured).
FIRST_CLAUSE = re.compile(r"[,;:]\s")
FIRST_CHUNK_MIN_WORDS = 2
FIRST_CHUNK_WORDS = 3
CLIENT_EVENTS = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "response.create",
    "response.cancel",
)

Send = Callable[[dict[str, Any]], Awaitable[None]]


class AudioSink(Protocol):
    """Where a session's speech goes instead of `response.output_audio.delta` events (a WebRTC
    track): pcm16 at 24 kHz, and `clear` drops what is not yet played (barge-in)."""

    def write(self, pcm: bytes) -> None: ...

    def clear(self) -> None: ...


class EventError(Exception):
    """A client event the session refuses: answered with an `error` event; the session goes on."""

    def __init__(self, code: str, message: str, param: str | None = None, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.kind = kind


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


@dataclass
class SessionConfig:
    """What `session.update` sets (the GA session's fields this platform honours)."""

    instructions: str = "You are a helpful, friendly voice assistant. Answer briefly, in plain English sentences."
    voice: str | None = None
    output_modalities: list[str] = field(default_factory=lambda: ["audio"])
    turn_detection: dict[str, Any] | None = field(default_factory=lambda: dict(DEFAULT_TURN_DETECTION))
    transcription: dict[str, Any] | None = None
    max_output_tokens: int | str = "inf"
    avatar: str | None = None

    def update(self, session: Any) -> None:
        """Merge a `session.update`'s `session`, checking each field; nothing changes on an error."""
        try:
            changes = self._changes(session)
        except (TypeError, ValueError, AttributeError):  # a field of the wrong shape, deep inside
            raise EventError("invalid_value", "the session has a field of the wrong type", "session") from None
        for name, value in changes.items():
            setattr(self, name, value)

    def _changes(self, session: Any) -> dict[str, Any]:
        if not isinstance(session, dict):
            raise EventError("invalid_value", "`session` must be an object", "session")
        if session.get("type", "realtime") != "realtime":
            raise EventError("invalid_value", "only `realtime` sessions are served", "session.type")
        changes: dict[str, Any] = {}
        if "instructions" in session:
            changes["instructions"] = _text(session["instructions"], "session.instructions")
        if "output_modalities" in session:
            changes["output_modalities"] = modalities(session["output_modalities"], "session.output_modalities")
        if "max_output_tokens" in session:
            changes["max_output_tokens"] = max_tokens(session["max_output_tokens"], "session.max_output_tokens")
        if "avatar" in session:  # its persona is applied by `configured`, which looks it up
            if session["avatar"] is not None:
                _text(session["avatar"], "session.avatar")
            changes["avatar"] = session["avatar"]
        audio = session.get("audio") or {}
        if not isinstance(audio, dict):
            raise EventError("invalid_value", "`audio` must be an object", "session.audio")
        audio_in, audio_out = audio.get("input") or {}, audio.get("output") or {}
        for where, part in (("input", audio_in), ("output", audio_out)):
            fmt = part.get("format")
            if fmt is not None and (fmt.get("type") != "audio/pcm" or fmt.get("rate", WIRE_RATE) != WIRE_RATE):
                raise EventError(
                    "unsupported_value", "only audio/pcm at 24000 Hz is served", f"session.audio.{where}.format"
                )
        if "turn_detection" in audio_in:
            changes["turn_detection"] = turn_detection(audio_in["turn_detection"])
        if "transcription" in audio_in:
            transcription = audio_in["transcription"]
            if transcription is not None and (
                not isinstance(transcription, dict) or not isinstance(transcription.get("language") or "", str)
            ):
                raise EventError(
                    "invalid_value", "`transcription` is null or an object", "session.audio.input.transcription"
                )
            changes["transcription"] = transcription
        if "voice" in audio_out:
            changes["voice"] = _text(audio_out["voice"], "session.audio.output.voice")
        return changes

    def body(self, session_id: str, model: str) -> dict[str, Any]:
        """The session object of `session.created` and `session.updated` (with `avatar`, this
        platform's own field, when one is named)."""
        return {
            **({"avatar": self.avatar} if self.avatar else {}),
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": model,
            "instructions": self.instructions,
            "output_modalities": self.output_modalities,
            "max_output_tokens": self.max_output_tokens,
            "tool_choice": "auto",
            "tools": [],
            "audio": {
                "input": {
                    "format": AUDIO_FORMAT,
                    "transcription": self.transcription,
                    "turn_detection": self.turn_detection,
                    "noise_reduction": None,
                },
                "output": {"format": AUDIO_FORMAT, "voice": self.voice or "default", "speed": 1.0},
            },
        }


def avatar_named(session: Any) -> str | None:
    """The avatar a session config names (`session.avatar`, this platform's own field)."""
    avatar = session.get("avatar") if isinstance(session, dict) else None
    return avatar if isinstance(avatar, str) and avatar else None


def configured(config: SessionConfig, session: Any, avatar: dict[str, Any] | None = None) -> SessionConfig:
    """A copy of `config` with `avatar`'s persona (instructions and voice), then the fields
    `session` sets, which win over the avatar's; `config` itself never changes (an error leaves
    the session as it was)."""
    changed = dataclasses.replace(config)
    if avatar is not None:
        changed.avatar = avatar["id"]
        changed.instructions = avatar.get("instructions") or changed.instructions
        changed.voice = avatar.get("voice") or changed.voice
    if session is not None:
        changed.update(session)
    return changed


async def find_avatar(platform: Platform, tenant: str, avatar_id: str) -> dict[str, Any]:
    """The tenant's avatar (a `PlatformError` 404 for another tenant's, or none)."""
    avatar: dict[str, Any] = await asyncio.to_thread(avatars.get, platform, tenant, avatar_id)
    return avatar


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise EventError("invalid_value", f"`{param}` must be a string", param)
    return value


def modalities(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or value not in (["audio"], ["text"], ["text", "audio"], ["audio", "text"]):
        raise EventError("invalid_value", f'`{param}` must be ["audio"] or ["text"]', param)
    return ["text"] if value == ["text"] else ["audio"]


def max_tokens(value: Any, param: str) -> int | str:
    if value == "inf" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 4096):
        return value
    raise EventError("invalid_value", f'`{param}` must be "inf" or an integer from 1 to 4096', param)


def turn_detection(value: Any) -> dict[str, Any] | None:
    param = "session.audio.input.turn_detection"
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") != "server_vad":
        raise EventError("unsupported_value", "turn detection is `server_vad` or null", param)
    merged = {**DEFAULT_TURN_DETECTION, **{k: v for k, v in value.items() if v is not None}}
    if not 0 < float(merged["threshold"]) < 1 or not 0 <= int(merged["silence_duration_ms"]) <= 10_000:
        raise EventError("invalid_value", "threshold is in (0, 1) and silence_duration_ms in [0, 10000]", param)
    return merged


def item_text(item: dict[str, Any]) -> str:
    """The words of a conversation item: its text parts and audio transcripts."""
    parts = [part.get("text") or part.get("transcript") or "" for part in item.get("content", [])]
    return " ".join(p for p in parts if p).strip()


def split_sentences(text: str, first: bool = False) -> tuple[list[str], str]:
    """The whole sentences at the start of `text`, and the rest (a sentence still being written).

    `first`: nothing has been spoken yet, so a clause (to a comma) or the first few words go
    ahead on their own: the first audio leaves sooner, at a small cost in prosody."""
    sentences: list[str] = []
    start = 0
    for match in SENTENCE_END.finditer(text):
        sentence = text[start : match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    rest = text[start:]
    while len(rest) > MAX_SENTENCE_CHARS and " " in rest[1:MAX_SENTENCE_CHARS]:
        cut = rest.rindex(" ", 1, MAX_SENTENCE_CHARS)
        sentences.append(rest[:cut].strip())
        rest = rest[cut + 1 :]
    if first and not sentences:
        for clause in FIRST_CLAUSE.finditer(rest):
            if len(rest[: clause.start()].split()) >= FIRST_CHUNK_MIN_WORDS:
                return [rest[: clause.end()].strip()], rest[clause.end() :]
        complete = rest[: rest.rfind(" ")].split() if " " in rest.strip() else []  # the last word may go on
        if len(complete) >= FIRST_CHUNK_WORDS:
            return [" ".join(complete)], rest[rest.rfind(" ") + 1 :]
    return sentences, rest


@dataclass
class Response:
    """The response being generated: what has been sent of it, for `response.done` after a cancel."""

    id: str
    item_id: str
    audio: bool
    text: str = ""  # all the text generated
    heard: str = ""  # the text whose audio was sent (audio responses)
    usage: dict[str, int] = field(default_factory=lambda: {"input_tokens": 0, "output_tokens": 0})
    task: asyncio.Task[None] | None = None
    announced: bool = False  # `response.created` was sent
    # A draft (prepared during the user's pause) holds its events until the turn is confirmed;
    # `None` once they go out as they come.
    held: list[dict[str, Any]] | None = None
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    confirmed: bool = True  # False: a draft the user may still talk over (then it vanishes)


@dataclass
class Draft:
    """A turn prepared while the user is silent but the VAD's silence window is not over: the
    transcription of the speech so far and, with `create_response`, the response to it, its
    events held. When the silence lasts (a `stop` at `end_ms`) the draft becomes the turn;
    when the user goes on, or anything changes the conversation first, it is dropped."""

    item_id: str
    start_ms: int
    end_ms: int
    items: int  # the conversation's length it was made for
    transcription: asyncio.Task[TranscribeResult]
    response: Response | None = None

    def cancel(self) -> None:
        self.transcription.cancel()
        if self.response is not None and self.response.task is not None:
            self.response.task.cancel()


class RealtimeSession:
    """A realtime conversation with one client; `handle` each client event, `close` at the end."""

    def __init__(
        self,
        platform: Platform,
        principal: Principal,
        send: Send,
        model: str,
        config: SessionConfig,
        audio_sink: AudioSink | None = None,
    ) -> None:
        self.platform = platform
        self.audio_sink = audio_sink
        self.principal = principal
        self._send = send
        self.model = model
        self.config = config
        self.id = new_id("sess")
        self.items: list[dict[str, Any]] = []
        self._buffer = bytearray()  # pcm16 at 24 kHz, not yet committed
        self._buffer_start_ms = 0  # where the buffer starts on the session's audio timeline
        self._vad: Vad | None = None
        self._speech: tuple[str, int] | None = None  # (item id, start ms) while the user speaks
        self._transcriptions: list[asyncio.Task[None]] = []
        self.response: Response | None = None
        self._draft: Draft | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---------------------------------------------------------------- events out

    async def send(self, event_type: str, **fields: Any) -> None:
        await self._send({"type": event_type, "event_id": new_id("event"), **fields})

    async def error(self, exc: EventError, event_id: str | None = None) -> None:
        await self.send("error", error=error_body(exc, event_id))

    async def start(self, greeting: str | None = None) -> None:
        await self.send("session.created", session=self.config.body(self.id, self.model))
        if greeting:
            await self._greet(greeting)

    async def _greet(self, greeting: str) -> None:
        await self._add_item(
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": greeting}]}
        )

    async def close(self) -> None:
        """Stop what still runs (the client left): a response, transcriptions."""
        self._drop_draft()
        for task in [*self._tasks, *self._transcriptions]:
            task.cancel()
        if self.response and self.response.task:
            self.response.task.cancel()

    # ---------------------------------------------------------------- events in

    async def handle(self, raw: str) -> None:
        """One client event; a bad one answers an `error` event and the session goes on."""
        event_id: str | None = None
        try:
            try:
                event = json.loads(raw)
            except (json.JSONDecodeError, TypeError):
                raise EventError("invalid_json", "the event is not valid JSON") from None
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                raise EventError("invalid_event", "an event is a JSON object with a string `type`", "type")
            event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
            kind = event["type"]
            if kind not in CLIENT_EVENTS:
                raise EventError("unknown_event", f"unknown client event type {kind!r}", "type")
            if kind != "input_audio_buffer.append":  # it may change what a draft was made for
                self._drop_draft()
            await getattr(self, "on_" + kind.replace(".", "_"))(event)
        except EventError as exc:
            await self.error(exc, event_id)
        except Exception:  # a bug: reported to the client and logged, and the session goes on
            log.exception("realtime event failed", extra={"tenant": self.principal.tenant})
            await self.error(EventError("server_error", "the event failed", kind="server_error"), event_id)

    async def on_session_update(self, event: dict[str, Any]) -> None:
        session = event.get("session")
        avatar = None
        if (avatar_id := avatar_named(session)) and avatar_id != self.config.avatar:
            try:
                avatar = await find_avatar(self.platform, self.principal.tenant, avatar_id)
            except PlatformError as exc:
                raise EventError(exc.code, exc.message, "session.avatar") from None
        before = self.config.turn_detection
        self.config = configured(self.config, session, avatar)
        if self.config.turn_detection != before:  # the VAD is made again with the new threshold and silence
            self._vad = None
            if self.config.turn_detection is None:
                self._speech = None
        await self.send("session.updated", session=self.config.body(self.id, self.model))
        if avatar and avatar.get("greeting") and not self.items:  # the avatar speaks first, as at connect
            await self._greet(avatar["greeting"])

    async def on_input_audio_buffer_append(self, event: dict[str, Any]) -> None:
        audio = event.get("audio")
        try:
            pcm = base64.b64decode(audio, validate=True) if isinstance(audio, str) else None
        except (binascii.Error, ValueError):
            pcm = None
        if pcm is None:
            raise EventError("invalid_value", "`audio` must be base64 of pcm16 at 24 kHz", "audio")
        await self.append_audio(pcm)

    async def append_audio(self, pcm: bytes) -> None:
        """The user's audio (pcm16, 24 kHz), from an append event or a WebRTC track: buffered, and
        heard by the VAD when turn detection is on."""
        td = self.config.turn_detection
        if td is not None and self._vad is None:  # it counts time from where the buffer ends now
            threshold, silence_ms = float(td["threshold"]), int(td["silence_duration_ms"])
            self._vad = await asyncio.to_thread(Vad, threshold, silence_ms, self._end_ms(), PREPARE_AFTER_MS)
        self._buffer += pcm
        if td is None or self._vad is None:
            return
        vad = self._vad
        chunk_16k = resample(pcm, WIRE_RATE, VAD_RATE)
        for vad_event in await asyncio.to_thread(vad.feed, chunk_16k):
            if vad_event.kind == "start":
                await self._speech_started(vad_event.ms)
            elif self._speech is None:
                continue
            elif vad_event.kind == "pause":
                self._prepare(vad_event.ms)
            elif vad_event.kind == "resume":
                self._drop_draft()
            else:
                await self._speech_stopped(vad_event.ms)
        if self._speech is None:
            self._trim(self._end_ms() - IDLE_BUFFER_MS)

    async def on_input_audio_buffer_commit(self, event: dict[str, Any]) -> None:
        if duration_ms(bytes(self._buffer)) < MIN_COMMIT_MS:
            raise EventError(
                "input_audio_buffer_commit_empty", f"the buffer holds less than {MIN_COMMIT_MS} ms of audio"
            )
        item_id = self._speech[0] if self._speech else new_id("item")
        self._speech = None
        await self._commit(item_id, self._buffer_start_ms, self._end_ms())

    async def on_input_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        self._trim(self._end_ms())
        self._speech = None
        if self._vad is not None:
            self._vad.reset()
        await self.send("input_audio_buffer.cleared")

    async def on_conversation_item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type") != "message":
            raise EventError("invalid_value", "only `message` items are served", "item.type")
        role = item.get("role")
        if role not in ("user", "assistant", "system"):
            raise EventError("invalid_value", "`role` is user, assistant or system", "item.role")
        content = item.get("content")
        kinds = {"user": "input_text", "system": "input_text", "assistant": "output_text"}
        if not isinstance(content, list) or not content:
            raise EventError("invalid_value", "`content` is a non-empty list", "item.content")
        for index, part in enumerate(content):
            if (
                not isinstance(part, dict)
                or part.get("type") not in (kinds[role], "text")
                or not isinstance(part.get("text"), str)
            ):
                raise EventError(
                    "invalid_value", f"a {role} message's content is {kinds[role]} parts", f"item.content[{index}]"
                )
        clean = {
            "id": item.get("id") if isinstance(item.get("id"), str) else new_id("item"),
            "type": "message",
            "role": role,
            "content": [{"type": kinds[role], "text": part["text"]} for part in content],
        }
        await self._add_item(clean)

    async def on_response_create(self, event: dict[str, Any]) -> None:
        if self.response is not None:
            raise EventError("conversation_already_has_active_response", "a response is in progress: cancel it or wait")
        options = event.get("response") or {}
        if not isinstance(options, dict):
            raise EventError("invalid_value", "`response` must be an object", "response")
        instructions = _text(options["instructions"], "response.instructions") if "instructions" in options else None
        output = (
            modalities(options["output_modalities"], "response.output_modalities")
            if "output_modalities" in options
            else self.config.output_modalities
        )
        limit = (
            max_tokens(options["max_output_tokens"], "response.max_output_tokens")
            if "max_output_tokens" in options
            else self.config.max_output_tokens
        )
        self._start_response(instructions, output, limit)

    async def on_response_cancel(self, event: dict[str, Any]) -> None:
        if self.response is None or self.response.task is None:
            raise EventError("response_cancel_not_active", "no response is in progress")
        self.response.task.cancel()

    # ---------------------------------------------------------------- input audio

    def _end_ms(self) -> int:
        return self._buffer_start_ms + duration_ms(bytes(self._buffer))

    def _audio(self, start_ms: int, end_ms: int) -> bytes:
        """The buffered audio from `start_ms` to `end_ms` on the session's timeline."""
        skip = max(0, start_ms - self._buffer_start_ms) * WIRE_RATE // 1000 * 2
        take = max(0, end_ms - max(start_ms, self._buffer_start_ms)) * WIRE_RATE // 1000 * 2
        return bytes(self._buffer[skip : skip + take])

    def _trim(self, until_ms: int) -> None:
        """Drop the buffered audio before `until_ms` on the session's timeline."""
        drop_ms = min(max(0, until_ms - self._buffer_start_ms), duration_ms(bytes(self._buffer)))
        drop_bytes = drop_ms * WIRE_RATE // 1000 * 2
        del self._buffer[:drop_bytes]
        self._buffer_start_ms += drop_ms

    async def _speech_started(self, ms: int) -> None:
        assert self.config.turn_detection is not None
        start = max(self._buffer_start_ms, ms - int(self.config.turn_detection["prefix_padding_ms"]))
        self._speech = (new_id("item"), start)
        await self.send("input_audio_buffer.speech_started", audio_start_ms=start, item_id=self._speech[0])
        if self.response is not None and self.response.task and self.config.turn_detection["interrupt_response"]:
            self.response.task.cancel()  # barge-in

    def _prepare(self, ms: int) -> None:
        """The user fell silent at `ms`: transcribe what they said and (with `create_response`)
        start the answer now, holding its events, while the VAD waits out the silence window.
        Only when nothing else runs: the answer must read the conversation as it will be."""
        self._drop_draft()
        self._transcriptions = [t for t in self._transcriptions if not t.done()]
        td = self.config.turn_detection
        if td is None or self._speech is None or self.response is not None or self._transcriptions:
            return
        item_id, start = self._speech
        pcm = self._audio(start, ms)
        transcription = asyncio.create_task(self._stt(pcm))
        draft = Draft(item_id, start, ms, len(self.items), transcription)
        if td["create_response"]:
            draft.response = self._new_response(
                None, self.config.output_modalities, self.config.max_output_tokens, draft=draft
            )
        self._draft = draft

    def _drop_draft(self) -> None:
        """Forget the draft: its work is cancelled, and none of its events were sent."""
        if self._draft is not None:
            self._draft.cancel()
            self._draft = None

    async def _speech_stopped(self, ms: int) -> None:
        assert self._speech is not None and self.config.turn_detection is not None
        item_id, start = self._speech
        self._speech = None
        draft, self._draft = self._draft, None
        if draft is not None and (draft.end_ms, draft.start_ms, draft.items) != (ms, start, len(self.items)):
            draft.cancel()  # made for other audio, or another conversation
            draft = None
        await self.send("input_audio_buffer.speech_stopped", audio_end_ms=ms, item_id=item_id)
        transcribed = await self._commit(item_id, start, ms, draft.transcription if draft else None)
        if not self.config.turn_detection["create_response"]:
            return
        if self.response is not None and self.response.task:
            self.response.task.cancel()
            await asyncio.gather(self.response.task, return_exceptions=True)
        prepared = draft.response if draft is not None else None
        if prepared is not None and prepared.task is not None and not prepared.task.done():  # (done: it failed)
            # The prepared answer is this turn's: its events go out once the transcription's have.
            response = prepared
            response.confirmed = True
            self.response = response
            opener = asyncio.create_task(self._open_after(response, transcribed))
            self._tasks.add(opener)
            opener.add_done_callback(self._tasks.discard)
        else:
            self._start_response(None, self.config.output_modalities, self.config.max_output_tokens)

    async def _open_after(self, response: Response, transcribed: asyncio.Task[None]) -> None:
        await asyncio.wait([transcribed])
        await self._open(response)

    async def _commit(
        self, item_id: str, start_ms: int, end_ms: int, transcription: asyncio.Task[TranscribeResult] | None = None
    ) -> asyncio.Task[None]:
        """The buffered audio from `start_ms` to `end_ms` becomes a user item, transcribed by `stt`
        (or by `transcription`, already under way); the task that reports the transcription."""
        pcm = self._audio(start_ms, end_ms)
        self._trim(end_ms)
        previous = self.items[-1]["id"] if self.items else None
        await self.send("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous)
        item = {
            "id": item_id,
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self.items.append(item)
        await self.send("conversation.item.added", item=item, previous_item_id=previous)
        task = asyncio.create_task(self._transcribe(item, transcription or asyncio.create_task(self._stt(pcm))))
        self._transcriptions.append(task)
        return task

    async def _stt(self, pcm: bytes) -> TranscribeResult:
        language = (self.config.transcription or {}).get("language")
        audio = wav_of(resample(pcm, WIRE_RATE, VAD_RATE), VAD_RATE)
        request = TranscribeRequest(audio=audio, language=language, window_s=STT_WINDOW_S)
        result: TranscribeResult = await self.platform.call("stt", request, self.principal, PRIORITY)
        return result

    async def _transcribe(self, item: dict[str, Any], transcription: asyncio.Task[TranscribeResult]) -> None:
        """Report the user item's transcription (`transcription` is the `stt` call's task)."""
        try:
            result = await transcription
        except Exception as exc:
            item["content"][0]["transcript"] = ""
            error = model_error(exc)
            await self.send(
                "conversation.item.input_audio_transcription.failed",
                item_id=item["id"],
                content_index=0,
                error={"type": error.kind, "code": error.code, "message": error.message, "param": None},
            )
            return
        transcript = result.text.strip()
        item["content"][0]["transcript"] = transcript
        await self.send(
            "conversation.item.input_audio_transcription.completed",
            item_id=item["id"],
            content_index=0,
            transcript=transcript,
            usage={"type": "duration", "seconds": result.audio_seconds},
        )
        await self.send("conversation.item.done", item=item)

    async def _add_item(self, item: dict[str, Any]) -> None:
        previous = self.items[-1]["id"] if self.items else None
        item = {"id": new_id("item"), "status": "completed", **item}
        self.items.append(item)
        await self.send("conversation.item.added", item=item, previous_item_id=previous)
        await self.send("conversation.item.done", item=item, previous_item_id=previous)

    # ---------------------------------------------------------------- responses

    def _start_response(self, instructions: str | None, output: list[str], limit: int | str) -> None:
        self.response = self._new_response(instructions, output, limit)

    def _new_response(
        self, instructions: str | None, output: list[str], limit: int | str, draft: Draft | None = None
    ) -> Response:
        """A response, generating from now on; a `draft`'s holds its events until `_open`."""
        response = Response(new_id("resp"), new_id("item"), audio=output == ["audio"])
        if draft is not None:
            response.held, response.confirmed = [], False
        else:
            response.opened.set()
        response.task = asyncio.create_task(self._run_response(response, instructions, limit, draft))
        return response

    async def _emit(self, owner: Response, event_type: str, /, **fields: Any) -> None:
        """A response's event: sent, or held while the response is an unconfirmed draft."""
        if owner.held is None:
            await self.send(event_type, **fields)
        else:
            owner.held.append({"type": event_type, "event_id": new_id("event"), **fields})

    async def _open(self, response: Response) -> None:
        """Send what a draft response held, in order, and let the rest go out as it comes."""
        while response.held:  # the response may add events while the first ones are sent
            await self._send(response.held.pop(0))
        response.held = None
        response.opened.set()

    def messages(self, instructions: str | None, heard: str | None = None) -> list[ChatMessage]:
        """The conversation as the `llm` takes it: the instructions, then the latest turns (a long
        session must not outgrow the model's context), and `heard` (a draft's user turn)."""
        messages = [ChatMessage(role="system", content=instructions or self.config.instructions)]
        for item in self.items[-MAX_CONTEXT_ITEMS:]:
            text = item_text(item)
            if text:
                messages.append(ChatMessage(role=item["role"], content=text))
        if heard:
            messages.append(ChatMessage(role="user", content=heard))
        return messages

    def _response_body(self, response: Response, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        usage = response.usage
        return {
            "id": response.id,
            "object": "realtime.response",
            "status": status,
            "status_details": None if status in ("completed", "in_progress") else {"type": status},
            "conversation_id": self.id,
            "output": output,
            "output_modalities": ["audio"] if response.audio else ["text"],
            "audio": {"output": {"format": AUDIO_FORMAT, "voice": self.config.voice or "default"}},
            "max_output_tokens": self.config.max_output_tokens,
            "metadata": None,
            "usage": {
                "input_tokens": usage["input_tokens"],
                "output_tokens": usage["output_tokens"],
                "total_tokens": usage["input_tokens"] + usage["output_tokens"],
                "input_token_details": {"text_tokens": usage["input_tokens"], "audio_tokens": 0, "cached_tokens": 0},
                "output_token_details": {"text_tokens": usage["output_tokens"], "audio_tokens": 0},
            },
        }

    def _assistant_item(self, response: Response, status: str) -> dict[str, Any]:
        if response.audio:
            # A cancelled answer keeps only what was spoken.
            transcript = response.text if status == "completed" else response.heard
            part: dict[str, Any] = {"type": "output_audio", "transcript": transcript}
        else:
            part = {"type": "output_text", "text": response.text}
        return {
            "id": response.item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": [part],
        }

    async def _run_response(
        self, response: Response, instructions: str | None, limit: int | str, draft: Draft | None = None
    ) -> None:
        """Generate a response; a cancel (barge-in, `response.cancel`) ends it `cancelled`, with
        the assistant's item holding only what was sent (for audio, what was spoken). A draft
        cancelled before it was confirmed leaves no trace."""
        status = "completed"
        try:
            await self._generate(response, instructions, limit, draft)
            await response.opened.wait()  # a draft's answer follows its user item in the conversation
        except asyncio.CancelledError:
            if not response.confirmed:
                raise
            status = "cancelled"
            if self.audio_sink is not None:
                self.audio_sink.clear()  # what is not yet played is dropped
        except Exception as exc:
            if not response.confirmed:  # the turn is not the user's yet: it will be answered afresh
                return
            status = "failed"
            await self._emit(response, "error", error=error_body(model_error(exc)))
        finally:
            if self.response is response:
                self.response = None
        await response.opened.wait()
        item = self._assistant_item(response, "completed" if status == "completed" else "incomplete")
        if item_text(item):
            self.items.append(item)
        if not response.announced:  # cancelled while the user's words were still being transcribed
            await self.send("response.created", response=self._response_body(response, "in_progress", []))
        await self.send("response.done", response=self._response_body(response, status, [item]))

    async def _generate(
        self, response: Response, instructions: str | None, limit: int | str, draft: Draft | None
    ) -> None:
        heard = None
        if draft is not None:  # the draft's own user turn, not yet in the conversation
            heard = (await draft.transcription).text.strip()
            previous: str | None = draft.item_id
        else:
            if self._transcriptions:  # the user's words first (`wait`: a cancel here leaves them running)
                await asyncio.wait(self._transcriptions)
                self._transcriptions = [t for t in self._transcriptions if not t.done()]
            previous = self.items[-1]["id"] if self.items else None
        response.announced = True
        emit = functools.partial(self._emit, response)
        await emit("response.created", response=self._response_body(response, "in_progress", []))
        common = {"response_id": response.id, "item_id": response.item_id, "output_index": 0}
        item = self._assistant_item(response, "in_progress")
        item["content"] = []
        await emit("response.output_item.added", response_id=response.id, output_index=0, item=item)
        await emit("conversation.item.added", item=item, previous_item_id=previous)
        part: dict[str, Any] = {"type": "audio", "transcript": ""} if response.audio else {"type": "text", "text": ""}
        await emit("response.content_part.added", **common, content_index=0, part=part)

        max_tokens = DEFAULT_MAX_OUTPUT_TOKENS if limit == "inf" else int(limit)
        max_tokens = min(max_tokens, self.platform.settings.llm_max_tokens)
        request = LLMRequest(messages=self.messages(instructions, heard), max_tokens=max_tokens)
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        speaker = asyncio.create_task(self._speak(response, sentences)) if response.audio else None
        self._tasks.update({speaker} if speaker else set())
        pending = ""
        spoken_any = False
        delta_event = "response.output_audio_transcript.delta" if response.audio else "response.output_text.delta"
        try:
            async for chunk in self.platform.stream("llm", request, self.principal, PRIORITY):
                if chunk.finish_reason is not None:
                    response.usage = {
                        "input_tokens": chunk.prompt_tokens or 0,
                        "output_tokens": chunk.completion_tokens or 0,
                    }
                if not chunk.text:
                    continue
                response.text += chunk.text
                await emit(delta_event, **common, content_index=0, delta=chunk.text)
                if speaker is not None:
                    ready, pending = split_sentences(pending + chunk.text, first=not spoken_any)
                    spoken_any = spoken_any or bool(ready)
                    for sentence in ready:
                        sentences.put_nowait(sentence)
            if speaker is not None:
                if pending.strip():
                    sentences.put_nowait(pending.strip())
                sentences.put_nowait(None)
                await speaker
        finally:
            if speaker is not None:
                speaker.cancel()
                self._tasks.discard(speaker)
        response.text = response.text.strip()
        if response.audio:
            await emit("response.output_audio.done", **common, content_index=0)
            await emit("response.output_audio_transcript.done", **common, content_index=0, transcript=response.text)
            part = {"type": "audio", "transcript": response.text}
        else:
            await emit("response.output_text.done", **common, content_index=0, text=response.text)
            part = {"type": "text", "text": response.text}
        await emit("response.content_part.done", **common, content_index=0, part=part)
        done = self._assistant_item(response, "completed")
        await emit("response.output_item.done", response_id=response.id, output_index=0, item=done)
        await emit("conversation.item.done", item=done)

    async def _speak(self, response: Response, sentences: asyncio.Queue[str | None]) -> None:
        """`tts` for each sentence as it comes, its audio sent as pcm16 24 kHz deltas."""
        common = {"response_id": response.id, "item_id": response.item_id, "output_index": 0, "content_index": 0}
        step = AUDIO_DELTA_MS * WIRE_RATE // 1000 * 2
        while (sentence := await sentences.get()) is not None:
            request = SpeechRequest(text=sentence, voice=self.config.voice)
            result = await self.platform.call("tts", request, self.principal, PRIORITY)
            pcm = await asyncio.to_thread(pcm_of, result.wav, WIRE_RATE)
            await response.opened.wait()  # a draft speaks once its turn is confirmed
            if self.audio_sink is not None:  # WebRTC: the audio goes on the call's track
                self.audio_sink.write(pcm)
            else:
                for offset in range(0, len(pcm), step):
                    delta = base64.b64encode(pcm[offset : offset + step]).decode()
                    await self.send("response.output_audio.delta", **common, delta=delta)
            response.heard = f"{response.heard} {sentence}".strip()


def error_body(exc: EventError, event_id: str | None = None) -> dict[str, Any]:
    """The `error` of an `error` event."""
    return {"type": exc.kind, "code": exc.code, "message": exc.message, "param": exc.param, "event_id": event_id}


def model_error(exc: Exception) -> EventError:
    """A model call's failure as an `error` event (its stable code, as the HTTP routes answer it)."""
    error = unwrap(exc)
    if error is None:
        log.exception("realtime model call failed", exc_info=exc)
        return EventError("server_error", "the model call failed", kind="server_error")
    return EventError(
        error.code, error.message, kind="server_error" if error.status >= 500 else "invalid_request_error"
    )
