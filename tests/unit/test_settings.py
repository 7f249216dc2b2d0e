from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from embedserve.settings import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOST", "PORT", "CONFIG", "LAZY", "CORS_ORIGINS"):
        monkeypatch.delenv(f"EMBEDSERVE_{name}", raising=False)
    s = Settings()
    assert (s.host, s.port, s.config, s.lazy, s.cors_origins) == ("127.0.0.1", 7860, Path("models.yaml"), False, [])


def test_environment_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDSERVE_PORT", "9000")
    monkeypatch.setenv("EMBEDSERVE_HOST", "0.0.0.0")
    monkeypatch.setenv("EMBEDSERVE_LAZY", "true")
    monkeypatch.setenv("EMBEDSERVE_CORS_ORIGINS", "http://a.example, http://b.example")
    s = Settings()
    assert (s.port, s.host, s.lazy) == (9000, "0.0.0.0", True)
    assert s.cors_origins == ["http://a.example", "http://b.example"]
    assert Settings(port=9100).port == 9100  # a flag beats the environment


def test_bad_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDSERVE_PORT", "seventy")
    with pytest.raises(ValidationError, match="port"):
        Settings()
    monkeypatch.delenv("EMBEDSERVE_PORT")
    with pytest.raises(ValidationError, match="log_level"):
        Settings(log_level="loud")
