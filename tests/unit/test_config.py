from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pushgate.config import load_settings


def test_environment_and_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    toml = tmp_path / "pushgate.toml"
    toml.write_text('port = 9001\nmax_body_bytes = 2048\nhost = "0.0.0.0"\n')
    monkeypatch.setenv("PUSHGATE_CONFIG_FILE", str(toml))
    monkeypatch.setenv("PUSHGATE_PORT", "9100")
    monkeypatch.setenv("PUSHGATE_DATA_DIR", str(tmp_path / "data"))
    settings = load_settings()
    assert settings.port == 9100  # the environment wins over the file
    assert settings.max_body_bytes == 2048
    assert settings.host == "0.0.0.0"
    assert settings.resolved_database_url.endswith(str(tmp_path / "data" / "pushgate.db"))


def test_secret_is_generated_once_with_private_mode(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PUSHGATE_DATA_DIR", str(tmp_path))
    first = load_settings().resolved_secret_key()
    assert load_settings().resolved_secret_key() == first
    mode = stat.S_IMODE((tmp_path / "secret.key").stat().st_mode)
    assert mode == 0o600


def test_production_refuses_to_invent_a_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PUSHGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PUSHGATE_ENVIRONMENT", "production")
    with pytest.raises(ValueError, match="PUSHGATE_SECRET_KEY"):
        load_settings().resolved_secret_key()


def test_short_explicit_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUSHGATE_SECRET_KEY", "short")
    with pytest.raises(ValueError, match="at least 32"):
        load_settings().resolved_secret_key()


def test_unknown_setting_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    toml = tmp_path / "pushgate.toml"
    toml.write_text("prot = 1\n")
    monkeypatch.setenv("PUSHGATE_CONFIG_FILE", str(toml))
    with pytest.raises(ValueError, match="prot"):
        load_settings()
