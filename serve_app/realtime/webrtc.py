"""A realtime session over WebRTC (aiortc): the SDP offer/answer, the microphone's audio track in,
the session's speech as an audio track out (Opus on the wire), and the session's events on the
`oai-events` data channel that the client opens, as in OpenAI's browser examples.

The peer connection lives in the ingress replica that answered the offer, as a WebSocket session
does; ICE gathers host candidates only (no STUN/TURN configured), which is what a browser on the
same network, or a test on one machine, needs.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import logging
import time
from typing import Any

import aioice.ice
import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from serve_app.auth import Principal
from serve_app.platform import Platform
from serve_app.realtime.audio import WIRE_RATE
from serve_app.realtime.session import RealtimeSession, SessionConfig, new_id

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "oai-events"
FRAME_S = 0.02  # 20 ms frames, Opus's usual packet time
# The microphone's audio is handed to the session (and its VAD) in pieces of this length.
APPEND_MS = 100


class PcmTrack(MediaStreamTrack):
    """An audio track that plays the pcm16 (mono, `rate`) written to it, and silence in between,
    paced in real time."""

    kind = "audio"

    def __init__(self, rate: int = WIRE_RATE) -> None:
        super().__init__()
        self.rate = rate
        self._pending = bytearray()
        self._start: float | None = None
        self._timestamp = 0

    def write(self, pcm: bytes) -> None:
        self._pending += pcm

    def clear(self) -> None:
        self._pending.clear()

    @property
    def queued_s(self) -> float:
        return len(self._pending) / 2 / self.rate

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        samples = int(self.rate * FRAME_S)
        if self._start is None:
            self._start = time.time()
        else:
            self._timestamp += samples
            await asyncio.sleep(max(0.0, self._start + self._timestamp / self.rate - time.time()))
        chunk = bytes(self._pending[: samples * 2])
        del self._pending[: samples * 2]
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(chunk.ljust(samples * 2, b"\x00"))
        frame.pts = self._timestamp
        frame.sample_rate = self.rate
        frame.time_base = fractions.Fraction(1, self.rate)
        return frame


def restrict_ice(addresses: tuple[str, ...]) -> None:
    """Offer only `addresses` as host candidates. aioice has no option for it, only this function,
    which every peer connection of the process calls while it gathers."""
    if addresses:
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(addresses)


class Call:
    """One WebRTC call: a peer connection and the realtime session it carries."""

    def __init__(
        self, platform: Platform, principal: Principal, model: str, config: SessionConfig, greeting: str | None
    ) -> None:
        self.id = new_id("rtc")
        self.principal = principal
        self.greeting = greeting
        restrict_ice(platform.settings.realtime_ice_addresses)
        self.pc = RTCPeerConnection()
        self.speech = PcmTrack()
        self.session = RealtimeSession(platform, principal, self.send, model, config, audio_sink=self.speech)
        self._channel: Any = None
        self._early: list[str] = []  # events sent before the channel opened
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()

    async def answer(self, offer_sdp: str) -> str:
        """The SDP answer to the client's offer (ICE candidates included)."""
        pc = self.pc
        pc.on("datachannel", self._on_channel)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        pc.addTrack(self.speech)
        await pc.setLocalDescription(await pc.createAnswer())
        self._spawn(self.session.start(self.greeting))
        return str(pc.localDescription.sdp)

    async def send(self, event: dict[str, Any]) -> None:
        text = json.dumps(event)
        if self._channel is not None and self._channel.readyState == "open":
            self._channel.send(text)
        else:
            self._early.append(text)

    async def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        CALLS.pop(self.id, None)
        await self.session.close()
        for task in self._tasks:
            task.cancel()
        self.speech.stop()
        await self.pc.close()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_channel(self, channel: Any) -> None:
        if channel.label != EVENTS_CHANNEL:
            return
        self._channel = channel
        for text in self._early:
            channel.send(text)
        self._early.clear()
        channel.on("message", lambda message: self._spawn(self.session.handle(message)))

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._listen(track))

    def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._spawn(self.close())

    async def _listen(self, track: MediaStreamTrack) -> None:
        """The microphone's frames (Opus decoded by aiortc) as pcm16 at 24 kHz into the session."""
        resampler = av.AudioResampler(format="s16", layout="mono", rate=WIRE_RATE)
        pending = b""
        step = WIRE_RATE * APPEND_MS // 1000 * 2
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.AudioFrame):
                continue
            for out in resampler.resample(frame):
                pending += out.to_ndarray().tobytes()
            if len(pending) >= step:
                try:
                    await self.session.append_audio(pending)
                except Exception:  # a bug: logged, and the call keeps listening
                    log.exception("realtime call audio failed", extra={"tenant": self.principal.tenant})
                pending = b""


# The calls in progress in this replica, by id: a peer connection must be held to stay alive.
CALLS: dict[str, Call] = {}


async def start_call(
    platform: Platform, principal: Principal, model: str, config: SessionConfig, greeting: str | None, offer: str
) -> tuple[Call, str]:
    """A new call answering `offer` (a `ValueError` for an SDP aiortc cannot take); it is
    forgotten when its connection closes."""
    call = Call(platform, principal, model, config, greeting)
    try:
        answer = await call.answer(offer)
    except Exception:
        await call.close()
        raise
    CALLS[call.id] = call
    return call, answer
