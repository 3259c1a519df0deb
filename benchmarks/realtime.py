"""Realtime voice: voice-to-voice latency over `/v1/realtime`, against the same three models called
one after another without streaming, and under another tenant's flood of `llm` tasks.

- v2v: a new session per turn; a spoken question (the platform's own tts) goes at real-time pace in
  100 ms chunks, then silence; the latency is from the end of the question's audio to the first
  `response.output_audio.delta` (it includes the VAD's `silence_duration_ms`, `--silence-ms`).
  The table beside it says where the time goes: when each of the turn's events arrived, counted
  from the end of the question (medians).
- sequential: the same question through `/v1/audio/transcriptions`, `/v1/chat/completions` and
  `/v1/audio/speech`, one after another, each whole: the first audio byte comes with the last answer.
- under flood: 4 sessions (4 tenants) talk at once, first alone, then while another tenant floods
  `llm` with a batch (`/v1/batches`, `--flood` chat completions, each line a `low`-priority task
  through the fair scheduler); the ratio is the p50 with the flood over the p50 of the same 4
  sessions without it.

    .venv/bin/python benchmarks/realtime.py [--quick] [--turns 20] [--silence-ms 300]

Last line: {"v2v_ms": {"p50": A, "p95": B}, "sequential_ms": {"p50": C}, "ratio": A/C, "under_flood_ratio": R}
(R: the 4 sessions' p50 with the flood over their p50 without it)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import time
from typing import Any

import httpx
from _platform import start_platform, token  # beside this file; sets up the path and env

QUESTION = "What color is the sky on a sunny day?"
RATE = 24_000
CHUNK_S = 0.1
MAX_TOKENS = 32
# The events of a turn whose arrival the breakdown reports, in the order they come.
MILESTONES = (
    "input_audio_buffer.speech_stopped",
    "conversation.item.input_audio_transcription.completed",
    "response.created",
    "response.output_audio_transcript.delta",
    "response.output_audio.delta",
)


def session_config(silence_ms: int) -> dict[str, Any]:
    turn_detection = {"type": "server_vad", "silence_duration_ms": silence_ms}
    return {"type": "realtime", "max_output_tokens": MAX_TOKENS, "audio": {"input": {"turn_detection": turn_detection}}}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def voice_turn(base: str, tenant: str, question: bytes, silence_ms: int) -> dict[str, float]:
    """One session, one spoken turn: when each milestone event came, in ms from the end of the
    question's audio (the last one, the first audio delta, is the voice-to-voice latency)."""
    from websockets.asyncio.client import connect

    url = base.replace("http://", "ws://") + "/v1/realtime?model=llm"
    headers = {"Authorization": f"Bearer {token(tenant)}"}
    step = int(RATE * CHUNK_S) * 2
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": session_config(silence_ms)}))
        spoken_until: list[float] = []
        arrived: dict[str, float] = {}

        async def speak() -> None:
            await asyncio.sleep(0.2)
            for offset in range(0, len(question), step):
                chunk = base64.b64encode(question[offset : offset + step]).decode()
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
                await asyncio.sleep(CHUNK_S)
            spoken_until.append(time.perf_counter())
            silence = base64.b64encode(b"\x00" * step).decode()
            while True:  # the room stays quiet until the answer comes
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": silence}))
                await asyncio.sleep(CHUNK_S)

        speaker = asyncio.create_task(speak())
        try:
            async for message in ws:
                event = json.loads(message)
                if event["type"] in MILESTONES and event["type"] not in arrived:
                    arrived[event["type"]] = (time.perf_counter() - spoken_until[0]) * 1000
                if event["type"] == "response.output_audio.delta":
                    return arrived
                if event["type"] == "error":
                    raise RuntimeError(event["error"])
        finally:
            speaker.cancel()
    raise RuntimeError("the session ended without audio")


def sequential_turn(http: httpx.Client, question_wav: bytes) -> float:
    """The same turn as three whole calls, one after another (ms to the answer's audio); the chat
    has the realtime session's instructions, as the session's `llm` call has."""
    from serve_app.realtime.session import SessionConfig

    started = time.perf_counter()
    heard = http.post(
        "/v1/audio/transcriptions", files={"file": ("q.wav", question_wav, "audio/wav")}, data={"model": "stt"}
    )
    heard.raise_for_status()
    messages = [
        {"role": "system", "content": SessionConfig().instructions},
        {"role": "user", "content": heard.json()["text"]},
    ]
    chat = {"model": "llm", "messages": messages, "max_tokens": MAX_TOKENS}
    answer = http.post("/v1/chat/completions", json=chat)
    answer.raise_for_status()
    text = answer.json()["choices"][0]["message"]["content"] or "Blue."
    http.post("/v1/audio/speech", json={"model": "tts", "input": text, "response_format": "wav"}).raise_for_status()
    return (time.perf_counter() - started) * 1000


