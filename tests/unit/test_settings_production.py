"""Production settings: API keys from the environment and a file, the bind warning, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedserve.cli import bind_warning, main
from embedserve.settings import Settings


def test_keys_come_from_the_variable_and_the_file_and_stay_out_of_repr(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# ops team\nfile-key-1\n\n  file-key-2  \nenv-key\n")
    settings = Settings(api_keys="env-key, other", api_keys_file=keys)
    assert settings.api_keys == ["env-key", "other", "file-key-1", "file-key-2"]
    assert "env-key" not in repr(settings) and "file-key" not in repr(settings)


@pytest.mark.parametrize("content", [None, "", "# only a comment\n"])
def test_a_keys_file_that_is_missing_or_empty_stops_start_up(
    tmp_path: Path, content: str | None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("EMBEDSERVE_API_KEYS_FILE", str(path))
    assert main(["models"]) == 2
    assert str(path) in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "keys", "warns"),
    [
        ("127.0.0.1", "", False),
        ("::1", "", False),
        ("localhost", "", False),
        ("0.0.0.0", "", True),
        ("::", "", True),
        ("10.1.2.3", "", True),
        ("0.0.0.0", "k", False),
    ],
)
def test_a_non_loopback_bind_without_keys_warns(host: str, keys: str, warns: bool) -> None:
    warning = bind_warning(Settings(host=host, api_keys=keys))
    assert (warning is not None) == warns
    if warning:
        assert host in warning and "EMBEDSERVE_API_KEYS" in warning


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        Settings(max_body_bytes=0)
    with pytest.raises(ValueError, match="request_timeout"):
        Settings(request_timeout=-1)
