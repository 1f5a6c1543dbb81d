"""Settings: defaults < loupe.toml < LOUPE_* environment < explicit overrides; bad values are typed errors."""
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import load_settings


def test_defaults(loupe_home: Path) -> None:
    s = load_settings()
    assert s.home == loupe_home.resolve()
    assert (s.max_width, s.max_question_chars, s.max_new_tokens, s.max_images) == (1280, 200, 1024, 4)
    assert s.model == "" and s.trust_remote_code is False
    assert s.history_path == loupe_home.resolve() / "history.sqlite3"


def test_file_then_env_then_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "loupe.toml"
    config.write_text('model = "/models/a"\nmax_width = 1024\ntrust_remote_code = true\n', encoding="utf-8")
    monkeypatch.setenv("LOUPE_CONFIG", str(config))
    s = load_settings()
    assert (s.model, s.max_width, s.trust_remote_code) == ("/models/a", 1024, True)
    monkeypatch.setenv("LOUPE_MAX_WIDTH", "800")
    assert load_settings().max_width == 800
    assert load_settings(max_width=640).max_width == 640


@pytest.mark.parametrize(
    ("text", "phrase"),
    [("max_width = ", "not valid TOML"), ("colour = 'red'", "unknown setting"), ("max_width = 'wide'", "should be a int"),
     ("max_width = 0", "at least 1")],
)
def test_bad_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, phrase: str) -> None:
    config = tmp_path / "loupe.toml"
    config.write_text(text, encoding="utf-8")
    monkeypatch.setenv("LOUPE_CONFIG", str(config))
    with pytest.raises(ConfigError, match=phrase):
        load_settings()


def test_bad_env_boolean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOUPE_TRUST_REMOTE_CODE", "perhaps")
    with pytest.raises(ConfigError, match="trust_remote_code"):
        load_settings()
