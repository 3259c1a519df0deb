"""Settings: args, environment overrides, the tiny-random switch, the local JWT and API key secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.settings import Settings, SettingsError


def test_defaults_use_hub_image_models(tmp_path: Path) -> None:
    settings = Settings.load({}, env={"LABUBU_DATA_DIR": str(tmp_path)})
    assert settings.services["pic2text"]["backends"] == [{"name": "blip"}]
    assert settings.services["text2pic"]["backends"] == [{"name": "stable_diffusion"}]


def test_tiny_random_switch_selects_the_fixtures(tmp_path: Path) -> None:
    env = {"LABUBU_DATA_DIR": str(tmp_path), "LABUBU_IMAGE_BACKENDS": "tiny-random"}
    settings = Settings.load({}, env=env)
    assert settings.services["pic2text"]["backends"] == [{"name": "tiny_random"}]
    assert settings.services["text2pic"]["backends"] == [{"name": "tiny_random"}]


def test_local_secret_is_made_once_and_shared(tmp_path: Path) -> None:
    first = Settings.load({}, env={"LABUBU_DATA_DIR": str(tmp_path)}).jwt_secret
    second = Settings.load({}, env={"LABUBU_DATA_DIR": str(tmp_path)}).jwt_secret
    assert first == second and len(first) >= 32
    assert (tmp_path / "jwt_secret").stat().st_mode & 0o077 == 0


def test_environment_secret_wins(tmp_path: Path) -> None:
    settings = Settings.load({}, env={"LABUBU_DATA_DIR": str(tmp_path), "LABUBU_JWT_SECRET": "from-env"})
    assert settings.jwt_secret == "from-env" and not (tmp_path / "jwt_secret").exists()


@pytest.mark.parametrize(
    ("args", "env"),
    [
        ({"services": {"llm": {"backends": [{"name": "nope"}]}}}, {}),
        ({"services": {"video": {"backends": []}}}, {}),
        ({}, {"LABUBU_IMAGE_BACKENDS": "random"}),
    ],
)
def test_bad_settings_are_refused(args: dict, env: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    with pytest.raises(SettingsError):
        Settings.load(args, env={"LABUBU_DATA_DIR": str(tmp_path), **env})


def test_api_key_secret_is_shared_like_the_jwt_secret(tmp_path: Path) -> None:
    env = {"LABUBU_DATA_DIR": str(tmp_path), "LABUBU_JWT_SECRET": "cluster-secret"}
    derived = Settings.load(env=env).api_key_secret
    # Every replica with the JWT secret derives the same one, and it is not the JWT secret.
    assert derived == Settings.load(env=env).api_key_secret and derived not in ("", "cluster-secret")
    assert Settings.load(env={**env, "LABUBU_API_KEY_SECRET": "own"}).api_key_secret == "own"
    rs256 = {"LABUBU_DATA_DIR": str(tmp_path), "LABUBU_JWT_PUBLIC_KEY": "a PEM"}
    made = Settings.load(env=rs256).api_key_secret  # no shared secret to derive it from: made once
    assert made == (tmp_path / "api_key_secret").read_text().strip() == Settings.load(env=rs256).api_key_secret