async def flood(base: str, lines: int, stop: asyncio.Event) -> int:
    """Another tenant floods `llm` with a batch of `lines` chat completions (each line a `low`-
    priority task) until `stop`, then cancels it; the lines that completed meanwhile."""
    headers = {"Authorization": f"Bearer {token('flooder')}"}
    body = {
        "model": "llm",
        "messages": [{"role": "user", "content": "Write a long story about the sea."}],
        "max_tokens": 64,
    }
    jsonl = "\n".join(
        json.dumps({"custom_id": f"sea-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})
        for i in range(lines)
    )
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        upload = await client.post(
            "/v1/files", files={"file": ("sea.jsonl", jsonl.encode())}, data={"purpose": "batch"}
        )
        upload.raise_for_status()
        batch = {"input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        created = await client.post("/v1/batches", json=batch)
        created.raise_for_status()
        batch_id = created.json()["id"]
        await stop.wait()
        done = (await client.get(f"/v1/batches/{batch_id}")).json()["request_counts"]["completed"]
        (await client.post(f"/v1/batches/{batch_id}/cancel")).raise_for_status()
    return int(done)


async def busy(base: str, service: str = "llm") -> bool:
    """Whether `service` has calls in flight (the scheduler's own view)."""
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token('ops', 'admin')}"}) as client:
        state = (await client.get("/v1/admin/scheduler")).json()["services"][service]
    return bool(state["in_flight"])


async def together(
    base: str, question: bytes, sessions: int, turns: int, lines: int, silence_ms: int
) -> tuple[list[dict[str, float]], int]:
    """`sessions` sessions of their own tenants talking at once, under a flood of `lines` (0: none);
    their turns' milestones, and the flood's lines completed meanwhile."""
    stop = asyncio.Event()
    flooder = asyncio.create_task(flood(base, lines, stop)) if lines else None
    if flooder is not None:
        while not await busy(base):  # the batch's lines hold the engine before anyone talks
            await asyncio.sleep(0.2)

    async def talker(index: int) -> list[dict[str, float]]:
        return [await voice_turn(base, f"talker-{index}", question, silence_ms) for _ in range(turns)]

    results = await asyncio.gather(*(talker(i) for i in range(sessions)))
    stop.set()
    completed = await flooder if flooder is not None else 0
    return [turn for result in results for turn in result], completed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--flood", type=int, default=200, help="chat completions in the other tenant's batch")
    parser.add_argument("--silence-ms", type=int, default=300, help="the sessions' VAD silence_duration_ms")
    parser.add_argument("--quick", action="store_true", help="5 turns, 2 per session under flood")
    args = parser.parse_args()
    turns = 5 if args.quick else args.turns
    base = start_platform(args.port)
    from serve_app.realtime.audio import pcm_of, resample, wav_of

    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token('bench')}"}, timeout=300) as http:
        speech = http.post("/v1/audio/speech", json={"model": "tts", "input": QUESTION, "response_format": "wav"})
        speech.raise_for_status()
        question = pcm_of(speech.content, RATE)
        question_wav = wav_of(resample(question, RATE, 16_000), 16_000)
        asyncio.run(voice_turn(base, "bench", question, args.silence_ms))  # warm-up: every model loaded
        sequential_turn(http, question_wav)
        turns_of = [asyncio.run(voice_turn(base, "bench", question, args.silence_ms)) for _ in range(turns)]
        sequential = [sequential_turn(http, question_wav) for _ in range(turns)]
    v2v = [turn["response.output_audio.delta"] for turn in turns_of]
    per_session = 2 if args.quick else max(1, turns // args.sessions)
    crowd_turns, _ = asyncio.run(together(base, question, args.sessions, per_session, 0, args.silence_ms))
    flood_args = (base, question, args.sessions, per_session, args.flood, args.silence_ms)
    flooded_turns, flood_done = asyncio.run(together(*flood_args))
    crowd = [turn["response.output_audio.delta"] for turn in crowd_turns]
    flooded = [turn["response.output_audio.delta"] for turn in flooded_turns]

    p50, p95, seq = percentile(v2v, 0.5), percentile(v2v, 0.95), percentile(sequential, 0.5)
    crowd_p50, flood_p50 = percentile(crowd, 0.5), percentile(flooded, 0.5)
    print("where a realtime turn's time goes (ms after the end of the question's audio, p50):")
    print(f"  {'':<56}{'alone':>8}{f'{args.sessions} at once':>10}{'flood':>8}")
    for milestone in MILESTONES:
        row = [percentile([t[milestone] for t in phase], 0.5) for phase in (turns_of, crowd_turns, flooded_turns)]
        print(f"  {milestone:<56}{row[0]:>8.0f}{row[1]:>10.0f}{row[2]:>8.0f}")
    print()
    print(f"{'measure':<34}{'p50 ms':>10}{'p95 ms':>10}{'n':>5}")
    print(f"{'realtime, voice to voice':<34}{p50:>10.0f}{p95:>10.0f}{len(v2v):>5}")
    print(f"{'sequential stt → llm → tts':<34}{seq:>10.0f}{percentile(sequential, 0.95):>10.0f}{len(sequential):>5}")
    for name, values in (
        (f"{args.sessions} sessions at once", crowd),
        (f"{args.sessions} sessions, llm batch flood", flooded),
    ):
        print(f"{name:<34}{percentile(values, 0.5):>10.0f}{percentile(values, 0.95):>10.0f}{len(values):>5}")
    print(f"(the flood's batch completed {flood_done} of its {args.flood} lines meanwhile)")
    result: dict[str, Any] = {
        "v2v_ms": {"p50": round(p50), "p95": round(p95)},
        "sequential_ms": {"p50": round(seq)},
        "ratio": round(p50 / seq, 3),
        "under_flood_ratio": round(flood_p50 / crowd_p50, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
