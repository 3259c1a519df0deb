"""The platform's one settings object, read from the environment and the Serve app's args.

Nothing else in the project reads `os.environ`: the app builder makes a `Settings`, and every
deployment gets the part it needs as its constructor arguments.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deployments.registry import backend_names
from deployments.types import SERVICES

# The CPU defaults: what runs on a laptop with no network. The image modalities default to the
# hub models; `LABUBU_IMAGE_BACKENDS=tiny-random` selects the random-weight test fixtures instead.
DEFAULT_SERVICES: dict[str, dict[str, Any]] = {
    "llm": {"backends": [{"name": "llama_cpp"}], "concurrency": 1, "timeout_s": 300},
    "stt": {"backends": [{"name": "faster_whisper"}], "concurrency": 1, "timeout_s": 300},
    "tts": {"backends": [{"name": "piper"}], "concurrency": 1, "timeout_s": 300},
    "pic2text": {"backends": [{"name": "blip"}], "concurrency": 1, "timeout_s": 300},
    "text2pic": {"backends": [{"name": "stable_diffusion"}], "concurrency": 1, "timeout_s": 600},
    "embed": {"backends": [{"name": "minilm"}], "concurrency": 1, "timeout_s": 120},
}
IMAGE_SERVICES = ("pic2text", "text2pic")
IMAGE_BACKEND_MODES = ("hub", "tiny-random")

MiB = 1024 * 1024


class SettingsError(ValueError):
    """A setting that cannot be used; raised at start-up, before anything serves."""


@dataclass
class Settings:
    """Everything configurable, with the defaults that run on one machine."""

    data_dir: str = "~/.labubu"
    jwt_secret: str = ""
    jwt_public_key: str = ""
    # Keys the hashes of API keys (serve_app/keys.py); every ingress replica must have the same.
    api_key_secret: str = ""
    max_body_bytes: int = 25 * MiB
    # A request body must arrive in full within this many seconds of its first byte being asked
    # for (408 otherwise): a client that trickles a body cannot hold a request slot for long.
    body_timeout_s: float = 60.0
    # An event stream (SSE) ends after this long; its client resumes with Last-Event-ID.
    events_max_s: float = 600.0
    llm_max_tokens: int = 4096
    image_backends: str = "hub"
    redis_url: str = ""
    s3_bucket: str = ""
    s3_endpoint_url: str = ""
    max_nodes: int = 64
    # The workflow executor: `retries` per node for retryable errors, `backoff_s`, `backoff_max_s`.
    workflows: dict[str, Any] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(DEFAULT_SERVICES))
    # The fair-share scheduler: `tenant_defaults` (weight, max_concurrency, rate_per_s, burst,
    # max_queued), `lease_s`, `interactive_max_wait_s`, per-service `limits` ({rate_per_s, burst,
    # max_queued}: a cloud provider's quota) and `cost_models` (see scheduler/costs.py).
    scheduler: dict[str, Any] = field(default_factory=dict)
    # Serve options per deployment for programmatic use (tests, benchmarks, `serve.run`); a Serve
    # config file sets them in its own `deployments:` section instead.
    deployment_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def interactive_max_wait_s(self) -> float:
        """How long an interactive call may wait in a service's queue before it is answered 503."""
        return float(self.scheduler.get("interactive_max_wait_s", 30.0))

    def scheduler_config(self) -> dict[str, Any]:
        """The scheduler actor's config. Dispatch limits start at one replica's concurrency and then
        follow the deployments' running replicas (see serve_app/capacity.py)."""
        limits = self.scheduler.get("limits", {})
        return {
            "services": {
                service: {"dispatch_limit": int(section.get("concurrency", 1)), **limits.get(service, {})}
                for service, section in self.services.items()
            },
            "tenant_defaults": self.scheduler.get("tenant_defaults", {}),
            "lease_s": float(self.scheduler.get("lease_s", 30.0)),
        }

    @property
    def jwt_algorithm(self) -> str:
        return "RS256" if self.jwt_public_key else "HS256"

    @property
    def jwt_verify_key(self) -> str:
        return self.jwt_public_key or self.jwt_secret

    @classmethod
    def load(cls, args: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from the app's args (the Serve config), then the environment, which wins."""
        env = os.environ if env is None else env
        args = dict(args or {})
        settings = cls()
        for name in (
            "data_dir",
            "max_body_bytes",
            "body_timeout_s",
            "events_max_s",
            "llm_max_tokens",
            "image_backends",
            "redis_url",
            "s3_bucket",
            "s3_endpoint_url",
            "max_nodes",
        ):
            if name in args:
                setattr(settings, name, type(getattr(settings, name))(args[name]))
        if "scheduler" in args:
            settings.scheduler = dict(args["scheduler"])
        if "workflows" in args:
            settings.workflows = dict(args["workflows"])
        if "deployment_options" in args:
            settings.deployment_options = dict(args["deployment_options"])
        for service, section in (args.get("services") or {}).items():
            if service not in SERVICES:
                raise SettingsError(f"unknown service {service!r} in the app's args; known: {list(SERVICES)}")
            settings.services[service] = {**settings.services[service], **section}

        if "LABUBU_DATA_DIR" in env:
            settings.data_dir = env["LABUBU_DATA_DIR"]
        if "LABUBU_MAX_BODY_BYTES" in env:
            settings.max_body_bytes = int(env["LABUBU_MAX_BODY_BYTES"])
        if "LABUBU_BODY_TIMEOUT_S" in env:
            settings.body_timeout_s = float(env["LABUBU_BODY_TIMEOUT_S"])
        if "LABUBU_EVENTS_MAX_S" in env:
            settings.events_max_s = float(env["LABUBU_EVENTS_MAX_S"])
        if "LABUBU_REDIS_URL" in env:
            settings.redis_url = env["LABUBU_REDIS_URL"]
        if "LABUBU_S3_BUCKET" in env:
            settings.s3_bucket = env["LABUBU_S3_BUCKET"]
        if "LABUBU_S3_ENDPOINT_URL" in env:
            settings.s3_endpoint_url = env["LABUBU_S3_ENDPOINT_URL"]
        if "LABUBU_IMAGE_BACKENDS" in env:
            settings.image_backends = env["LABUBU_IMAGE_BACKENDS"]
        settings.jwt_secret = env.get("LABUBU_JWT_SECRET", "")
        settings.jwt_public_key = env.get("LABUBU_JWT_PUBLIC_KEY", "")
        settings.api_key_secret = env.get("LABUBU_API_KEY_SECRET", "")

        settings._apply_image_backends()
        settings.validate()
        if not settings.jwt_secret and not settings.jwt_public_key:
            settings.jwt_secret = local_secret(settings.data_path, "jwt_secret")
        if not settings.api_key_secret:
            # Derived from the JWT secret, which every replica already shares, so that a cluster
            # needs no second secret; domain-separated, so neither reveals the other.
            settings.api_key_secret = (
                hmac.new(settings.jwt_secret.encode(), b"labubu api keys", hashlib.sha256).hexdigest()
                if settings.jwt_secret
                else local_secret(settings.data_path, "api_key_secret")
            )
        return settings

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    def _apply_image_backends(self) -> None:
        if self.image_backends not in IMAGE_BACKEND_MODES:
            raise SettingsError(
                f"LABUBU_IMAGE_BACKENDS must be one of {IMAGE_BACKEND_MODES}, not {self.image_backends!r}"
            )
        if self.image_backends == "tiny-random":
            for service in IMAGE_SERVICES:
                self.services[service] = {**self.services[service], "backends": [{"name": "tiny_random"}]}

    def validate(self) -> None:
        for service, section in self.services.items():
            names = [spec.get("name") for spec in section.get("backends", [])]
            if not names:
                raise SettingsError(f"service {service!r} has no backends")
            unknown = [n for n in names if n not in backend_names(service)]
            if unknown:
                raise SettingsError(f"unknown backends {unknown} for {service!r}; known: {backend_names(service)}")
        if (
            self.max_body_bytes < 1
            or self.llm_max_tokens < 1
            or not self.body_timeout_s > 0
            or not self.events_max_s > 0
        ):
            raise SettingsError("max_body_bytes, body_timeout_s, events_max_s and llm_max_tokens must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Settings:
        return cls(**data)


def local_secret(data_dir: Path, name: str) -> str:
    """A single-machine secret, made once and kept in the data directory.

    It lets `labubu token` and a locally started platform agree with no configuration; a cluster
    sets `LABUBU_JWT_SECRET` (or a public key and `LABUBU_API_KEY_SECRET`) instead.
    """
    path = data_dir / name
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()
