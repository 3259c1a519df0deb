"""The platform's one settings object, read by pydantic-settings from the Serve app's args and the
environment (prefix `LABUBU_`).

Settings take one of two routes, by whether they are secret:

- Settings that are not come from the application's `args` in the Serve config (or
  `build_app(args)`); a `LABUBU_<NAME>` environment variable wins over the arg of the same name.
- Secrets come only from the environment of the process that uses them: `LABUBU_JWT_SECRET`,
  `LABUBU_JWT_PUBLIC_KEY`, `LABUBU_API_KEY_SECRET`, `LABUBU_REDIS_URL` (its URL holds the Redis
  password), and the keys the SDKs read themselves (`GEMINI_API_KEY` or `GOOGLE_API_KEY` for
  google-genai, `GOOGLE_APPLICATION_CREDENTIALS` for Google Cloud, boto3's chain for S3).

Serve stores an application's args and each deployment's arguments in clear, in the GCS (Redis
under KubeRay), and shows the args in `serve status` and the dashboard; Ray stores an actor's
arguments the same way. So a secret in the args is refused, and nothing this module hands on
holds one: the builder gives the ingress `public_args()`, each modality deployment its
`service_config()`, the actors `scheduler_config()` and `executor_config()`, and all of them
`stores()`, with which each process opens the stores from its own environment.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from dag.config import DEFAULT_BACKOFF_MAX_S, DEFAULT_BACKOFF_S, DEFAULT_RETRIES, ExecutorConfig
from deployments.config import DEFAULT_COOLDOWN_S, DEFAULT_FAILURE_THRESHOLD, BackendSpec, ServiceConfig
from modalities import MODALITIES, cost_models
from scheduler.errors import SchedulerError
from scheduler.settings import DEFAULT_LEASE_S, SchedulerConfig, ServiceLimits, TenantSettings
from state.artifacts import ArtifactStore, open_artifacts
from state.store import StateStore, open_store

log = logging.getLogger(__name__)

MiB = 1024 * 1024
ENV_PREFIX = "LABUBU_"
# Settings that only the environment may give: the JWT keys, the API-key secret, and the Redis URL,
# whose password it holds.
ENV_ONLY = ("jwt_secret", "jwt_public_key", "api_key_secret", "redis_url")
# Backend options that are credentials: the providers' SDKs read them from the replica's environment.
SECRET_OPTION = re.compile(r"(^|_)(api_key|password|secret|token|credentials)$", re.IGNORECASE)


class SettingsError(ValueError):
    """A setting that cannot be used; raised at start-up, before anything serves."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BackendSettings(_Section):
    """One backend of a service's failover list: its name in the descriptor, and its options."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _no_credentials(cls, options: dict[str, Any]) -> dict[str, Any]:
        found = sorted(key for key in _keys(options) if SECRET_OPTION.search(key))
        if found:
            raise ValueError(
                f"{found} cannot be backend options: Serve stores and shows the app's args in clear. Put "
                "credentials in the environment of every Ray node (from a Kubernetes Secret under KubeRay): "
                "GEMINI_API_KEY or GOOGLE_API_KEY for gemini and veo, ARK_API_KEY for the Volcengine Ark "
                "backends, GOOGLE_APPLICATION_CREDENTIALS (or the `credentials_file` option, a path) for "
                "google_speech and google_tts"
            )
        return options


def _keys(options: Mapping[str, Any]) -> Iterator[str]:
    for key, value in options.items():
        yield str(key)
        if isinstance(value, Mapping):
            yield from _keys(value)


class ServiceSettings(_Section):
    """A service's section: its backends in failover order and how the chain treats them.

    Unset, `backends` and `timeout_s` are the modality's (its descriptor in `modalities/`), and the
    rest the chain's (`deployments.config.ServiceConfig`).
    """

    backends: tuple[BackendSettings, ...] = Field(min_length=1)
    timeout_s: float = Field(gt=0)
    concurrency: int = Field(default=ServiceConfig.concurrency, ge=1)  # the dataclass's default
    failure_threshold: int = Field(default=DEFAULT_FAILURE_THRESHOLD, ge=1)
    cooldown_s: float = Field(default=DEFAULT_COOLDOWN_S, ge=0)


class ServiceQuota(_Section):
    """What a service takes whoever asks (a cloud provider's quota); unset fields are
    `scheduler.settings.ServiceLimits`' defaults."""

    rate_per_s: float | None = Field(default=None, ge=0)
    burst: float | None = Field(default=None, ge=0)
    max_queued: int | None = Field(default=None, ge=0)


class SchedulerSettings(_Section):
    """The fair-share scheduler: see `scheduler.settings` for the meaning of each field."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    tenant_defaults: TenantSettings = Field(default_factory=TenantSettings)
    lease_s: float = Field(default=DEFAULT_LEASE_S, gt=0)
    # How long an interactive call may wait in a service's queue before it is answered 503.
    interactive_max_wait_s: float = Field(default=30.0, gt=0)
    limits: dict[str, ServiceQuota] = Field(default_factory=dict)
    # Per service, the cost formula that replaces the modality's own (scheduler/costs.py).
    cost_models: dict[str, dict[str, float]] = Field(default_factory=dict)

    @field_validator("tenant_defaults", mode="before")
    @classmethod
    def _tenant_defaults(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            try:
                return TenantSettings.from_dict(value)
            except SchedulerError as exc:
                raise ValueError(f"{exc}: {exc.details}") from None
        return value

    @field_validator("cost_models")
    @classmethod
    def _cost_models(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        try:
            cost_models(value)
        except SchedulerError as exc:
            raise ValueError(f"{exc}: {exc.details}") from None
        return value


class WorkflowSettings(_Section):
    """The workflow executor: per-node retries of retryable errors, with exponential backoff."""

    retries: int = Field(default=DEFAULT_RETRIES, ge=0)
    backoff_s: float = Field(default=DEFAULT_BACKOFF_S, ge=0)
    backoff_max_s: float = Field(default=DEFAULT_BACKOFF_MAX_S, ge=0)


# The environment `Settings.read` was given in place of the process's own (tests).
_given_env: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("given_env", default=None)


class _Environment(EnvSettingsSource):
    """The process's environment, or the mapping `Settings.read(env=...)` was given."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = _given_env.get()
        if env is None:
            return super()._load_env_vars()
        return parse_env_vars(env, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class Settings(BaseSettings):
    """Everything configurable, with the defaults that run on one machine; see the module docstring.

    Make one with `Settings.load` (the ingress: secrets resolved) or `Settings.read` (anything that
    needs no secret, such as the app builder: nothing is written).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    data_dir: str = "~/.labubu"
    max_body_bytes: int = Field(default=25 * MiB, ge=1)
    # A request body must arrive in full within this many seconds of its first byte being asked
    # for (408 otherwise): a client that trickles a body cannot hold a request slot for long.
    body_timeout_s: float = Field(default=60.0, gt=0)
    # An event stream (SSE) ends after this long; its client resumes with Last-Event-ID.
    events_max_s: float = Field(default=600.0, gt=0)
    llm_max_tokens: int = Field(default=4096, ge=1)
    # The host addresses WebRTC calls offer as ICE candidates; empty: every interface's but loopback
    # (aioice's default). Tests on one machine set ["127.0.0.1"].
    realtime_ice_addresses: tuple[str, ...] = ()
    # `tiny-random` serves every modality that has offline fixtures with them (its `offline_backends`).
    image_backends: Literal["hub", "tiny-random"] = "hub"
    s3_bucket: str = ""
    s3_endpoint_url: str = ""
    max_nodes: int = Field(default=64, ge=1)
    workflows: WorkflowSettings = WorkflowSettings()
    # Every modality's section, filled in from its descriptor (see `_services`).
    services: dict[str, ServiceSettings] = Field(default_factory=dict)
    scheduler: SchedulerSettings = SchedulerSettings()
    # Serve options per deployment for programmatic use (tests, benchmarks, `serve.run`); a Serve
    # config file sets them in its own `deployments:` section instead.
    deployment_options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    # From the environment only (`ENV_ONLY`); never dumped, so never handed on.
    jwt_secret: str = Field(default="", exclude=True, repr=False)
    jwt_public_key: str = Field(default="", exclude=True, repr=False)
    # Keys the hashes of API keys (serve_app/keys.py); every ingress replica must have the same.
    api_key_secret: str = Field(default="", exclude=True, repr=False)
    redis_url: str = Field(default="", exclude=True, repr=False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment first: it wins over the app's args (the init kwargs).
        return (_Environment(settings_cls), init_settings)

    @model_validator(mode="before")
    @classmethod
    def _services(cls, data: Any) -> Any:
        """Every modality gets a section: its descriptor's defaults under what the config says."""
        if not isinstance(data, dict):
            return data
        given = dict(data.get("services") or {})
        unknown = sorted(set(given) - set(MODALITIES))
        if unknown:
            raise ValueError(f"unknown services {unknown}; known: {list(MODALITIES)}")
        offline = data.get("image_backends") == "tiny-random"
        services: dict[str, Any] = {}
        for name, modality in MODALITIES.items():
            section = given.get(name) or {}
            if isinstance(section, BaseModel):
                section = section.model_dump()
            defaults = {"backends": [{"name": b} for b in modality.default_backends], "timeout_s": modality.timeout_s}
            services[name] = {**defaults, **section}
            if offline and modality.offline_backends:
                # Named fixtures, chosen explicitly: never a silent stand-in for a configured model.
                services[name]["backends"] = [{"name": b} for b in modality.offline_backends]
        return {**data, "services": services}

    @model_validator(mode="after")
    def _known_names(self) -> Settings:
        for service, section in self.services.items():
            known = MODALITIES[service].backends
            unknown = [b.name for b in section.backends if b.name not in known]
            if unknown:
                raise ValueError(f"unknown backends {unknown} for {service!r}; known: {sorted(known)}")
        for name in ("limits", "cost_models"):
            unknown = sorted(set(getattr(self.scheduler, name)) - set(MODALITIES))
            if unknown:
                raise ValueError(f"scheduler.{name} names unknown services {unknown}; known: {list(MODALITIES)}")
        return self

    # -------------------------------------------------------------- making one

    @classmethod
    def read(cls, args: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from the app's args and the environment (`env`, else the process's), which wins.

        Raises `SettingsError` for a bad setting, and for a secret among the args.
        """
        args = dict(args or {})
        secret = sorted(set(args) & set(ENV_ONLY))
        if secret:
            names = ", ".join(ENV_PREFIX + name.upper() for name in secret)
            raise SettingsError(
                f"{secret} cannot be app args: Serve stores and shows the app's args in clear. "
                f"Set {names} in the environment of every Ray node instead (from a Kubernetes Secret under KubeRay)"
            )
        token = _given_env.set(env)
        try:
            return cls(**args)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, error['loc'])) or 'settings'}: {error['msg'].removeprefix('Value error, ')}"
                for error in exc.errors()
            )
            raise SettingsError(problems) from None
        finally:
            _given_env.reset(token)

    @classmethod
    def load(cls, args: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
        """`read`, with the secrets that were not given made or derived (see `with_secrets`)."""
        return cls.read(args, env).with_secrets()

    def with_secrets(self) -> Settings:
        """These settings with a JWT secret and an API-key secret, where the environment gave none.

        Without `LABUBU_JWT_SECRET` (or a public key), a secret made once in the data directory: a
        single machine needs no configuration. Without `LABUBU_API_KEY_SECRET`, one derived from the
        JWT secret (a warning: rotating the JWT secret then invalidates every API key), or with
        RS256, made once in the data directory.
        """
        jwt_secret, api_key_secret = self.signing_secret(), self.api_key_secret
        if not api_key_secret:
            if jwt_secret:
                log.warning(
                    "LABUBU_API_KEY_SECRET is not set: API keys are hashed with a key derived from the JWT "
                    "secret, so rotating that secret invalidates every API key; give API keys a secret of their own"
                )
                # Domain-separated: neither secret reveals the other.
                api_key_secret = hmac.new(jwt_secret.encode(), b"labubu api keys", hashlib.sha256).hexdigest()
            else:
                api_key_secret = local_secret(self.data_path, "api_key_secret")
        return self.model_copy(update={"jwt_secret": jwt_secret, "api_key_secret": api_key_secret})

    def signing_secret(self) -> str:
        """The HS256 secret: `LABUBU_JWT_SECRET`, else the one made once in the data directory; ""
        with RS256 (`LABUBU_JWT_PUBLIC_KEY`), whose tokens are signed elsewhere."""
        if self.jwt_secret or self.jwt_public_key:
            return self.jwt_secret
        return local_secret(self.data_path, "jwt_secret")

    # -------------------------------------------------------------- what is handed on

    def public_args(self) -> dict[str, Any]:
        """These settings as app args, without a secret: what the builder hands the ingress replicas,
        which `load` them again with the secrets of their own environment."""
        return self.model_dump(mode="json")

    def service_config(self, service: str) -> ServiceConfig:
        """The frozen config of one modality deployment."""
        section = self.services[service]
        paths = MODALITIES[service].backends
        return ServiceConfig(
            service=service,
            backends=tuple(BackendSpec(b.name, paths[b.name], b.options) for b in section.backends),
            timeout_s=section.timeout_s,
            concurrency=section.concurrency,
            failure_threshold=section.failure_threshold,
            cooldown_s=section.cooldown_s,
        )

    def scheduler_config(self) -> SchedulerConfig:
        """The scheduler actor's config. Dispatch limits start at one replica's concurrency and then
        follow the deployments' running replicas (see serve_app/capacity.py)."""
        limits = self.scheduler.limits
        services = {
            service: ServiceLimits(
                section.concurrency,
                **(limits[service].model_dump(exclude_none=True) if service in limits else {}),
            )
            for service, section in self.services.items()
        }
        return SchedulerConfig(services, self.scheduler.tenant_defaults, self.scheduler.lease_s)

    def executor_config(self, app_name: str) -> ExecutorConfig:
        """The workflow executor's config, for the Serve application `app_name`."""
        return ExecutorConfig(
            app_name=app_name,
            retries=self.workflows.retries,
            backoff_s=self.workflows.backoff_s,
            backoff_max_s=self.workflows.backoff_max_s,
            cost_models=self.scheduler.cost_models,
            lease_s=self.scheduler.lease_s,
        )

    def stores(self) -> StoreLocation:
        return StoreLocation(self.data_dir, self.s3_bucket, self.s3_endpoint_url)

    # -------------------------------------------------------------- derived

    @property
    def jwt_algorithm(self) -> str:
        return "RS256" if self.jwt_public_key else "HS256"

    @property
    def jwt_verify_key(self) -> str:
        return self.jwt_public_key or self.jwt_secret

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()


@dataclass(frozen=True)
class StoreLocation:
    """Where the platform's stores are, and nothing secret (a `dag.config.Stores`).

    It travels to the modality replicas and the actors in place of opened stores (a `RedisStore`
    pickles its URL, password included), and each of them opens the stores in its own process:
    the Redis URL and the S3 credentials come from that process's environment.
    """

    data_dir: str
    s3_bucket: str = ""
    s3_endpoint_url: str = ""

    def _settings(self) -> Settings:
        return Settings.read(dataclasses.asdict(self))

    def state(self) -> StateStore:
        settings = self._settings()
        return open_store(settings.redis_url, settings.data_path)

    def artifacts(self) -> ArtifactStore:
        settings = self._settings()
        return open_artifacts(settings.s3_bucket, settings.s3_endpoint_url, settings.data_path)


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
