"""Which backend classes each modality has, by the name the config uses.

Classes are named by import path and imported only when a replica builds them, so the ingress and
the tests of one modality never import another modality's engines (torch, llama.cpp, cloud SDKs).
"""

from __future__ import annotations

import importlib
from typing import Any

from deployments.types import Backend

BACKENDS: dict[str, dict[str, str]] = {
    "llm": {
        "llama_cpp": "deployments.llm:LlamaCppBackend",
        "vllm": "deployments.llm:VllmBackend",
        "gemini": "deployments.gemini:GeminiTextBackend",
    },
    "stt": {
        "faster_whisper": "deployments.stt:FasterWhisperBackend",
        "google_speech": "deployments.stt:GoogleSpeechBackend",
    },
    "tts": {
        "piper": "deployments.tts:PiperBackend",
        "google_tts": "deployments.tts:GoogleTTSBackend",
    },
    "pic2text": {
        "blip": "deployments.pic2text:BlipBackend",
        "tiny_random": "deployments.pic2text:TinyRandomBlipBackend",
        "gemini": "deployments.gemini:GeminiCaptionBackend",
    },
    "text2pic": {
        "stable_diffusion": "deployments.text2pic:StableDiffusionBackend",
        "tiny_random": "deployments.text2pic:TinyRandomDiffusionBackend",
        "gemini": "deployments.gemini:GeminiImageBackend",
    },
    "embed": {
        "minilm": "deployments.embed:MiniLMBackend",
    },
}


def backend_names(service: str) -> list[str]:
    return list(BACKENDS[service])


def build_backend(service: str, name: str, options: dict[str, Any] | None = None) -> Backend:
    """An unloaded backend of `service` called `name`, constructed with its config options."""
    try:
        path = BACKENDS[service][name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r} for service {service!r}; known: {backend_names(service)}") from None
    module_name, class_name = path.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**(options or {}))
