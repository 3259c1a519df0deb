"""Settings: args, environment overrides, the descriptors' defaults, the tiny-random switch, the typed
configs handed to deployments and actors, and secrets (environment only; local and derived ones)."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import pytest

from dag.config import DEFAULT_RETRIES
from deployments.config import DEFAULT_COOLDOWN_S, ServiceConfig
from modalities import MODALITIES
from scheduler.settings import DEFAULT_LEASE_S, ServiceLimits, TenantSettings
from serve_app.settings import Settings, SettingsError, StoreLocation


def backend_names(settings: Settings, service: str) -> list[str]:
    return [backend.name for backend in settings.services[service].backends]


def test_every_modality_has_its_descriptors_defaults(tmp_path: Path) -> None:
    settings = Settings.load({}, env={"LABUBU_DATA_DIR": str(tmp_path)})
    assert set(settings.services) == set(MODALITIES)
    for name, modality in MODALITIES.items():
        assert backend_names(settings, name) == list(modality.default_backends)
        assert settings.services[name].timeout_s == modality.timeout_s
    assert backend_names(settings, "pic2text") == ["blip"]  # the hub models unless told otherwise


def test_tiny_random_switch_selects_every_modalitys_fixtures(tmp_path: Path) -> None:
    env = {"LABUBU_DATA_DIR": str(tmp_path), "LABUBU_IMAGE_BACKENDS": "tiny-random"}
    settings = Settings.read({}, env=env)
    for name, modality in MODALITIES.items():
        expected = modality.offline_backends or modality.default_backends
        assert backend_names(settings, name) == list(expected)
    assert backend_names(settings, "text2pic") == ["tiny_random"]
    from_args = Settings.read({"image_backends": "tiny-random"}, env={})
    assert from_args.services["pic2text"] == settings.services["pic2text"]


def test_a_section_overrides_only_what_it_names() -> None:
    args = {"services": {"llm": {"concurrency": 4, "backends": [{"name": "gemini", "options": {"model": "m"}}]}}}
    llm = Settings.read(args, env={}).services["llm"]
    assert (llm.concurrency, llm.timeout_s, llm.cooldown_s) == (4, MODALITIES["llm"].timeout_s, DEFAULT_COOLDOWN_S)
    assert llm.backends[0].options == {"model": "m"}


def test_the_environment_wins_over_the_args() -> None:
    env = {"LABUBU_MAX_BODY_BYTES": "1000", "LABUBU_BODY_TIMEOUT_S": "2.5", "LABUBU_S3_BUCKET": "from-env"}
    settings = Settings.read({"max_body_bytes": 5, "s3_bucket": "from-args", "llm_max_tokens": 77}, env=env)
    assert (settings.max_body_bytes, settings.body_timeout_s, settings.s3_bucket) == (1000, 2.5, "from-env")
    assert settings.llm_max_tokens == 77


def test_settings_are_frozen() -> None:
    settings = Settings.read({}, env={})
    with pytest.raises(ValueError):
        settings.max_nodes = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        settings.services["llm"].concurrency = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        ({"services": {"llm": {"backends": [{"name": "nope"}]}}}, {}, "unknown backends ['nope']"),
        ({"services": {"video": {"backends": []}}}, {}, "unknown services ['video']"),
        ({"services": {"llm": {"backends": []}}}, {}, "services.llm.backends"),
        ({"services": {"llm": {"concurrency": 0}}}, {}, "services.llm.concurrency"),
        ({}, {"LABUBU_IMAGE_BACKENDS": "random"}, "image_backends"),
        ({"max_body_bytes": 0}, {}, "max_body_bytes"),
        ({"colour": "red"}, {}, "colour"),
        ({"scheduler": {"tenant_defaults": {"weight": 0}}}, {}, "weight"),
        ({"scheduler": {"lease_s": 0}}, {}, "scheduler.lease_s"),
        ({"scheduler": {"limits": {"video": {"rate_per_s": 1}}}}, {}, "scheduler.limits"),
        ({"scheduler": {"cost_models": {"llm": {"bananas": 1}}}}, {}, "bananas"),
        ({"workflows": {"retries": -1}}, {}, "workflows.retries"),
    ],
)
def test_bad_settings_are_refused_with_what_is_wrong(args: dict[str, Any], env: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError, match=says.replace("[", r"\[").replace("]", r"\]")):
        Settings.read(args, env=env)


# ---------------------------------------------------------------- what deployments and actors get


def test_service_config_is_the_deployments_frozen_config() -> None:
    args = {"services": {"llm": {"backends": [{"name": "llama_cpp", "options": {"n_ctx": 512}}], "cooldown_s": 5}}}
    config = Settings.read(args, env={}).service_config("llm")
    assert config == ServiceConfig(
        service="llm",
        backends=config.backends,
        timeout_s=MODALITIES["llm"].timeout_s,
        cooldown_s=5.0,
    )
    (backend,) = config.backends
    assert (backend.name, backend.path, dict(backend.options)) == (
        "llama_cpp",
        MODALITIES["llm"].backends["llama_cpp"],
        {"n_ctx": 512},
    )


def test_scheduler_and_executor_configs() -> None:
    args = {
        "services": {"llm": {"concurrency": 3}},
        "scheduler": {
            "lease_s": 12,
            "tenant_defaults": {"weight": 2},
            "limits": {"llm": {"rate_per_s": 5, "burst": 2}},
            "cost_models": {"llm": {"prompt_tokens": 1, "output_tokens": 3}},
        },
        "workflows": {"backoff_s": 0.1},
    }
    settings = Settings.read(args, env={})
    scheduler = settings.scheduler_config()
    assert scheduler.services["llm"] == ServiceLimits(3, rate_per_s=5.0, burst=2.0)
    assert scheduler.services["tts"] == ServiceLimits(1)
    assert (scheduler.lease_s, scheduler.tenant_defaults) == (12.0, TenantSettings(weight=2.0))
    executor = settings.executor_config("my-app")
    assert (executor.app_name, executor.retries, executor.backoff_s, executor.lease_s) == (
        "my-app",
        DEFAULT_RETRIES,
        0.1,
        12.0,
    )
    assert executor.cost_models == {"llm": {"prompt_tokens": 1.0, "output_tokens": 3.0}}
    assert Settings.read({}, env={}).scheduler_config().lease_s == DEFAULT_LEASE_S


def test_public_args_round_trip_without_secrets(tmp_path: Path) -> None:
    env = {"LABUBU_JWT_SECRET": "jwt-0123", "LABUBU_REDIS_URL": "redis://:pw-4567@host/1", "LABUBU_API_KEY_SECRET": "k"}
    args = {"data_dir": str(tmp_path), "services": {"llm": {"concurrency": 2}}, "scheduler": {"lease_s": 9}}
    settings = Settings.load(args, env=env)
    public = settings.public_args()
    assert not {"jwt_secret", "jwt_public_key", "api_key_secret", "redis_url"} & set(public)
    for secret in ("jwt-0123", "pw-4567"):
        assert secret not in repr(public) and secret not in repr(settings)
    again = Settings.read(public, env=env)
    assert again.model_dump() == settings.model_dump() and again.redis_url == settings.redis_url


def test_store_location_carries_no_secret_and_opens_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABUBU_REDIS_URL", "redis://:pw-4567@127.0.0.1:9/1")
    location = Settings.read({"data_dir": str(tmp_path), "s3_bucket": "b"}).stores()
    assert location == StoreLocation(str(tmp_path), "b", "")
    assert b"pw-4567" not in pickle.dumps(location)
    assert type(location.state()).__name__ == "RedisStore"  # connects lazily: nothing is contacted
    monkeypatch.delenv("LABUBU_REDIS_URL")
    assert type(location.state()).__name__ == "SqliteStore"


# ---------------------------------------------------------------- secrets


@pytest.mark.parametrize("name", ["jwt_secret", "jwt_public_key", "api_key_secret", "redis_url"])
def test_secrets_are_refused_as_app_args(name: str) -> None:
    with pytest.raises(SettingsError, match=f"LABUBU_{name.upper()}"):
        Settings.read({name: "x"}, env={})


@pytest.mark.parametrize("option", ["api_key", "password", "hf_token", "client_secret", "credentials"])
def test_credentials_are_refused_as_backend_options(option: str) -> None:
    args = {"services": {"llm": {"backends": [{"name": "gemini", "options": {option: "x"}}]}}}
    with pytest.raises(SettingsError, match="GEMINI_API_KEY"):
        Settings.read(args, env={})


def test_a_credentials_file_path_is_not_a_secret() -> None:
    options = {"credentials_file": "/secrets/gcp.json"}
    args = {"services": {"stt": {"backends": [{"name": "google_speech", "options": options}]}}}
    assert Settings.read(args, env={}).services["stt"].backends[0].options == options


def test_local_secret_is_made_once_and_shared(tmp_path: Path) -> None:
    first = Settings.load({}, env={"LABUBU_DATA_DIR": str(tmp_path)}).jwt_secret
    second = Settings.load({}, env={"LABUBU_DATA_DIR": str(tmp_path)}).jwt_secret
    assert first == second and len(first) >= 32
    assert (tmp_path / "jwt_secret").stat().st_mode & 0o077 == 0


def test_read_writes_nothing(tmp_path: Path) -> None:
    settings = Settings.read({"data_dir": str(tmp_path / "data")}, env={})
    assert settings.jwt_secret == settings.api_key_secret == "" and not (tmp_path / "data").exists()


def test_environment_secret_wins(tmp_path: Path) -> None:
    settings = Settings.load({}, env={"LABUBU_DATA_DIR": str(tmp_path), "LABUBU_JWT_SECRET": "from-env"})
    assert settings.jwt_secret == "from-env" and not (tmp_path / "jwt_secret").exists()


def test_api_key_secret_is_its_own_setting_and_a_derived_one_is_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"LABUBU_DATA_DIR": str(tmp_path), "LABUBU_JWT_SECRET": "cluster-secret"}
    with caplog.at_level(logging.WARNING, logger="serve_app.settings"):
        derived = Settings.load(env=env).api_key_secret
    assert "LABUBU_API_KEY_SECRET is not set" in caplog.text
    # Every replica with the JWT secret derives the same one, and it is not the JWT secret.
    assert derived == Settings.load(env=env).api_key_secret and derived not in ("", "cluster-secret")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="serve_app.settings"):
        assert Settings.load(env={**env, "LABUBU_API_KEY_SECRET": "own"}).api_key_secret == "own"
    assert "LABUBU_API_KEY_SECRET" not in caplog.text
    rs256 = {"LABUBU_DATA_DIR": str(tmp_path), "LABUBU_JWT_PUBLIC_KEY": "a PEM"}
    made = Settings.load(env=rs256).api_key_secret  # no shared secret to derive it from: made once
    assert made == (tmp_path / "api_key_secret").read_text().strip() == Settings.load(env=rs256).api_key_secret
