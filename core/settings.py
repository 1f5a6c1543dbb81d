"""Where Loupe keeps its data (LOUPE_HOME) and what its settings are (loupe.toml + LOUPE_* overrides).

Resolution order, later wins: built-in defaults < the settings file < environment variables.
The settings file is `$LOUPE_CONFIG` if set, else `./loupe.toml` (absent is fine: defaults apply).
Every field can be overridden by `LOUPE_<FIELD>` in upper case, e.g. `LOUPE_MODEL=/models/qwen2.5-vl`.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from core.errors import ConfigError

# The project's data files (templates, samples, style); core/ sits beside assets/ in the repository.
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"


@dataclass(frozen=True)
class Settings:
    """All of Loupe's settings, resolved once; pass it around instead of reading the environment."""

    home: Path = Path(".loupe")
    model: str = ""  # local folder or model id in the local HF cache; empty = embedded demo model
    backend: str = "auto"  # auto | transformers | xcomposer | openai
    trust_remote_code: bool = False  # needed for models that ship their own code (XComposer)
    device: str = "auto"  # auto | cpu | cuda
    max_width: int = 1280  # prepared images are at most this wide (never upscaled)
    max_pixels: int = 90_000_000  # larger images are refused as decompression bombs
    max_images: int = 4  # images per question
    max_question_chars: int = 200  # counted as Unicode characters
    max_new_tokens: int = 1024
    stream_timeout_s: float = 120.0  # the answer stream gives up if no token comes for this long
    fast_decode: bool = True  # static-cache compiled greedy decoding where the model allows (core/models/fast_decode.py)
    history_db: str = ""  # empty = <home>/history.sqlite3
    max_memory_gb: str = ""  # e.g. "22.2,22.2": usable GB per GPU for the shard planner
    split: str = ""  # pinned layer split, e.g. "0-15,16-31" (GPU0 first)
    openai_base_url: str = ""
    openai_api_key: str = ""
    api_token: str = ""  # bearer token the API server requires; empty = no auth
    api_allowed_paths: str = ""  # comma-separated folders the API may read local images from
    sample_interval_s: float = 0.5
    sample_window_s: float = 900.0
    batch_max_files: int = 200  # images in one batch (uploads, or inside a zip)
    batch_max_mb: int = 200  # the uploads together (a zip counted as uploaded); its unpacked images at most 5x

    @property
    def history_path(self) -> Path:
        return Path(self.history_db) if self.history_db else self.home / "history.sqlite3"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"


def _coerce(name: str, kind: type, raw: object) -> object:
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind is Path:
            return Path(str(raw)).expanduser()
        return kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"setting '{name}' should be a {kind.__name__}, got {raw!r}") from None


def config_path() -> Path:
    return Path(os.environ.get("LOUPE_CONFIG", "loupe.toml"))


def load_settings(**overrides: object) -> Settings:
    """Defaults, then the settings file, then LOUPE_* environment variables, then keyword overrides."""
    types = {f.name: (Path if f.name == "home" else type(f.default)) for f in fields(Settings)}
    values: dict[str, object] = {}
    path = config_path()
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        unknown = sorted(set(data) - set(types))
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}")
        values.update(data)
    for name in types:
        env = os.environ.get(f"LOUPE_{name.upper()}")
        if env is not None:
            values[name] = env
    values.update({k: v for k, v in overrides.items() if v is not None})
    coerced: dict[str, Any] = {name: _coerce(name, types[name], raw) for name, raw in values.items()}
    settings = Settings(**coerced)
    for name in ("max_width", "max_pixels", "max_images", "max_question_chars", "max_new_tokens"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"setting '{name}' must be at least 1")
    return dataclasses.replace(settings, home=settings.home.resolve())
